"""Seeded SUMO traffic generation: networks (netgenerate), demand (randomTrips.py), FCD at 10 Hz.

Each network of the config becomes a run directory ``OUT/<split>/<network>/`` with
``<network>.net.xml``, ``fcd.parquet`` (with the closed traffic-signal approaches as stationary
objects, ``forecast.sim.signals``) and ``run.json``. Train, val and test use different
networks, and a network type can be kept for test alone to measure generalisation to unseen maps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from forecast.cpus import usable_cpus
from forecast.data.atomic import open_directory, sha256_text
from forecast.progress import track
from forecast.sim.signals import (
    SIGNAL_VCLASS,
    SIGNAL_VTYPE,
    TLS_ADDITIONAL,
    approaches,
    read_switches,
    signal_rows,
)

COMMON_NET_OPTS = [
    "--sidewalks.guess",
    "--crossings.guess",
    "--tls.guess",
    "--bikelanes.guess",
    "--default.lanenumber",
    "2",
]


@dataclass
class DemandConfig:
    """Mean seconds between departures (randomTrips ``-p``) per class; smaller is denser."""

    car_period: float = 2.0
    bike_period: float = 3.0
    ped_period: float = 1.5
    ped_max_distance: float = 500.0
    car_fringe_factor: float = 5.0


@dataclass
class NetworkConfig:
    name: str
    split: str  # train | val | test
    kind: str  # grid | spider | rand
    options: dict[str, str | int | float] = field(default_factory=dict)  # netgenerate options, e.g. grid.number
    seed: int = 0
    demand: DemandConfig | None = None  # overrides the config-wide demand


@dataclass
class SumoOptions:
    """Simulation settings that decide whether tracks are physically continuous.

    With SUMO's defaults a lane change moves a vehicle sideways by a lane width (about 3 m)
    in one step, a vehicle stuck for ``time_to_teleport_s`` reappears further along its
    route, and a pedestrian's path through a walking area has corners where it jumps. None of
    these is motion an agent can make, so the defaults here avoid them at the source.
    """

    lanechange_duration_s: float = 2.0  # > 0: lane changes take this long (continuous); 0: one-step jumps
    time_to_teleport_s: float = 60.0  # a vehicle waiting this long is stuck (gridlock) ...
    stuck: str = "remove"  # ... and is then removed (its track ends) or teleported (its track jumps)
    walkingarea_detail: int = 16  # intermediate points of pedestrian paths inside walking areas
    signals: bool = True  # closed traffic-signal approaches as stationary objects in the FCD (forecast.sim.signals)

    def __post_init__(self) -> None:
        if self.stuck not in ("remove", "teleport"):
            raise ValueError(f"sumo.stuck must be 'remove' or 'teleport', got {self.stuck!r}")
        if not self.lanechange_duration_s >= 0:
            raise ValueError(f"sumo.lanechange_duration_s must be >= 0, got {self.lanechange_duration_s!r}")

    def args(self) -> list[str]:
        """The ``sumo`` command-line options for these settings."""
        out = ["--lanechange.duration", str(self.lanechange_duration_s),
               "--time-to-teleport", str(self.time_to_teleport_s),
               "--pedestrian.striping.walkingarea-detail", str(self.walkingarea_detail)]
        if self.stuck == "remove":
            out += ["--time-to-teleport.remove", "true"]
        return out


@dataclass
class SimConfig:
    seed: int = 7
    duration_s: float = 300.0
    warmup_s: float = 0.0  # FCD before this time is not written (empty streets at the start)
    demand: DemandConfig = field(default_factory=DemandConfig)
    networks: list[NetworkConfig] = field(default_factory=list)
    sumo: SumoOptions = field(default_factory=SumoOptions)


def sumo_home() -> Path:
    import sumo

    return Path(sumo.SUMO_HOME)


def _bin(name: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).exists():
        raise FileNotFoundError(f"SUMO tool {name!r} not found; install eclipse-sumo (pip install eclipse-sumo)")
    return exe


# Each SUMO tool call ends within this (the demo's take seconds, a city hour minutes): a hung call would
# otherwise hold the pipeline's lock until the scheduler gives up on it.
TOOL_TIMEOUT_S = 3 * 3600


class Children:
    """The tool processes of one ``simulate`` call that runs networks side by side: when the call ends
    early (a failed network, a stop signal in the main thread), the running ones are killed and no new
    one starts, so a stop does not wait for the other networks' simulations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self._stopped = False

    def add(self, proc: subprocess.Popen) -> bool:
        with self._lock:
            if not self._stopped:
                self._procs.add(proc)
            return not self._stopped

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for proc in self._procs:
                _kill_tool(proc)


def _kill_tool(proc: subprocess.Popen) -> None:
    """Kill a tool and everything it started. The ``sumo`` and ``netgenerate`` on the PATH are pip's
    launcher scripts that run the real binary as their child, and randomTrips.py runs duarouter: killing
    the launcher alone leaves the simulation running, holding the output pipes open until it is done."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the tool's own process group (``_run``)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _run(cmd: list[str], cwd: Path, children: Children | None = None) -> None:
    # A process group of its own (same session: a terminal's Ctrl-C and a scheduler's signal to our
    # group still reach this process, whose handler ends here), so that ``_kill_tool`` reaches the tool's children.
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          process_group=0) as proc:
        if children is not None and not children.add(proc):
            _kill_tool(proc)
            proc.communicate()
            raise RuntimeError(f"{' '.join(cmd)} not run: the simulation was stopped")
        try:
            _, stderr = proc.communicate(timeout=TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_tool(proc)
            proc.communicate()
            raise RuntimeError(f"{' '.join(cmd)} did not finish within {TOOL_TIMEOUT_S} s; it was stopped") from None
        except BaseException:  # a stop signal in the main thread: the tool and its children go with it
            _kill_tool(proc)
            raise
        finally:
            if children is not None:
                children.discard(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")


def simulate(cfg: SimConfig, out: Path, progress: bool = True, jobs: int | None = None) -> list[Path]:
    """Generate every network of ``cfg`` under ``out``, ``jobs`` at a time (default: one per CPU; each SUMO
    run is one thread); a run whose config hash matches is kept. Returns the run directories in config
    order. Each network depends on its own settings and seed only, so ``jobs`` does not change the data."""
    out = Path(out)
    seen: set[tuple[str, str]] = set()
    for net in cfg.networks:  # two networks of one run directory would overwrite each other
        if (net.split, net.name) in seen:
            raise ValueError(f"network {net.name!r} of split {net.split!r} is listed twice: names must differ")
        seen.add((net.split, net.name))
    jobs = max(1, min(jobs or usable_cpus(), len(cfg.networks)))
    if jobs == 1:
        return [simulate_network(cfg, net, out) for net in track(cfg.networks, "simulate", "network", progress)]
    children = Children()
    with ThreadPoolExecutor(jobs, thread_name_prefix="simulate") as pool:
        try:
            futures = [pool.submit(simulate_network, cfg, net, out, children) for net in cfg.networks]
            for f in track(as_completed(futures), "simulate", "network", progress, total=len(futures)):
                f.result()
        except BaseException:  # a failed network or a stop signal (also while submitting)
            children.stop()
            pool.shutdown(wait=False, cancel_futures=True)  # the leaving ``with`` waits for the running ones
            raise
    return [f.result() for f in futures]


def simulate_network(cfg: SimConfig, net: NetworkConfig, out: Path, children: Children | None = None) -> Path:
    demand = net.demand or cfg.demand
    seed = cfg.seed * 1000 + net.seed
    spec = {"net": asdict(net), "demand": asdict(demand), "seed": seed, "duration_s": cfg.duration_s,
            "warmup_s": cfg.warmup_s, "sumo": _sumo_version(), "sumo_options": asdict(cfg.sumo)}
    config_hash = sha256_text(json.dumps(spec, sort_keys=True))
    run_dir = out / net.split / net.name
    meta_path = run_dir / "run.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("config_hash") == config_hash:
        return run_dir
    out.mkdir(parents=True, exist_ok=True)
    # Build in a temporary directory and rename: a killed run never leaves half a run behind.
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{net.name}.") as tmp_name:
        tmp = Path(tmp_name)
        net_file = f"{net.name}.net.xml"
        _run(_netgenerate_cmd(net, seed, net_file), tmp, children)
        trips = _make_demand(tmp, net_file, demand, seed, cfg.duration_s, children)
        _run(
            [_bin("sumo"), "-n", net_file, "-r", ",".join(trips), "--step-length", "0.1", "--begin", "0",
             "--end", str(cfg.duration_s), "--seed", str(seed), "--fcd-output", "fcd.parquet",
             "--fcd-output.attributes", "x,y,angle,type,speed,lane",
             "--device.fcd.begin", str(cfg.warmup_s),
             "--no-step-log", "true", "--no-warnings", "true", *cfg.sumo.args(),
             *(["-a", _write_tls_additional(tmp)] if cfg.sumo.signals else [])],
            tmp, children,
        )
        vtypes, lengths = _vtypes([tmp / t for t in trips])
        if cfg.sumo.signals:
            _add_signal_objects(tmp, tmp / net_file)
            vtypes[SIGNAL_VTYPE] = SIGNAL_VCLASS
        meta = {"network": net.name, "split": net.split, "kind": net.kind, "seed": seed,
                "config_hash": config_hash, "vtypes": vtypes, "vtype_lengths": lengths, "spec": spec}
        (tmp / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        for t in trips:
            (tmp / t).unlink()
        for junk in tmp.glob("*.rou.xml"):
            junk.unlink()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        open_directory(tmp)  # mkdtemp's 0o700 would hide the run from other users
        os.replace(tmp, run_dir)
        tmp.mkdir()  # TemporaryDirectory cleans up the (now empty) placeholder
    return run_dir


def _write_tls_additional(tmp: Path) -> str:
    (tmp / "tls.add.xml").write_text(TLS_ADDITIONAL)
    return "tls.add.xml"


def _add_signal_objects(tmp: Path, net_path: Path) -> None:
    """Append the closed signal approaches to ``fcd.parquet`` at the FCD's own time steps, rows in time order."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fcd = pq.read_table(tmp / "fcd.parquet")
    times = np.unique(fcd.column("timestep_time").to_numpy())
    rows = signal_rows(approaches(net_path), read_switches(tmp / "tls.xml"), times, fcd.schema)
    both = pa.concat_tables([fcd, rows])
    order = pc.sort_indices(both, sort_keys=[("timestep_time", "ascending")])  # stable: FCD rows first per step
    pq.write_table(both.take(order), tmp / "fcd.parquet")
    for f in ("tls.xml", "tls.add.xml"):
        (tmp / f).unlink()


def _netgenerate_cmd(net: NetworkConfig, seed: int, net_file: str) -> list[str]:
    if net.kind not in ("grid", "spider", "rand"):
        raise ValueError(f"network {net.name!r}: kind must be grid, spider or rand, got {net.kind!r}")
    cmd = [_bin("netgenerate"), f"--{net.kind}", "--seed", str(seed), *COMMON_NET_OPTS, "-o", net_file]
    for key, value in net.options.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def _make_demand(tmp: Path, net_file: str, d: DemandConfig, seed: int, duration: float,
                 children: Children | None = None) -> list[str]:
    tool = str(sumo_home() / "tools" / "randomTrips.py")
    common = [sys.executable, tool, "-n", net_file, "-e", str(duration), "--seed", str(seed)]
    _run(common + ["-o", "cars.trips.xml", "-r", "cars.rou.xml", "-p", str(d.car_period), "--prefix", "car",
                   "--fringe-factor", str(d.car_fringe_factor), "--validate"], tmp, children)
    _run(common + ["-o", "bikes.trips.xml", "-r", "bikes.rou.xml", "-p", str(d.bike_period), "--prefix", "bike",
                   "--vehicle-class", "bicycle", "--vclass", "bicycle", "--validate"], tmp, children)
    _run(common + ["-o", "peds.trips.xml", "-p", str(d.ped_period), "--prefix", "ped", "--pedestrians",
                   "--max-distance", str(d.ped_max_distance)], tmp, children)
    return ["cars.trips.xml", "bikes.trips.xml", "peds.trips.xml"]


def _vtypes(files: list[Path]) -> tuple[dict[str, str], dict[str, float]]:
    """vType id -> vClass, and vType id -> length (m) where the demand files declare one.

    The adapter needs both to move a vehicle from its front bumper to its centre; SUMO's
    built-in types and undeclared lengths are its defaults, known to the adapter.
    """
    classes, lengths = {}, {}
    for f in files:
        for vt in ET.parse(f).getroot().iter("vType"):
            classes[vt.get("id")] = vt.get("vClass", "passenger")
            if vt.get("length") is not None:
                lengths[vt.get("id")] = float(vt.get("length"))
    return classes, lengths


def _sumo_version() -> str:
    try:
        from importlib.metadata import version

        return version("eclipse-sumo")
    except Exception:
        return "unknown"
