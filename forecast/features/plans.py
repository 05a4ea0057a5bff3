"""Sample plans of a whole split: flat arrays, made from only the columns planning needs, in parallel.

A plan needs each scenario's agents (in the order ``Store.load_scenarios`` gives them: by track id),
their class and where they are at each step; not headings, velocities or names. ``plan_split`` reads
just those columns of a chunk of row groups at a time, pads them per scenario at once and runs
``plan_many`` (the code behind ``plan_samples``) on them together; chunks go to one process per available core.
The plan is the same whatever the chunking and the number of processes: chunks come back in order
and are put in scenario order (``tests/features/test_plan.py``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from forecast.cpus import usable_cpus
from forecast.data.atomic import open_directory
from forecast.data.ragged import ragged_rows
from forecast.data.scenario import ScenarioInfo, _sorted_codes
from forecast.data.schema import AGENT_TYPE_LABELS
from forecast.data.store import Store
from forecast.features.config import FeatureConfig
from forecast.features.sample import SampleIndex, plan_many
from forecast.features.tracks import resample_step

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["scenario_id", "track_id", "agent_type", "timestep", "x", "y"]  # scenario_id: where needed
PLAN_STRINGS = PLAN_COLUMNS[:3]
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
        return cls.from_arrays([i.scenario for i in index], [i.t0 for i in index], [len(i.agents) for i in index],
                               _cat([i.agents for i in index]), _cat([i.scored for i in index]))

    @classmethod
    def from_arrays(cls, scenario: np.ndarray, t0: np.ndarray, sizes: np.ndarray, agents: np.ndarray,
                    scored: np.ndarray) -> SamplePlan:
        """From per-sample sizes [S] rather than offsets [S + 1] (what ``plan_many`` gives)."""
        return cls(np.asarray(scenario, np.int32), np.asarray(t0, np.int32),
                   np.r_[0, np.cumsum(np.asarray(sizes, np.int64))].astype(np.int64), np.asarray(agents, np.int32),
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
        return cls.from_arrays(_cat([p.scenario for p in plans]), _cat([p.t0 for p in plans]),
                               _cat([np.diff(p.offsets) for p in plans]), _cat([p.agents for p in plans]),
                               _cat([p.scored for p in plans]))

    def take(self, keep: np.ndarray) -> SamplePlan:
        """Samples ``keep`` [K] (any order), as a plan of its own."""
        keep = np.asarray(keep, np.int64)
        sizes = np.diff(self.offsets)[keep]
        rows = ragged_rows(self.offsets[keep], sizes)  # the agents of each kept sample, in order
        return SamplePlan.from_arrays(self.scenario[keep], self.t0[keep], sizes, self.agents[rows], self.scored[rows])

    _ARRAYS = ("scenario", "t0", "offsets", "agents", "scored")

    def save(self, path: Path) -> None:
        """A directory of ``.npy`` files, renamed into place whole (readers never see half a plan)."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            for k in self._ARRAYS:
                np.save(tmp / f"{k}.npy", np.ascontiguousarray(getattr(self, k)))
            open_directory(tmp)  # mkdtemp's 0o700 would hide it from other readers
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


def _cat(arrays: list) -> np.ndarray:
    """np.concatenate, and an empty array for no arrays (from_arrays gives it its dtype)."""
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)


def plan_workers() -> int:
    """Processes for planning: the cores this process may use, shared among the ranks of a node."""
    cores = usable_cpus()
    try:
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        ranks = 1
    return max(1, cores // max(1, ranks))


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
    parts = None
    if workers > 1 and not multiprocessing.current_process().daemon:  # a daemon (loader worker) has no children
        try:
            with ProcessPoolExecutor(workers, initializer=_planning_process) as pool:
                parts = list(pool.map(_plan_chunk, tasks))
        except (OSError, NotImplementedError, BrokenProcessPool) as e:  # no processes here, or one was killed
            log.warning("planning in one process: the planning processes failed (%s: %s)", type(e).__name__, e)
    if parts is None:
        parts = [_plan_chunk(t) for t in tasks]
    plan = SamplePlan.concat(parts)
    # chunks come in file order; the plan is in scenario order (samples of a scenario keep theirs)
    by_scenario = np.argsort(plan.scenario, kind="stable")
    return plan if np.array_equal(by_scenario, np.arange(len(plan))) else plan.take(by_scenario)


_STORES: dict[Path, Store] | None = None  # in a planning process: one Store per path, for all its chunks


def _planning_process() -> None:
    # A pickled Store arrives without its parsed footers, and a batch file's footer (thousands of row
    # groups) takes tens of ms to parse: parsed once per planning process, not once per chunk.
    global _STORES
    _STORES = {}


def _plan_chunk(task: tuple) -> SamplePlan:
    store, chunk, cfg, t0_stride, full_future = task
    if _STORES is not None:
        store = _STORES.setdefault(store.path, store)
    index = np.array([i for i, _ in chunk], np.int64)
    parts = []
    for st in read_plan_inputs(store, [info for _, info in chunk], cfg.dt):
        j, t0, sizes, agents, scored = plan_many(st.present, st.xy, st.agent_type, st.bounds, cfg, t0_stride,
                                                 full_future)
        parts.append(SamplePlan.from_arrays(index[st.which[j]], t0, sizes, agents, scored))
    return SamplePlan.concat(parts)  # put in scenario order by plan_split


@dataclass
class Stacked:
    """Scenes of one length with their agents stacked: present [N, T] bool, xy [N, T, 2] float64 (NaN
    where absent), agent_type [N] int64; scene j holds rows ``bounds[j]:bounds[j + 1]`` (bounds [S + 1])
    and is ``which[j]`` [S] of the scenarios asked for."""

    which: np.ndarray
    present: np.ndarray
    xy: np.ndarray
    agent_type: np.ndarray
    bounds: np.ndarray

    def scene(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = slice(self.bounds[j], self.bounds[j + 1])
        return self.present[rows], self.xy[rows], self.agent_type[rows]


def read_plan_inputs(store: Store, infos: list[ScenarioInfo], dt: float) -> list[Stacked]:
    """What planning needs of scenarios ``infos``, resampled to ``dt``: per scenario the same present, xy and
    agent_type as ``AgentTracks.from_scenario(store.load_scenarios([info])[0]).resample(dt)``, from 6 of
    the 11 columns; scenarios of one length stacked together (one ``Stacked`` per file and length)."""
    by_file: dict[str, list[int]] = {}
    for j, info in enumerate(infos):
        if info.tracks_file is None or info.row_group is None:
            raise ValueError(f"scenario {info.scenario_id} has no row-group index (a schema-1 store)")
        by_file.setdefault(info.tracks_file, []).append(j)
    out: list[Stacked] = []
    for rel, js in by_file.items():
        part = [infos[j] for j in js]
        groups = sorted({int(i.row_group) for i in part})
        pf = store.parquet_file(rel, read_dictionary=PLAN_STRINGS, pre_buffer=False)
        # strings as Parquet stores them, dictionary-encoded: less to decode, and integer codes
        if all(i.num_rows is not None for i in part):
            # The index gives each scenario's rows, so no scenario_id column is read (each column read
            # costs about as much as the rows' planning).
            table = pf.read_row_groups(groups, columns=PLAN_COLUMNS[1:], use_threads=False)
            table, code = _rows_of(table, part, groups, [pf.metadata.row_group(g).num_rows for g in groups])
            scenario = (code, np.arange(len(part), dtype=np.int64))
        else:
            table, *scenario = _scenario_codes(pf.read_row_groups(groups, columns=PLAN_COLUMNS, use_threads=False), part)
        out += _stack(table, part, np.array(js, np.int64), dt, *scenario)
    return out


def _rows_of(table: pa.Table, infos: list[ScenarioInfo], groups: list[int], sizes: list[int]) -> tuple[pa.Table, np.ndarray]:
    """The rows of ``infos`` in ``table`` (row groups ``groups`` of ``sizes`` rows, read one after another)
    and each kept row's position in ``infos`` [rows]; rows of scenarios not asked for are dropped."""
    start = dict(zip(groups, np.r_[0, np.cumsum(sizes)[:-1]].tolist(), strict=True))
    size = dict(zip(groups, sizes, strict=True))
    code = np.full(table.num_rows, -1, np.int64)
    for k, info in enumerate(infos):
        first, n = info.rows
        g = int(info.row_group)
        code[start[g] + first : start[g] + first + (size[g] if n is None else n)] = k
    keep = code >= 0
    if keep.all():
        return table, code
    return table.filter(pa.array(keep)), code[keep]


def _scenario_codes(table: pa.Table, infos: list[ScenarioInfo]) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """From the scenario_id column: the rows of ``infos`` (a row group also holds scenarios not asked
    for), each kept row's scenario code [rows] and each code's position in ``infos``."""
    if not table.num_rows:
        return table, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if table.column("scenario_id").null_count:
        raise ValueError("tracks table has a null scenario_id")
    keys, code = _sorted_codes(table.column("scenario_id"))
    pos = {info.scenario_id: k for k, info in enumerate(infos)}
    at = np.array([pos.get(k, -1) for k in keys.tolist()], np.int64)
    wanted = at >= 0
    if wanted.all():
        return table, code, at
    recode = np.cumsum(wanted) - 1  # codes of the kept keys, dense again
    keep = wanted[code]
    return table.filter(pa.array(keep)), recode[code[keep]], at[wanted]


def _stack(table: pa.Table, infos: list[ScenarioInfo], which: np.ndarray, dt: float, s_code: np.ndarray,
           s_info: np.ndarray) -> list[Stacked]:
    """The rows of scenarios ``infos`` (``table``; row r of scenario code ``s_code[r]``, which is
    ``infos[s_info[code]]``) padded, agents in track-id order within each (as ``scenarios_from_tracks``)."""
    if table.num_rows and table.column("track_id").null_count:
        raise ValueError("tracks table has a null track_id")
    t_keys, t_code = _sorted_codes(table.column("track_id")) if table.num_rows else (np.zeros(0, str), np.zeros(0, np.int64))
    # agent p = the p-th (scenario, track) pair in sorted order; a scenario's agents are contiguous
    pair = s_code * max(1, len(t_keys)) + t_code
    if len(s_info) * len(t_keys) <= 1 << 24:  # rank by marking the pairs seen (no sort)
        seen = np.zeros(len(s_info) * max(1, len(t_keys)), bool)
        seen[pair] = True
        p_code = (np.cumsum(seen) - 1)[pair]
    else:
        p_code = np.unique(pair, return_inverse=True)[1].reshape(-1)
    ts = table.column("timestep").to_numpy()
    n_agents = int(p_code.max()) + 1 if len(p_code) else 0
    width = max(max(i.num_timesteps for i in infos), int(ts.max()) + 1 if len(ts) else 0)
    cell = p_code * width + ts  # flat (agent, step) index of each row
    present = np.zeros(n_agents * width, bool)
    present[cell] = True
    present = present.reshape(n_agents, width)
    xy = np.full((n_agents * width, 2), np.nan)
    xy[cell, 0] = table.column("x").to_numpy()
    xy[cell, 1] = table.column("y").to_numpy()
    xy = xy.reshape(n_agents, width, 2)
    scen_of = np.zeros(n_agents, np.int64)
    scen_of[p_code] = s_info[s_code]
    agent_type = np.zeros(n_agents, np.int64)
    last = np.full(len(infos), -1)
    if n_agents:
        # an agent's class from its first row (its earliest step), as scenarios_from_tracks reads it
        row_at = np.empty(n_agents * width, np.int64)
        row_at[cell[::-1]] = np.arange(len(cell) - 1, -1, -1)  # of equal cells the first row
        first_row = row_at[np.arange(n_agents) * width + present.argmax(1)]
        labels, type_code = _sorted_codes(table.column("agent_type").take(pa.array(first_row)))
        label_to_code = {label: i for i, label in enumerate(AGENT_TYPE_LABELS)}
        agent_type = np.array([label_to_code[v] for v in labels.tolist()], np.int64)[type_code]
        np.maximum.at(last, scen_of, width - 1 - present[:, ::-1].argmax(1))  # each scenario's last step
    steps = np.maximum([i.num_timesteps for i in infos], last + 1)  # per scenario, before resampling
    # each asked scenario's agent rows (none for a scenario without rows)
    count = np.bincount(scen_of, minlength=len(infos))
    if not np.all(np.diff(scen_of) >= 0):  # row groups out of id order: agents regrouped by scenario
        order = np.argsort(scen_of, kind="stable")
        present, xy, agent_type, scen_of = present[order], xy[order], agent_type[order], scen_of[order]
    start = np.searchsorted(scen_of, np.arange(len(infos)))
    step = np.array([resample_step(i.dt, dt) for i in infos])
    out = []
    keys = np.stack([steps, step], 1)
    for key in np.unique(keys, axis=0):
        members = np.flatnonzero((keys == key).all(1))
        total, n = int(key[0]), int(key[1])
        rows: slice | np.ndarray = slice(None)  # the whole chunk (the usual case): views
        if len(members) < len(infos):
            rows = ragged_rows(start[members], count[members])
        out.append(Stacked(which[members], present[rows, :total:n], xy[rows, :total:n], agent_type[rows],
                           np.r_[0, np.cumsum(count[members])]))
    return out
