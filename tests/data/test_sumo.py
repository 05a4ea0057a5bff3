from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from forecast.cli import main
from forecast.data.ingest import run_ingest
from forecast.data.schema import AgentType
from forecast.data.sources.sumo import SumoAdapter, fcd_to_rows, sumo_angle_to_heading
from forecast.data.store import Store
from forecast.sim.quality import one_step_jumps


def test_sumo_angle_hand_worked():
    # SUMO: degrees clockwise from north. Ours: radians counter-clockwise from +x (east).
    angles = np.array([0.0, 90.0, 180.0, 270.0, 45.0, 360.0])
    expected = np.array([np.pi / 2, 0.0, -np.pi / 2, np.pi, np.pi / 4, np.pi / 2])
    np.testing.assert_allclose(sumo_angle_to_heading(angles), expected, atol=1e-12)


def _fcd(rows: list[tuple]) -> pa.Table:
    names = ["timestep_time", "vehicle_id", "vehicle_x", "vehicle_y", "vehicle_angle", "vehicle_type", "vehicle_speed"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def test_fcd_velocity_from_speed_and_angle():
    rows = fcd_to_rows(_fcd([(0.0, "car1", 0.0, 0.0, 90.0, "DEFAULT_VEHTYPE", 10.0),
                             (0.0, "p1", 5.0, 5.0, 0.0, "DEFAULT_PEDTYPE", 1.5),
                             (0.0, "b1", 9.0, 9.0, 180.0, "bike_bicycle", 4.0)]), {"bike_bicycle": "bicycle"})
    np.testing.assert_allclose(rows.vx, [10.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rows.vy, [0.0, 1.5, -4.0], atol=1e-9)
    assert list(rows.agent_type) == [AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.CYCLIST]


def test_store_contents(sumo_store):
    infos = sumo_store.scenarios()
    assert {i.split for i in infos} == {"train", "val", "test"}
    assert all(i.dt == pytest.approx(0.1) and i.num_timesteps <= 50 for i in infos)
    # any Arrow tool can read the tracks with hive partitioning
    table = ds.dataset(sumo_store.tracks_dir, partitioning="hive").to_table()
    assert {"source", "split", "scenario_id", "track_id", "agent_type", "timestep", "x", "y", "heading",
            "vx", "vy", "observed", "source_type"} <= set(table.column_names)
    assert set(table["agent_type"].to_pylist()) == {"vehicle", "pedestrian", "cyclist", "traffic_signal"}
    scen = sumo_store.load_scenario(infos[len(infos) // 2].scenario_id)
    a, t = scen.present.shape
    assert scen.xy.shape == (a, t, 2) and scen.velocity.shape == (a, t, 2)
    assert np.isnan(scen.xy[~scen.present]).all() and np.isfinite(scen.xy[scen.present]).all()
    # speed in the store equals |v|, heading points along v for moving agents
    v = scen.velocity[scen.present]
    h = scen.heading[scen.present]
    moving = np.hypot(v[:, 0], v[:, 1]) > 0.5
    np.testing.assert_allclose(np.arctan2(v[moving, 1], v[moving, 0]), h[moving], atol=1e-6)


def test_map_layers(sumo_store):
    layers = sumo_store.load_map("sumo:g_train")
    assert {"lane", "lane_centerline", "crosswalk", "sidewalk", "drivable_area", "walking_area"} <= set(layers)
    # vehicles drive inside the drivable area
    import shapely

    drivable = shapely.union_all(layers["drivable_area"]).buffer(1.0)
    info = next(i for i in sumo_store.scenarios(split="train"))
    scen = sumo_store.load_scenario(info.scenario_id)
    veh = scen.agent_type == AgentType.VEHICLE
    pts = scen.xy[veh][scen.present[veh]]
    assert shapely.contains_xy(drivable, pts[:, 0], pts[:, 1]).mean() > 0.98


def _summary_counts(store: Store) -> dict:
    return {m["unit"]: m["counts"] for m in store.manifests()}


def test_rerun_is_idempotent(sumo_runs, tmp_path):
    store = Store(tmp_path / "s")
    first = run_ingest(SumoAdapter(5.0), sumo_runs, store, progress=False)
    before = {p: p.stat().st_mtime_ns for p in store.path.rglob("*.parquet")}
    second = run_ingest(SumoAdapter(5.0), sumo_runs, store, progress=False)
    assert first.units_written == 3 and second.units_skipped == 3 and second.units_written == 0
    assert {p: p.stat().st_mtime_ns for p in store.path.rglob("*.parquet")} == before


def test_shards_merge_to_single_run(sumo_runs, tmp_path):
    single, sharded = Store(tmp_path / "single"), Store(tmp_path / "sharded")
    run_ingest(SumoAdapter(5.0), sumo_runs, single, progress=False)
    written = sum(run_ingest(SumoAdapter(5.0), sumo_runs, sharded, shard=(i, 2), progress=False).units_written
                  for i in range(2))
    assert written == 3
    for sub in ("tracks", "scenarios", "maps"):
        a = sorted(p.relative_to(single.path) for p in (single.path / sub).rglob("*.parquet"))
        b = sorted(p.relative_to(sharded.path) for p in (sharded.path / sub).rglob("*.parquet"))
        assert a == b
        for rel in a:
            assert pq.read_table(single.path / rel).equals(pq.read_table(sharded.path / rel))


def _copy_run(sumo_runs, tmp_path, split="train", name="g_train"):
    dst = tmp_path / "in" / split / name
    shutil.copytree(sumo_runs / split / name, dst)
    return tmp_path / "in", dst


def test_broken_rows_are_quarantined_and_counts_add_up(sumo_runs, tmp_path):
    root, run = _copy_run(sumo_runs, tmp_path)
    table = pq.read_table(run / "fcd.parquet")
    n = table.num_rows
    x = table["vehicle_x"].to_numpy().copy()
    x[3] = np.nan
    types = table["vehicle_type"].to_pylist()
    types[5] = "hovercraft"
    table = table.set_column(table.schema.get_field_index("vehicle_x"), "vehicle_x", pa.array(x))
    table = table.set_column(table.schema.get_field_index("vehicle_type"), "vehicle_type", pa.array(types))
    dup = table.slice(10, 1)
    table = pa.concat_tables([table, dup])
    pq.write_table(table, run / "fcd.parquet")
    store = Store(tmp_path / "s")
    s = run_ingest(SumoAdapter(5.0), root, store, progress=False)
    assert s.rows_read == n + 1
    assert s.rows_read == s.rows_written + s.rows_quarantined
    q = store.quarantine_table().to_pylist()
    by_row = {r["row"]: r for r in q}
    assert by_row[3]["field"] == "x" and "non-finite" in by_row[3]["reason"]
    assert by_row[5]["field"] == "agent_type" and "hovercraft" in by_row[5]["reason"]
    assert by_row[n]["reason"] == "duplicate (track, timestep)"
    assert all(r["source_file"].endswith("fcd.parquet") for r in q)
    assert s.quarantine_reasons["duplicate (track, timestep)"] >= 1


def test_missing_column_and_corrupt_file(sumo_runs, tmp_path):
    root, run = _copy_run(sumo_runs, tmp_path)
    table = pq.read_table(run / "fcd.parquet").drop_columns(["vehicle_angle"])
    pq.write_table(table, run / "fcd.parquet")
    _, run2 = _copy_run(sumo_runs, tmp_path, "val", "g_val")
    (run2 / "fcd.parquet").write_bytes((run2 / "fcd.parquet").read_bytes()[:500])  # truncated
    store = Store(tmp_path / "s")
    s = run_ingest(SumoAdapter(5.0), root, store, progress=False)
    assert s.rows_read == table.num_rows and s.rows_quarantined == table.num_rows and s.rows_written == 0
    assert s.files_quarantined == 2
    q = store.quarantine_table()
    reasons = set(q["reason"].to_pylist())
    assert "missing column 'vehicle_angle'" in reasons
    assert any(r.startswith("unreadable Parquet") for r in reasons)


def test_cli_ingest_strict_and_summary(sumo_runs, tmp_path, capsys):
    root, run = _copy_run(sumo_runs, tmp_path)
    store = tmp_path / "s"
    assert main(["--quiet", "ingest", "--source", "sumo", str(root), "--store", str(store), "--scenario-length", "5",
                 "--strict"]) in (0, 3)
    summary = json.loads(next((store / "_summaries").glob("*.json")).read_text())
    assert summary["rows_read"] == summary["rows_written"] + summary["rows_quarantined"]
    t = pq.read_table(run / "fcd.parquet")
    x = t["vehicle_x"].to_numpy().copy()
    x[0] = np.inf
    pq.write_table(t.set_column(t.schema.get_field_index("vehicle_x"), "vehicle_x", pa.array(x)), run / "fcd.parquet")
    code = main(["--quiet", "ingest", "--source", "sumo", str(root), "--store", str(store), "--strict"])
    assert code == 3
    assert "rows quarantined" in capsys.readouterr().out


def test_public_store_api(sumo_store):
    import forecast.data

    store = forecast.data.Store(sumo_store.path)
    info = store.scenarios(split="val")[0]
    assert isinstance(info, forecast.data.ScenarioInfo)
    assert isinstance(store.load_scenario(info.scenario_id), forecast.data.Scenario)


# -- positions: front bumper -> centre ---------------------------------------------------------


def test_fcd_front_bumper_to_centre():
    # SUMO reports a vehicle's front bumper; the store holds its centre, half a length back
    # along the heading. Car (5 m) east, bicycle (1.6 m) north, a 12 m vType west, a person.
    rows = fcd_to_rows(_fcd([(0.0, "car1", 10.0, 0.0, 90.0, "DEFAULT_VEHTYPE", 10.0),
                             (0.0, "b1", 0.0, 10.0, 0.0, "bike_bicycle", 4.0),
                             (0.0, "bus1", 50.0, 5.0, 270.0, "long", 5.0),
                             (0.0, "p1", 5.0, 5.0, 45.0, "DEFAULT_PEDTYPE", 1.5)]),
                       {"bike_bicycle": "bicycle", "long": "bus"}, {"long": 12.0})
    np.testing.assert_allclose(rows.x, [7.5, 0.0, 56.0, 5.0], atol=1e-9)
    np.testing.assert_allclose(rows.y, [0.0, 9.2, 5.0, 5.0], atol=1e-9)


def test_default_lengths_match_the_installed_sumo(tmp_path):
    sumo = pytest.importorskip("sumo")
    import os
    import sys

    sys.path.append(os.path.join(sumo.SUMO_HOME, "tools"))
    import traci

    from forecast.data.sources.sumo import DEFAULT_LENGTH

    routes = tmp_path / "types.rou.xml"
    routes.write_text("<routes>" + "".join(f'<vType id="t_{c}" vClass="{c}"/>' for c in DEFAULT_LENGTH) + "</routes>")
    net = next((Path(sys.executable).parent).glob("sumo"), None)
    assert net is not None
    netfile = tmp_path / "n.net.xml"
    subprocess.run([str(Path(sys.executable).parent / "netgenerate"), "--grid", "--grid.number", "2", "-o", str(netfile)],
                   check=True, capture_output=True)
    traci.start([str(net), "-n", str(netfile), "-a", str(routes), "--no-step-log"], stdout=subprocess.DEVNULL)
    try:
        lengths = {c: traci.vehicletype.getLength(f"t_{c}") for c in DEFAULT_LENGTH}
    finally:
        traci.close()
    assert lengths == DEFAULT_LENGTH


def test_store_positions_are_centres(sumo_runs, sumo_store):
    # The stored car sits 2.5 m behind the FCD's front bumper along its heading.
    t = pq.read_table(sumo_runs / "train" / "g_train" / "fcd.parquet")
    car = t.filter(pa.compute.equal(t["vehicle_type"], "DEFAULT_VEHTYPE")).slice(100, 1).to_pylist()[0]
    table = ds.dataset(sumo_store.tracks_dir, partitioning="hive").to_table(
        filter=(pa.compute.field("track_id") == car["vehicle_id"]) & (pa.compute.field("split") == "train"))
    h = sumo_angle_to_heading(np.array([car["vehicle_angle"]]))[0]
    centre = (car["vehicle_x"] - 2.5 * np.cos(h), car["vehicle_y"] - 2.5 * np.sin(h))
    d = np.hypot(table["x"].to_numpy() - centre[0], table["y"].to_numpy() - centre[1])
    assert d.min() < 1e-9


# -- simulation: no one-step jumps at the source -----------------------------------------------


def test_one_step_jumps_hand_worked():
    # 10 m/s east; at t=0.3 the car is 3 m sideways (an instant lane change): one jump.
    # A second car drifts 0.16 m sideways a step (a 2 s lane change): none.
    t = np.tile(np.arange(6) * 0.1, 2)
    x = np.tile(np.arange(6) * 1.0, 2)
    y = np.r_[0, 0, 0, 3.2, 3.2, 3.2, np.arange(6) * 0.16]
    jumps = one_step_jumps(np.repeat(np.array(["a", "b"]), 6), t, x, y, np.full(12, 10.0))
    assert list(np.flatnonzero(jumps)) == [3]


def _fcd_jumps(table: pa.Table) -> int:
    ids = np.asarray(table["vehicle_id"].to_pylist(), dtype=object)
    return int(one_step_jumps(ids, table["timestep_time"].to_numpy(), table["vehicle_x"].to_numpy(),
                              table["vehicle_y"].to_numpy(), table["vehicle_speed"].to_numpy()).sum())


def test_simulation_has_no_one_step_jumps(sumo_runs):
    # SUMO's defaults give 3 m sideways jumps (instant lane changes), teleports of stuck
    # vehicles and corners in pedestrian paths: 43 such steps in these three tiny runs.
    for fcd in sorted(sumo_runs.rglob("fcd.parquet")):
        assert _fcd_jumps(pq.read_table(fcd)) == 0, fcd


def test_sumo_options_on_the_command_line():
    from forecast.sim.sumo import SumoOptions

    args = SumoOptions().args()
    assert args[args.index("--lanechange.duration") + 1] == "2.0"
    assert "--time-to-teleport.remove" in args
    with pytest.raises(ValueError, match="stuck"):
        SumoOptions(stuck="vanish")


# -- bad input ---------------------------------------------------------------------------------


def _rewrite(run, column, values, typ=None):
    t = pq.read_table(run / "fcd.parquet")
    arr = pa.array(values, typ or pa.string())
    pq.write_table(t.set_column(t.schema.get_field_index(column), column, arr), run / "fcd.parquet")
    return t


def _ingest(root, tmp_path, name="s"):
    store = Store(tmp_path / name)
    return run_ingest(SumoAdapter(5.0), root, store, progress=False), store


def test_null_vehicle_id_is_quarantined_not_track_empty(sumo_runs, tmp_path):
    root, run = _copy_run(sumo_runs, tmp_path)
    ids = pq.read_table(run / "fcd.parquet")["vehicle_id"].to_pylist()
    ids[7] = None
    _rewrite(run, "vehicle_id", ids)
    s, store = _ingest(root, tmp_path)
    assert s.rows_read == s.rows_written + s.rows_quarantined
    q = store.quarantine_table().to_pylist()
    assert [(r["row"], r["field"], r["reason"]) for r in q] == [(7, "track_id", "missing track id")]
    assert "" not in set(store.tracks_dataset().to_table(columns=["track_id"])["track_id"].to_pylist())


def test_ids_with_nul_never_merge(sumo_runs, tmp_path):
    # Two pedestrians 'ped\0A' and 'ped\0B' were once cut to one track 'ped' after validation.
    root, run = _copy_run(sumo_runs, tmp_path)
    ids = np.asarray(pq.read_table(run / "fcd.parquet")["vehicle_id"].to_pylist(), dtype=object)
    peds = sorted({i for i in ids if i.startswith("ped")})[:2]
    renamed = {peds[0]: "ped\x00A", peds[1]: "ped\x00B"}
    ids = np.array([renamed.get(i, i) for i in ids], dtype=object)
    _rewrite(run, "vehicle_id", list(ids))
    s, store = _ingest(root, tmp_path)
    hit = np.isin(ids, list(renamed.values()))
    assert s.rows_quarantined == hit.sum() and s.rows_written == len(ids) - hit.sum()
    q = store.quarantine_table()
    assert sorted(q["row"].to_pylist()) == list(np.flatnonzero(hit))
    assert set(q["reason"].to_pylist()) == {"track id contains a control character"}
    # every other agent is there, each once per (scenario, timestep)
    tracks = store.tracks_dataset().to_table(columns=["scenario_id", "track_id", "timestep"])
    stored = set(tracks["track_id"].to_pylist())
    assert stored == set(ids[~hit]) and not any("\x00" in t or t == "ped" for t in stored)
    keys = tracks.group_by(["scenario_id", "track_id", "timestep"]).aggregate([]).num_rows
    assert keys == tracks.num_rows


def test_megabyte_track_id_is_quarantined_without_blowing_memory(sumo_runs, tmp_path):
    import tracemalloc

    root, run = _copy_run(sumo_runs, tmp_path)
    ids = np.asarray(pq.read_table(run / "fcd.parquet")["vehicle_id"].to_pylist(), dtype=object)
    long_id = "car" + "x" * 1_000_000
    victim = ids == ids[0]
    ids[victim] = long_id
    _rewrite(run, "vehicle_id", list(ids))
    tracemalloc.start()
    try:
        s, store = _ingest(root, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.quarantine_reasons == {"track id longer than 256 characters": int(victim.sum())}
    assert s.rows_read == s.rows_written + s.rows_quarantined
    # one id, not one per distinct name: numpy's str arrays once took 4 B x 1 M x every name
    assert peak < 150e6, peak


def test_reverse_time_order_keeps_every_row(sumo_runs, tmp_path):
    root, run = _copy_run(sumo_runs, tmp_path)
    s_fwd, fwd = _ingest(root, tmp_path, "fwd")
    t = pq.read_table(run / "fcd.parquet")
    pq.write_table(t.take(pa.array(np.arange(t.num_rows)[::-1])), run / "fcd.parquet")
    s_rev, rev = _ingest(root, tmp_path, "rev")
    assert (s_rev.rows_written, s_rev.rows_quarantined) == (s_fwd.rows_written, s_fwd.rows_quarantined)
    cols = ["scenario_id", "track_id", "timestep", "x", "y"]
    a = fwd.tracks_dataset().to_table(columns=cols).sort_by([(c, "ascending") for c in cols[:3]])
    b = rev.tracks_dataset().to_table(columns=cols).sort_by([(c, "ascending") for c in cols[:3]])
    assert a.equals(b)


def _car_row(t: pa.Table, k: int = 3) -> int:
    """The file row of a car mid-track (its k-th row at least 30 rows from its track's start)."""
    ids = np.asarray(t["vehicle_id"].to_pylist(), dtype=object)
    types = np.asarray(t["vehicle_type"].to_pylist(), dtype=object)
    car = next(i for i in ids[types == "DEFAULT_VEHTYPE"] if (ids == i).sum() > 60)
    return int(np.flatnonzero(ids == car)[30 + k])


def test_vehicle_without_angle_is_kept_with_unknown_heading(sumo_runs, tmp_path):
    # The centre comes from the path driven, so a missing angle costs the heading only.
    root, run = _copy_run(sumo_runs, tmp_path)
    t = pq.read_table(run / "fcd.parquet")
    car = _car_row(t)
    angle = t["vehicle_angle"].to_numpy().copy()
    angle[car] = np.nan
    _rewrite(run, "vehicle_angle", angle, pa.float64())
    s, store = _ingest(root, tmp_path)
    assert s.rows_read == t.num_rows == s.rows_written and s.rows_quarantined == 0
    stored = store.tracks_dataset().to_table(filter=pa.compute.field("track_id") == t["vehicle_id"][car].as_py())
    assert np.isnan(stored["heading"].to_numpy()).sum() == 1 and np.isfinite(stored["x"].to_numpy()).all()


def test_one_glitched_row_costs_that_row_only(sumo_runs, tmp_path):
    # A car 100 km away for one step: its neighbours' centres must not be pulled along the glitch.
    root, run = _copy_run(sumo_runs, tmp_path)
    t = pq.read_table(run / "fcd.parquet")
    car = _car_row(t)
    x = t["vehicle_x"].to_numpy().copy()
    x[car] = 1e5
    _rewrite(run, "vehicle_x", x, pa.float64())
    s, store = _ingest(root, tmp_path)
    assert s.rows_quarantined == 1 and s.rows_written == t.num_rows - 1
    [rec] = store.quarantine_table().to_pylist()
    assert (rec["row"], rec["field"]) == (car, "x")


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"network": "g", ', "not valid JSON"),
    ('{"seed": "seven"}', "field 'seed' must be int"),
    ('{"vtypes": {"bike": 3}}', "field 'vtypes.bike' must be a vClass name"),
    ('{"vtype_lengths": {"bike": -1}}', "field 'vtype_lengths.bike' must be a length"),
])
def test_broken_run_json_is_a_clear_error_naming_the_file(sumo_runs, tmp_path, capsys, text, message):
    root, run = _copy_run(sumo_runs, tmp_path)
    (run / "run.json").write_text(text)
    code = main(["--quiet", "ingest", "--source", "sumo", str(root), "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and str(run / "run.json") in err and message in err


@pytest.mark.parametrize("length", ["-5", "0", "nan", "inf", "0.15", "0.05"])
def test_nonsense_scenario_length_is_a_usage_error(sumo_runs, tmp_path, capsys, length):
    root, _ = _copy_run(sumo_runs, tmp_path)
    code = main(["--quiet", "ingest", "--source", "sumo", str(root), "--store", str(tmp_path / "s"),
                 f"--scenario-length={length}"])
    assert code == 2 and "scenario length must be a positive multiple of the 0.1 s" in capsys.readouterr().err
    assert not (tmp_path / "s" / "tracks").exists()


def test_broken_network_and_broken_fcd_keep_both_records(sumo_runs, tmp_path):
    root, run = _copy_run(sumo_runs, tmp_path)
    next(run.glob("*.net.xml")).write_text("<net><edge")
    (run / "fcd.parquet").write_bytes(b"PAR1 not parquet")
    s, store = _ingest(root, tmp_path)
    recs = store.quarantine_table().to_pylist()
    assert {(Path(r["source_file"]).name.split(".")[-2], r["row"], r["field"]) for r in recs} == {
        ("net", -1, "net"), ("fcd", -1, "file")}
    assert s.files_quarantined == 2 and s.rows_read == 0


def test_a_hung_sumo_tool_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    import time

    import forecast.sim.sumo as sumo

    monkeypatch.setattr(sumo, "TOOL_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"sleep 30 did not finish within 0.5 s"):
        sumo._run(["sleep", "30"], tmp_path)
    assert time.monotonic() - started < 10
