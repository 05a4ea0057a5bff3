"""The sample plan: the vectorised planner gives exactly the old greedy loop's samples; store plans are
the same serial or in parallel, whatever the chunking, and round-trip through the disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.data.types import TARGET_TYPES
from forecast.features.config import FeatureConfig
from forecast.features.sample import SampleIndex, plan_samples
from forecast.features.tracks import AgentTracks


def _reference_plan(tracks: AgentTracks, scenario: int, cfg: FeatureConfig, t0_stride: int,
                    full_future: bool = False) -> list[SampleIndex]:
    """``plan_samples`` as it was before it was vectorised (one distance vector per group, Python sets)."""
    th, tf = cfg.history_steps, cfg.future_steps
    out: list[SampleIndex] = []
    is_target_type = np.isin(tracks.agent_type, np.array([int(t) for t in TARGET_TYPES]))
    for t0 in range(th - 1, tracks.num_steps - tf, t0_stride):
        now = tracks.present[:, t0]
        hist_n = tracks.present[:, max(0, t0 - th + 1) : t0 + 1].sum(1)
        fut = tracks.present[:, t0 + 1 : t0 + 1 + tf]
        has_future = fut.all(1) if full_future else fut.any(1)
        target = now & is_target_type & (hist_n >= cfg.min_history_steps) & has_future
        uncovered = set(np.flatnonzero(target).tolist())
        here = np.flatnonzero(now)
        pos = tracks.xy[here, t0]
        while uncovered:
            focal = min(uncovered)
            d = np.hypot(*(pos - tracks.xy[focal, t0]).T)
            order = np.argsort(d, kind="stable")
            order = order[d[order] <= cfg.neighbour_radius][: cfg.max_agents]
            group = here[order]
            scored = np.array([g in uncovered for g in group])
            uncovered -= set(group[scored].tolist())
            out.append(SampleIndex(scenario, t0, group, scored))
    return out


def random_tracks(rng: np.random.Generator, a: int, t: int, grid: bool = False) -> AgentTracks:
    """Agents in clusters (several groups per t0), gaps and short tracks, every class; ``grid``: positions
    on a 1 m grid, so that many distances tie (the order of equal distances must be kept)."""
    centres = rng.uniform(-150, 150, (max(1, a // 6), 2))
    start = centres[rng.integers(0, len(centres), a)] + rng.normal(0, 15, (a, 2))
    xy = start[:, None] + rng.normal(0, 1, (a, 1, 2)) * np.arange(t)[None, :, None] * 0.3
    if grid:
        xy = np.round(xy / 4) * 4
    present = rng.random((a, t)) > rng.uniform(0, 0.4, (a, 1))  # per-agent dropout
    first, last = rng.integers(0, t, a), rng.integers(0, t, a)
    steps = np.arange(t)[None]
    present &= (steps >= np.minimum(first, last)[:, None]) & (steps <= np.maximum(first, last)[:, None])
    xy = np.where(present[..., None], xy, np.nan)
    return AgentTracks(xy=xy, heading=np.full((a, t), np.nan), present=present,
                       agent_type=rng.integers(0, 4, a).astype(np.int64), dt=0.1)


def _equal(a: list[SampleIndex], b: list[SampleIndex]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.scenario, x.t0) == (y.scenario, y.t0)
        assert x.agents.dtype == y.agents.dtype and x.scored.dtype == y.scored.dtype
        np.testing.assert_array_equal(x.agents, y.agents)
        np.testing.assert_array_equal(x.scored, y.scored)


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_plan_equals_the_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    cfg = FeatureConfig(history_steps=int(rng.integers(3, 12)), future_steps=int(rng.integers(2, 12)),
                        max_agents=int(rng.integers(2, 12)), min_history_steps=int(rng.integers(1, 4)),
                        neighbour_radius=float(rng.choice([5.0, 20.0, 60.0, 1e9])))
    tracks = random_tracks(rng, int(rng.integers(0, 60)), int(rng.integers(5, 60)), grid=seed % 3 == 0)
    total = 0
    for stride in (1, 3, 10):
        for full in (False, True):
            ref = _reference_plan(tracks, 7, cfg, stride, full_future=full)
            _equal(plan_samples(tracks, 7, cfg, stride, full_future=full), ref)
            total += len(ref)
    if tracks.num_agents > 20:
        assert total > 0  # the case compares something


def test_plan_groups_cover_each_target_once():
    rng = np.random.default_rng(5)
    cfg = FeatureConfig(history_steps=5, future_steps=5, max_agents=4, min_history_steps=2, neighbour_radius=30.0)
    tracks = random_tracks(rng, 50, 40)
    plan = plan_samples(tracks, 0, cfg, 2)
    assert len({p.t0 for p in plan}) > 3 and max(len(p.agents) for p in plan) == 4
    for t0 in {p.t0 for p in plan}:
        scored = np.concatenate([p.agents[p.scored] for p in plan if p.t0 == t0])
        assert len(scored) == len(set(scored.tolist()))
        assert all(p.scored[0] for p in plan)  # the focal is a target


# -- plans of a store ---------------------------------------------------------------------------

CFG = FeatureConfig(history_steps=10, future_steps=10, max_agents=8, min_history_steps=3)


@pytest.fixture(scope="module")
def store(sumo_runs, tmp_path_factory):
    """The tiny runs in batches of 3 scenarios: several files and row groups per split."""
    from forecast.data.ingest import run_ingest
    from forecast.data.sources.sumo import SumoAdapter
    from forecast.data.store import Store

    s = Store(tmp_path_factory.mktemp("plan") / "store")
    run_ingest(SumoAdapter(5.0), sumo_runs, s, progress=False, batch_scenarios=3)
    return s


@pytest.mark.parametrize(("dt", "by_id"), [(0.1, False), (0.2, False), (0.1, True)])
def test_plan_inputs_are_the_tracks(store, dt, by_id):
    """The planning reader gives what the full scenarios give (agent order, class, positions, resampling),
    by the index's row ranges or (``by_id``: an index without row counts) by the scenario_id column,
    from row groups that also hold scenarios not asked for."""
    import dataclasses

    from forecast.features.plans import read_plan_inputs

    infos = store.scenarios(split="train")[1:][::-1]  # not from the first row group, not in file order
    infos[4] = dataclasses.replace(infos[4], num_timesteps=infos[4].num_timesteps + 7)  # a longer one: stacked apart
    if by_id:
        infos[2] = dataclasses.replace(infos[2], num_rows=None, row_offset=None)
    stacks = read_plan_inputs(store, infos, dt)
    got = {int(st.which[j]): st.scene(j) for st in stacks for j in range(len(st.which))}
    assert sorted(got) == list(range(len(infos))) and len(stacks) > len({i.tracks_file for i in infos})
    for i, info in enumerate(infos):
        present, xy, agent_type = got[i]
        tr = AgentTracks.from_scenario(store.load_scenarios([info])[0]).resample(dt)
        np.testing.assert_array_equal(present, tr.present)
        np.testing.assert_array_equal(xy, tr.xy)  # NaN where absent, in both
        np.testing.assert_array_equal(agent_type, tr.agent_type)
        assert agent_type.dtype == tr.agent_type.dtype


@pytest.mark.parametrize("full_future", [False, True])
def test_store_plan_serial_parallel_and_old_path_agree(store, full_future):
    from forecast.features.plans import SamplePlan, plan_split

    infos = store.scenarios(split="train")[::-1]  # scenario order unlike the files' order
    old = SamplePlan.from_indices([s for i, sc in enumerate(store.load_scenarios(infos)) for s in _reference_plan(
        AgentTracks.from_scenario(sc).resample(CFG.dt), i, CFG, 5, full_future)])
    assert len(old) > 20 and len(set(old.scenario.tolist())) > 3
    plans = [plan_split(store, infos, CFG, 5, full_future, workers=1),
             plan_split(store, infos, CFG, 5, full_future, workers=1, chunk=2),
             plan_split(store, infos, CFG, 5, full_future, workers=2, chunk=3)]  # two processes
    for plan in plans:
        for k in SamplePlan._ARRAYS:
            a, b = getattr(plan, k), getattr(old, k)
            assert a.dtype == b.dtype, k
            np.testing.assert_array_equal(a, b, err_msg=k)


def test_plan_take_and_cache_round_trip(store, tmp_path):
    from forecast.features.plans import SamplePlan, plan_split

    plan = plan_split(store, store.scenarios(split="val"), CFG, 3, workers=1)
    keep = np.array([5, 0, 3, len(plan) - 1])
    part = plan.take(keep)
    _equal(list(part), [plan[int(k)] for k in keep])
    plan.save(tmp_path / "p")
    back = SamplePlan.load(tmp_path / "p")
    assert isinstance(back.agents, np.memmap)
    for k in SamplePlan._ARRAYS:
        np.testing.assert_array_equal(getattr(back, k), getattr(plan, k))
        assert getattr(back, k).dtype == getattr(plan, k).dtype
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("batch", [1, 40, 1 << 18])
def test_many_scenes_at_once_equal_one_at_a_time(monkeypatch, batch):
    """Problems of several scenes covered together (in batches of ``GROUP_BATCH`` agent slots) give each
    scene's samples in its own order."""
    import forecast.features.sample as S

    monkeypatch.setattr(S, "GROUP_BATCH", batch)
    rng = np.random.default_rng(batch)
    cfg = FeatureConfig(history_steps=6, future_steps=5, max_agents=5, min_history_steps=2, neighbour_radius=25.0)
    scenes = [random_tracks(rng, int(rng.integers(0, 40)), 30, grid=j % 2 == 0) for j in range(9)]
    bounds = np.r_[0, np.cumsum([s.num_agents for s in scenes])]
    pos, t0, sizes, agents, scored = S.plan_many(*(np.concatenate([getattr(s, k) for s in scenes])
                                                   for k in ("present", "xy", "agent_type")), bounds, cfg, 2)
    ref = [x for j, s in enumerate(scenes) for x in _reference_plan(s, j, cfg, 2)]
    assert len(ref) > 30
    cut = np.cumsum(sizes)[:-1]
    _equal([SampleIndex(int(j), int(t), a, s) for j, t, a, s in
            zip(pos, t0, np.split(agents, cut), np.split(scored, cut), strict=True)], ref)


def test_plan_falls_back_to_one_process(store, monkeypatch, caplog):
    """Where processes cannot be started, the plan is made here, the same."""
    import forecast.features.plans as P

    def no_processes(*args, **kwargs):
        raise OSError("no semaphores here")

    infos = store.scenarios(split="val")
    serial = P.plan_split(store, infos, CFG, 5, workers=1)
    monkeypatch.setattr(P, "ProcessPoolExecutor", no_processes)
    fallback = P.plan_split(store, infos, CFG, 5, workers=2, chunk=2)
    assert "one process" in caplog.text
    for k in P.SamplePlan._ARRAYS:
        np.testing.assert_array_equal(getattr(fallback, k), getattr(serial, k))
