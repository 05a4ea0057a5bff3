from __future__ import annotations

import json
import shutil

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
    assert set(table["agent_type"].to_pylist()) == {"vehicle", "pedestrian", "cyclist"}
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
