"""ETH/UCY adapter: parsing, frame step, past-only velocity, quarantine, real data and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecast.cli import main
from forecast.data.ingest import run_ingest
from forecast.data.sources.eth_ucy import EthUcyAdapter, frame_step, past_velocity
from forecast.data.store import Store

ETH_UCY = Path("/work/shared/data/eth_ucy")
needs_data = pytest.mark.skipif(not ETH_UCY.is_dir(), reason="shared ETH/UCY data not present")


def write_file(folder: Path, name: str, rows: list[tuple] | str) -> Path:
    """An ETH/UCY file ``folder/name.txt``: tab-separated ``frame id x y`` rows, or raw text."""
    folder.mkdir(parents=True, exist_ok=True)
    text = rows if isinstance(rows, str) else "".join("\t".join(str(v) for v in r) + "\n" for r in rows)
    path = folder / f"{name}.txt"
    path.write_text(text)
    return path


def ingest(input_dir: Path, store_dir: Path, split: str | None = None):
    store = Store(store_dir)
    summary = run_ingest(EthUcyAdapter(), input_dir, store, split=split, progress=False)
    return store, summary


def by_track(scen, track_id: str) -> int:
    return int(np.flatnonzero(scen.track_ids == track_id)[0])


# Hand-worked: dt 0.4 s per 10-frame step. Expected (vx, vy, heading) by backward differences.
HAND_ROWS = [
    (100, 1, 0.0, 0.0),  # first row of track 1: unknown
    (110, 1, 0.4, 0.0),  # (0.4, 0) / 0.4 s -> (1, 0), heading 0
    (110, 2, 5.0, 5.0),  # first row of track 2: unknown
    (120, 1, 0.4, 0.8),  # (0, 0.8) / 0.4 -> (0, 2), heading pi/2
    (120, 2, 5.0, 5.0),  # standing: (0, 0), heading still unknown
    (130, 1, 0.41, 0.8),  # (0.01, 0) / 0.4 -> (0.025, 0): too slow, heading carried: pi/2
    (130, 2, 4.6, 5.0),  # (-0.4, 0) / 0.4 -> (-1, 0), heading pi
    (150, 1, 0.41, 0.0),  # two steps: (0, -0.8) / 0.8 -> (0, -1), heading -pi/2
]
HAND_EXPECTED = {  # track -> timestep -> (vx, vy, heading)
    "1": {0: (np.nan, np.nan, np.nan), 1: (1.0, 0.0, 0.0), 2: (0.0, 2.0, np.pi / 2),
          3: (0.025, 0.0, np.pi / 2), 5: (0.0, -1.0, -np.pi / 2)},
    "2": {1: (np.nan, np.nan, np.nan), 2: (0.0, 0.0, np.nan), 3: (-1.0, 0.0, np.pi)},
}


def test_hand_worked_velocity_and_heading(tmp_path):
    write_file(tmp_path / "in" / "hand" / "test", "walk", HAND_ROWS)
    store, summary = ingest(tmp_path / "in", tmp_path / "store")
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (8, 8, 0)
    [info] = store.scenarios()
    assert info.scenario_id == "eth_ucy:hand:test:walk"
    assert (info.source, info.split, info.dt, info.num_timesteps, info.map_id) == ("eth_ucy", "test", 0.4, 6, None)
    scen = store.load_scenario(info.scenario_id)
    assert sorted(scen.track_ids) == ["1", "2"]
    assert set(scen.source_type) == {"pedestrian"} and (scen.agent_type == 1).all()  # AgentType.PEDESTRIAN
    for tid, steps in HAND_EXPECTED.items():
        a = by_track(scen, tid)
        ts = np.array(sorted(steps))
        want = np.array([steps[t] for t in ts])
        np.testing.assert_array_equal(np.flatnonzero(scen.present[a]), ts)
        assert scen.observed[a, ts].all()
        np.testing.assert_allclose(scen.velocity[a, ts, 0], want[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(scen.velocity[a, ts, 1], want[:, 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(scen.heading[a, ts], want[:, 2], rtol=0, atol=1e-12)


def test_past_velocity_any_input_order():
    """The helper returns values in the input order, whatever order the rows come in."""
    track = np.array([1, 0, 1, 0])
    step = np.array([1, 1, 0, 0])
    x = np.array([1.0, 0.0, 0.0, 0.0])
    y = np.array([0.0, 0.4, 0.0, 0.0])
    vx, vy, heading = past_velocity(track, step, x, y, 0.4)
    np.testing.assert_allclose(vx, [2.5, 0.0, np.nan, np.nan])
    np.testing.assert_allclose(vy, [0.0, 1.0, np.nan, np.nan])
    np.testing.assert_allclose(heading, [0.0, np.pi / 2, np.nan, np.nan])


def random_walks(rng: np.random.Generator, n_peds: int = 5, n_frames: int = 30) -> np.ndarray:
    """[R, 4] rows (frame, id, x, y), frame-major as in the real files; pedestrians enter at different frames."""
    rows = []
    for pid in range(1, n_peds + 1):
        enter = int(rng.integers(0, 8))
        steps = rng.normal(0.0, 0.3, size=(n_frames - enter, 2))  # metres per 0.4 s: walking pace
        xy = rng.uniform(-5, 5, size=2) + np.cumsum(steps, axis=0)
        frames = np.arange(enter, n_frames) * 10
        rows.append(np.column_stack([frames, np.full(len(frames), pid), xy]))
    table = np.concatenate(rows)
    return table[np.lexsort((table[:, 1], table[:, 0]))]


def test_future_perturbation_leaves_past_features_unchanged(tmp_path):
    """No leakage: moving positions after step t changes nothing at steps <= t."""
    rng = np.random.default_rng(0)
    rows = random_walks(rng)
    t = 12  # a timestep of the scenario, counted from the file's first frame
    future = rows[:, 0] > rows[:, 0].min() + t * 10
    perturbed = rows.copy()
    perturbed[future, 2:] += rng.normal(0.0, 0.2, size=(int(future.sum()), 2))
    fmt = ["%d", "%d", "%.6f", "%.6f"]
    for name, table in (("orig", rows), ("pert", perturbed)):
        (tmp_path / name / "s" / "test").mkdir(parents=True)
        np.savetxt(tmp_path / name / "s" / "test" / "walk.txt", table, fmt=fmt, delimiter="\t")
    scen = {}
    for name in ("orig", "pert"):
        store, summary = ingest(tmp_path / name, tmp_path / f"store_{name}")
        assert summary.rows_quarantined == 0
        scen[name] = store.load_scenario("eth_ucy:s:test:walk")
    a, b = scen["orig"], scen["pert"]
    np.testing.assert_array_equal(a.track_ids, b.track_ids)
    past = slice(0, t + 1)
    np.testing.assert_array_equal(a.xy[:, past], b.xy[:, past])
    np.testing.assert_array_equal(a.velocity[:, past], b.velocity[:, past])  # NaNs compare equal here
    np.testing.assert_array_equal(a.heading[:, past], b.heading[:, past])
    # The perturbation is real: the first future step's velocity did change.
    assert not np.allclose(a.velocity[:, t + 1], b.velocity[:, t + 1], equal_nan=True)


@pytest.mark.parametrize("step", [10, 6])
def test_frame_step_detection(tmp_path, step):
    first = 780
    rows = [(first + k * step, pid, 0.1 * k + pid, 0.0) for k in range(6) for pid in (1, 2)]
    rows.append((first + 9 * step, 1, 1.9, 0.0))  # a gap of four steps does not change the step
    write_file(tmp_path / "in" / "s" / "val", "f", rows)
    frames = np.array([r[0] for r in rows], dtype=float)
    assert frame_step(frames) == step
    store, summary = ingest(tmp_path / "in", tmp_path / "store")
    assert summary.rows_quarantined == 0
    [info] = store.scenarios()
    assert info.split == "val" and info.dt == 0.4 and info.num_timesteps == 10
    scen = store.load_scenario(info.scenario_id)
    a = by_track(scen, "1")
    np.testing.assert_array_equal(np.flatnonzero(scen.present[a]), [0, 1, 2, 3, 4, 5, 9])
    # 0.1 m per step of 0.4 s, whatever the frame numbers step by; at the end 0.4 m over 4 steps (1.6 s).
    np.testing.assert_allclose(scen.velocity[a, [1, 5, 9], 0], [0.25, 0.25, 0.4 / 1.6])


def test_quarantine_nan_malformed_offgrid_duplicate(tmp_path):
    text = (
        "0\t1\t0.0\t0.0\n"  # row 0
        "0\t2\t5.0\t5.0\n"  # row 1
        "10\t1\t0.4\t0.0\n"  # row 2
        "10\t2\t5.0\t5.4\n"  # row 3
        "\n"  # blank line: not a data row
        "20\t1\tnan\t0.0\n"  # row 4: NaN position -> validator
        "20\t2\t5.0\n"  # row 5: three fields -> parser
        "25\t2\t5.0\t5.6\n"  # row 6: frame off the 10-frame grid -> validator
        "30\t1\t1.2\t0.0\n"  # row 7
        "30\t2\t5.0\t6.2\n"  # row 8
        "30\t2\t9.0\t9.0\n"  # row 9: duplicate (frame, id) -> validator, first row kept
        "40\tabc\t1.6\t0.0\n"  # row 10: non-numeric id -> parser
        "40\t2\t5.0\t6.6\n"  # row 11
    )
    write_file(tmp_path / "in" / "s" / "train", "bad", text)
    store, summary = ingest(tmp_path / "in", tmp_path / "store")
    assert summary.rows_read == 12
    assert summary.rows_quarantined == 5
    assert summary.rows_written == 7
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined
    assert summary.files_quarantined == 0
    q = store.quarantine_table().sort_by("row").to_pylist()
    assert [r["row"] for r in q] == [4, 5, 6, 9, 10]
    assert [r["field"] for r in q] == ["x", "line", "time", "timestep", "pedestrian_id"]
    assert q[0]["reason"] == "non-finite position"
    assert q[1]["reason"] == "expected 4 fields (frame pedestrian_id x y), got 3"
    assert q[2]["reason"] == "time off the 0.4 s grid"
    assert q[3]["reason"] == "duplicate (track, timestep)"
    assert q[4]["reason"] == "non-numeric value 'abc'"
    assert all(r["source_file"].endswith("s/train/bad.txt") for r in q)
    assert sum(summary.quarantine_reasons.values()) == 5

    scen = store.load_scenario("eth_ucy:s:train:bad")
    a, b = by_track(scen, "1"), by_track(scen, "2")
    np.testing.assert_array_equal(np.flatnonzero(scen.present[a]), [0, 1, 3])
    np.testing.assert_array_equal(np.flatnonzero(scen.present[b]), [0, 1, 3, 4])
    # Differences skip quarantined rows: track 1 at step 3 differences against step 1
    # (over 0.8 s), not the NaN row; track 2 at step 3 against step 1, not the off-grid
    # row, and the kept duplicate is the first one.
    np.testing.assert_allclose(scen.velocity[a, 3], [(1.2 - 0.4) / 0.8, 0.0])
    np.testing.assert_allclose(scen.xy[b, 3], [5.0, 6.2])
    np.testing.assert_allclose(scen.velocity[b, 3], [0.0, (6.2 - 5.4) / 0.8])
    np.testing.assert_allclose(scen.velocity[b, 4], [0.0, 1.0])


def test_unreadable_file_is_quarantined_whole(tmp_path):
    folder = tmp_path / "in" / "s" / "test"
    folder.mkdir(parents=True)
    (folder / "broken.txt").write_bytes(b"0\t1\t\xff\xfe\t0\n")
    write_file(folder, "fine", [(0, 1, 0.0, 0.0), (10, 1, 0.5, 0.0)])
    store, summary = ingest(tmp_path / "in", tmp_path / "store")
    assert summary.files_quarantined == 1
    assert (summary.rows_read, summary.rows_written) == (2, 2)
    q = store.quarantine_table().to_pylist()
    assert len(q) == 1 and q[0]["row"] == -1 and q[0]["reason"].startswith("unreadable file")
    assert [i.scenario_id for i in store.scenarios()] == ["eth_ucy:s:test:fine"]


def test_discover_levels_and_split_override(tmp_path):
    root = tmp_path / "eth_ucy"
    for scene in ("eth", "hotel"):
        for split in ("train", "val", "test"):
            write_file(root / scene / split, f"{scene}_{split}", [(0, 1, 0.0, 0.0)])
    adapter = EthUcyAdapter()
    assert len(adapter.discover(root, None)) == 6
    scene_units = adapter.discover(root / "eth", None)
    assert sorted(u.key for u in scene_units) == [
        "eth_ucy/eth/test/eth_test", "eth_ucy/eth/train/eth_train", "eth_ucy/eth/val/eth_val"
    ]
    [unit] = adapter.discover(root / "hotel" / "val", None)
    assert (unit.key, unit.split, unit.source) == ("eth_ucy/hotel/val/hotel_val", "val", "eth_ucy")
    [unit] = adapter.discover(root / "hotel" / "val", "test")
    assert (unit.key, unit.split) == ("eth_ucy/hotel/test/hotel_val", "test")
    parsed = adapter.parse(unit)
    assert parsed.scenario_prefix == "eth_ucy:hotel:test:hotel_val"
    assert parsed.window_steps is None and parsed.map_id is None and parsed.dt == 0.4


@needs_data
def test_real_eth_test_split(tmp_path):
    src = ETH_UCY / "eth" / "test"
    lines = sum(1 for line in (src / "biwi_eth.txt").read_text().splitlines() if line.strip())
    store, summary = ingest(src, tmp_path / "store")
    assert summary.rows_read == lines
    assert summary.rows_written == lines - summary.rows_quarantined
    [info] = store.scenarios()
    assert info.scenario_id == "eth_ucy:eth:test:biwi_eth"
    assert (info.split, info.dt, info.map_id) == ("test", 0.4, None)
    scen = store.load_scenario(info.scenario_id)
    assert int(scen.present.sum()) == summary.rows_written
    # Track 1 starts at frame 780 (8.46, 3.59) -> frame 790 (9.57, 3.79): one step of 0.4 s.
    a = by_track(scen, "1")
    t0 = int(np.flatnonzero(scen.present[a])[0])
    np.testing.assert_allclose(scen.xy[a, t0 : t0 + 2], [[8.46, 3.59], [9.57, 3.79]])
    assert np.isnan(scen.velocity[a, t0]).all()
    np.testing.assert_allclose(scen.velocity[a, t0 + 1], [(9.57 - 8.46) / 0.4, (3.79 - 3.59) / 0.4])


@needs_data
def test_cli_ingest(tmp_path, capsys):
    store = tmp_path / "store"
    rc = main(["--quiet", "ingest", "--source", "eth_ucy", str(ETH_UCY / "eth" / "test"), "--store", str(store)])
    assert rc == 0
    assert "rows read" in capsys.readouterr().out
    assert [i.scenario_id for i in Store(store).scenarios()] == ["eth_ucy:eth:test:biwi_eth"]
