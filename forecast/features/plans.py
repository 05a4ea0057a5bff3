"""Sample plans of a whole split: flat arrays, made from only the columns planning needs, in parallel.

A plan needs each scenario's agents (in the order ``Store.load_scenarios`` gives them: by track id),
their class and where they are at each step; not headings, velocities or names. ``plan_split`` reads
just those columns of a chunk of row groups at a time, pads them per scenario at once and runs
``plan_arrays`` (the code behind ``plan_samples``) on each; chunks go to one process per available core.
The plan is the same whatever the chunking and the number of processes: chunks come back in order
and are put in scenario order (``tests/features/test_plan.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from forecast.data.scenario import ScenarioInfo, _sorted_codes
from forecast.data.schema import AGENT_TYPE_LABELS
from forecast.data.store import Store
from forecast.features.config import FeatureConfig
from forecast.features.sample import SampleIndex, plan_arrays
from forecast.features.tracks import resample_step

PLAN_COLUMNS = ["scenario_id", "track_id", "agent_type", "timestep", "x", "y"]
PLAN_CHUNK = 128  # scenarios read at once while planning (a few MB of padded arrays)
PARALLEL_MIN = 4 * PLAN_CHUNK  # below this, starting processes costs more than it saves


class SamplePlan(Sequence):
    """Every sample of a set as flat arrays; ``plan[k]`` is a ``SampleIndex``.

    scenario/t0: [S] int; agents/scored: [sum of group sizes], sample k's group is
    ``agents[offsets[k]:offsets[k + 1]]`` (focal first).
    """

    def __init__(self, scenario: np.ndarray, t0: np.ndarray, offsets: np.ndarray, agents: np.ndarray,
                 scored: np.ndarray):
        self.scenario, self.t0, self.offsets, self.agents, self.scored = scenario, t0, offsets, agents, scored

    @classmethod
    def from_indices(cls, index: list[SampleIndex]) -> SamplePlan:
        sizes = np.array([len(i.agents) for i in index], np.int64)
        cat = np.concatenate
        return cls(np.array([i.scenario for i in index], np.int32), np.array([i.t0 for i in index], np.int32),
                   np.r_[0, np.cumsum(sizes)].astype(np.int64),
                   cat([i.agents for i in index]).astype(np.int32) if index else np.zeros(0, np.int32),
                   cat([i.scored for i in index]).astype(bool) if index else np.zeros(0, bool))

    @classmethod
    def from_arrays(cls, scenario: np.ndarray, t0: np.ndarray, sizes: np.ndarray, agents: np.ndarray,
                    scored: np.ndarray) -> SamplePlan:
        """From per-sample sizes [S] rather than offsets [S + 1] (what ``plan_arrays`` gives)."""
        return cls(np.asarray(scenario, np.int32), np.asarray(t0, np.int32),
                   np.r_[0, np.cumsum(sizes, dtype=np.int64)].astype(np.int64), np.asarray(agents, np.int32),
                   np.asarray(scored, bool))

    def __len__(self) -> int:
        return len(self.scenario)

    def __getitem__(self, k):  # type: ignore[override]
        k = int(k)
        if k < 0:
            k += len(self)
        a, b = self.offsets[k], self.offsets[k + 1]
        return SampleIndex(int(self.scenario[k]), int(self.t0[k]), self.agents[a:b].astype(np.int64), self.scored[a:b])

    def __iter__(self) -> Iterator[SampleIndex]:
        return (self[k] for k in range(len(self)))

    @classmethod
    def concat(cls, plans: list[SamplePlan]) -> SamplePlan:
        sizes = np.concatenate([np.diff(p.offsets) for p in plans]) if plans else np.zeros(0, np.int64)
        cat = np.concatenate
        return cls(cat([p.scenario for p in plans]).astype(np.int32) if plans else np.zeros(0, np.int32),
                   cat([p.t0 for p in plans]).astype(np.int32) if plans else np.zeros(0, np.int32),
                   np.r_[0, np.cumsum(sizes)].astype(np.int64),
                   cat([p.agents for p in plans]).astype(np.int32) if plans else np.zeros(0, np.int32),
                   cat([p.scored for p in plans]).astype(bool) if plans else np.zeros(0, bool))

    def take(self, keep: np.ndarray) -> SamplePlan:
        """Samples ``keep`` [K] (any order), as a plan of its own."""
        keep = np.asarray(keep, np.int64)
        lo, sizes = self.offsets[keep], np.diff(self.offsets)[keep]
        # the agents of each kept sample, in order: lo[j], lo[j] + 1, ... lo[j] + sizes[j] - 1
        starts = np.r_[0, np.cumsum(sizes)[:-1]] if len(keep) else np.zeros(0, np.int64)
        rows = np.repeat(lo - starts, sizes) + np.arange(int(sizes.sum()))
        return SamplePlan.from_arrays(self.scenario[keep], self.t0[keep], sizes, self.agents[rows], self.scored[rows])

    def subset(self, keep: np.ndarray) -> SamplePlan:
        return self.take(keep)

    _ARRAYS = ("scenario", "t0", "offsets", "agents", "scored")

    def save(self, path: Path) -> None:
        """A directory of ``.npy`` files, renamed into place whole (readers never see half a plan)."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            for k in self._ARRAYS:
                np.save(tmp / f"{k}.npy", np.ascontiguousarray(getattr(self, k)))
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: Path) -> SamplePlan:
        """Memory-mapped: the plan of a large set stays in the page cache, shared by every process."""
        return cls(*(np.load(path / f"{k}.npy", mmap_mode="r") for k in cls._ARRAYS))


def plan_workers() -> int:
    """Processes for planning: the cores this process may use, shared among the ranks of a node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def plan_split(store: Store, infos: list[ScenarioInfo], cfg: FeatureConfig, t0_stride: int,
               full_future: bool = False, workers: int | None = None, chunk: int = PLAN_CHUNK) -> SamplePlan:
    """The plan of scenarios ``infos`` (indexed: a tracks file and row group each), scenario by scenario.

    Reads the scenarios in file and row-group order, ``chunk`` at a time, in ``workers`` processes
    (default: ``plan_workers()`` when there are at least ``PARALLEL_MIN`` scenarios, else this one).
    """
    order = sorted(range(len(infos)), key=lambda i: (infos[i].tracks_file or "", infos[i].row_group or 0, i))
    tasks = [(store, [(i, infos[i]) for i in order[c : c + chunk]], cfg, t0_stride, full_future)
             for c in range(0, len(order), chunk)]
    if workers is None:
        workers = plan_workers() if len(infos) >= PARALLEL_MIN else 1
    workers = min(workers, len(tasks))
    if workers > 1 and not multiprocessing.current_process().daemon:  # a daemon (loader worker) has no children
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_plan_chunk, tasks))
    else:
        parts = [_plan_chunk(t) for t in tasks]
    plan = SamplePlan.concat(parts)
    # chunks come in file order; the plan is in scenario order (samples of a scenario keep theirs)
    by_scenario = np.argsort(plan.scenario, kind="stable")
    return plan if np.array_equal(by_scenario, np.arange(len(plan))) else plan.take(by_scenario)


def _plan_chunk(task: tuple) -> SamplePlan:
    store, chunk, cfg, t0_stride, full_future = task
    scen, t0, sizes, agents, scored = [], [], [], [], []
    for i, (present, xy, agent_type) in zip([i for i, _ in chunk], read_plan_inputs(store, [info for _, info in chunk],
                                                                                   cfg.dt), strict=True):
        t, n, a, s = plan_arrays(present, xy, agent_type, cfg, t0_stride, full_future)
        scen.append(np.full(len(t), i, np.int32))
        t0.append(t), sizes.append(n), agents.append(a), scored.append(s)
    cat = np.concatenate
    return SamplePlan.from_arrays(cat(scen), cat(t0), cat(sizes), cat(agents), cat(scored))


def read_plan_inputs(store: Store, infos: list[ScenarioInfo], dt: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What planning needs of each scenario, resampled to ``dt``: (present [A, T] bool, xy [A, T, 2]
    float64 (NaN where absent), agent_type [A] int64), the same arrays as
    ``AgentTracks.from_scenario(store.load_scenarios([info])[0]).resample(dt)`` holds, from 6 of 11 columns."""
    by_file: dict[str, list[int]] = {}
    for j, info in enumerate(infos):
        if info.tracks_file is None or info.row_group is None:
            raise ValueError(f"scenario {info.scenario_id} has no row-group index (a schema-1 store)")
        by_file.setdefault(info.tracks_file, []).append(j)
    out: list = [None] * len(infos)
    for rel, js in by_file.items():
        table = store.parquet_file(rel).read_row_groups(sorted({int(infos[j].row_group) for j in js}),
                                                        columns=PLAN_COLUMNS)
        got = _pad(table, {infos[j].scenario_id: infos[j] for j in js}, dt)
        for j in js:
            out[j] = got.get(infos[j].scenario_id) or _no_rows(infos[j], dt)
    return out


def _pad(table: pa.Table, infos: dict[str, ScenarioInfo], dt: float) -> dict[str, tuple]:
    """Each scenario's rows of ``table`` as padded arrays, agents in track-id order (as ``scenarios_from_tracks``)."""
    if table.num_rows == 0:
        return {}
    if any(table.column(c).null_count for c in ("scenario_id", "track_id")):
        raise ValueError("tracks table has a null scenario_id or track_id")
    s_keys, s_code = _sorted_codes(table.column("scenario_id"))
    t_keys, t_code = _sorted_codes(table.column("track_id"))
    # agent p = the p-th (scenario, track) pair in sorted order; a scenario's agents are contiguous
    _, p_code = np.unique(s_code * max(1, len(t_keys)) + t_code, return_inverse=True)
    ts = table.column("timestep").to_numpy().astype(np.int64)
    n_agents = int(p_code.max()) + 1
    width = max(int(ts.max()) + 1, max(infos[k].num_timesteps for k in s_keys if k in infos))
    present = np.zeros((n_agents, width), bool)
    present[p_code, ts] = True
    xy = np.full((n_agents, width, 2), np.nan)
    xy[p_code, ts, 0] = table.column("x").to_numpy()
    xy[p_code, ts, 1] = table.column("y").to_numpy()
    # an agent's class from its first row (its earliest step), as scenarios_from_tracks reads it
    types = table.column("agent_type").combine_chunks().dictionary_encode()
    label_to_code = {label: i for i, label in enumerate(AGENT_TYPE_LABELS)}
    codes = np.array([label_to_code[v] for v in types.dictionary.to_pylist()], np.int64)
    first = np.full(n_agents, np.iinfo(np.int64).max)
    np.minimum.at(first, p_code, ts)
    at_first = ts == first[p_code]
    agent_type = np.zeros(n_agents, np.int64)
    agent_type[p_code[at_first]] = codes[types.indices.to_numpy(zero_copy_only=False)[at_first]]
    scen_of = np.zeros(n_agents, np.int64)
    scen_of[p_code] = s_code
    bounds = np.searchsorted(scen_of, np.arange(len(s_keys) + 1))
    last_step = np.zeros(len(s_keys), np.int64)
    np.maximum.at(last_step, s_code, ts)
    out = {}
    for si, scen_id in enumerate(s_keys.tolist()):
        info = infos[scen_id]  # a row of a scenario not asked for: KeyError, as in load_scenarios
        a0, a1 = bounds[si], bounds[si + 1]
        steps = max(info.num_timesteps, int(last_step[si]) + 1)
        n = resample_step(info.dt, dt)
        out[scen_id] = (present[a0:a1, :steps:n], xy[a0:a1, :steps:n], agent_type[a0:a1])
    return out


def _no_rows(info: ScenarioInfo, dt: float) -> tuple:
    n = resample_step(info.dt, dt)
    t = len(range(0, info.num_timesteps, n))
    return np.zeros((0, t), bool), np.zeros((0, t, 2)), np.zeros(0, np.int64)
