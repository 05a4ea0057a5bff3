"""Argoverse 2 adapter: synthetic scenarios written to the published schema, ingested into a store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from forecast.cli import main
from forecast.data.ingest import IngestSummary, run_ingest
from forecast.data.schema import AgentType
from forecast.data.sources.av2 import Av2Adapter
from forecast.data.store import Store

T = 110  # AV2: 11 s at 10 Hz
OBSERVED = 50  # the first 5 s are history
SID = "0a1b2c3d-0000-4000-8000-000000000001"

# (track_id, object_type, speed m/s, heading rad); the first one is the focal track.
DEFAULT_TRACKS = [
    ("focal", "vehicle", 10.0, 0.0),
    ("ped1", "pedestrian", 1.4, np.pi / 2),
    ("cyc1", "cyclist", 5.0, -np.pi / 4),
    ("bus1", "bus", 8.0, np.pi),
    ("st1", "static", 0.0, 0.3),
]

LANE_W, LANE_L = 3.5, 50.0


# -- fixture writers ---------------------------------------------------------------------------


def scenario_table(tracks=DEFAULT_TRACKS, scenario_id: str = SID) -> pa.Table:
    """A scenario table in AV2's published schema: every track present at all 110 steps."""
    cols: dict[str, list] = {k: [] for k in (
        "observed", "track_id", "object_type", "object_category", "timestep", "position_x", "position_y",
        "heading", "velocity_x", "velocity_y")}
    t = np.arange(T)
    for i, (tid, otype, speed, heading) in enumerate(tracks):
        vx, vy = speed * np.cos(heading), speed * np.sin(heading)
        cols["observed"] += list(t < OBSERVED)
        cols["track_id"] += [tid] * T
        cols["object_type"] += [otype] * T
        cols["object_category"] += [3 if i == 0 else 1] * T
        cols["timestep"] += list(t)
        cols["position_x"] += list(100.0 + 20 * i + vx * t * 0.1)
        cols["position_y"] += list(-50.0 + vy * t * 0.1)
        cols["heading"] += [heading] * T
        cols["velocity_x"] += [vx] * T
        cols["velocity_y"] += [vy] * T
    n = len(cols["timestep"])
    return pa.table(
        {
            "observed": pa.array(cols["observed"], pa.bool_()),
            "track_id": pa.array(cols["track_id"], pa.string()),
            "object_type": pa.array(cols["object_type"], pa.string()),
            "object_category": pa.array(cols["object_category"], pa.int64()),
            "timestep": pa.array(cols["timestep"], pa.int64()),
            "position_x": pa.array(cols["position_x"], pa.float64()),
            "position_y": pa.array(cols["position_y"], pa.float64()),
            "heading": pa.array(cols["heading"], pa.float64()),
            "velocity_x": pa.array(cols["velocity_x"], pa.float64()),
            "velocity_y": pa.array(cols["velocity_y"], pa.float64()),
            "scenario_id": pa.array([scenario_id] * n, pa.string()),
            "start_timestamp": pa.array([1_600_000_000_000_000_000] * n, pa.int64()),
            "end_timestamp": pa.array([1_600_000_011_000_000_000] * n, pa.int64()),
            "num_timestamps": pa.array([T] * n, pa.int64()),
            "focal_track_id": pa.array([tracks[0][0]] * n, pa.string()),
            "city": pa.array(["pittsburgh"] * n, pa.string()),
        }
    )


def _pts(xy) -> list[dict]:
    return [{"x": float(x), "y": float(y), "z": 0.0} for x, y in xy]


def map_json() -> dict:
    """Two lanes (one with a centerline), one crosswalk, one drivable area."""
    xs = np.linspace(0.0, LANE_L, 3)
    return {
        "lane_segments": {
            "11": {  # no centerline, equal boundary counts -> mean of the boundaries
                "id": 11, "is_intersection": False, "lane_type": "VEHICLE",
                "left_lane_boundary": _pts(zip(xs, np.full(3, LANE_W / 2), strict=True)),
                "right_lane_boundary": _pts(zip(xs, np.full(3, -LANE_W / 2), strict=True)),
                "left_lane_mark_type": "DASHED_WHITE", "right_lane_mark_type": "SOLID_WHITE",
                "predecessors": [], "successors": [12], "left_neighbor_id": None, "right_neighbor_id": None,
            },
            "12": {  # given centerline, unequal boundary counts
                "id": 12, "is_intersection": True, "lane_type": "BIKE",
                "centerline": _pts([(LANE_L, 0.0), (LANE_L + 10, 0.0)]),
                "left_lane_boundary": _pts([(LANE_L, 1.0), (LANE_L + 5, 1.0), (LANE_L + 10, 1.0)]),
                "right_lane_boundary": _pts([(LANE_L, -1.0), (LANE_L + 10, -1.0)]),
                "predecessors": [11], "successors": [],
            },
        },
        "pedestrian_crossings": {
            "21": {"id": 21, "edge1": _pts([(10.0, -5.0), (10.0, 5.0)]),
                   "edge2": _pts([(14.0, -5.0), (14.0, 5.0)])},
        },
        "drivable_areas": {
            "31": {"id": 31, "area_boundary": _pts([(0, -10), (80, -10), (80, 10), (0, 10)])},
        },
    }


def write_scenario(
    root: Path,
    table: pa.Table | None = None,
    split: str | None = "val",
    scenario_id: str = SID,
    map_data: dict | str | None = "default",
    row_group_size: int | None = None,
) -> Path:
    """Write ``<root>/<split>/<id>/scenario_<id>.parquet`` (+ map JSON); returns the parquet path."""
    folder = (root / split if split else root) / scenario_id
    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / f"scenario_{scenario_id}.parquet"
    table = scenario_table(scenario_id=scenario_id) if table is None else table
    pq.write_table(table, parquet, row_group_size=row_group_size)
    if map_data is not None:
        text = json.dumps(map_json()) if map_data == "default" else (
            map_data if isinstance(map_data, str) else json.dumps(map_data))
        (folder / f"log_map_archive_{scenario_id}____PIT_city_1234.json").write_text(text)
    return parquet


def ingest(root: Path, tmp_path: Path, split: str | None = None) -> tuple[IngestSummary, Store]:
    store = Store(tmp_path / "store")
    summary = run_ingest(Av2Adapter(), root, store, split=split, progress=False)
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined
    return summary, store


def tracks_of(store: Store) -> pa.Table:
    return store.tracks_dataset().to_table()


def quarantine_rows(store: Store) -> list[dict]:
    q = store.quarantine_table()
    return sorted(q.to_pylist(), key=lambda r: (r["source_file"], r["row"])) if q.num_rows else []


# -- a clean scenario --------------------------------------------------------------------------


def test_clean_scenario_roundtrip(tmp_path):
    write_scenario(tmp_path / "in")
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_read == summary.rows_written == len(DEFAULT_TRACKS) * T
    assert summary.rows_quarantined == 0 and summary.files_quarantined == 0 and summary.scenarios_written == 1
    [info] = store.scenarios()
    assert info.scenario_id == f"av2:{SID}" and info.source == "av2" and info.split == "val"
    assert info.focal_track_id == "focal" and info.map_id == f"av2:{SID}"
    assert info.dt == pytest.approx(0.1) and info.num_timesteps == T
    scen = store.load_scenario(info.scenario_id)
    assert scen.xy.shape == (len(DEFAULT_TRACKS), T, 2) and scen.present.all()
    idx = {tid: i for i, tid in enumerate(scen.track_ids)}
    for tid, otype, speed, heading in DEFAULT_TRACKS:
        a = idx[tid]
        assert scen.source_type[a] == otype
        np.testing.assert_allclose(scen.heading[a], heading)
        v = np.tile([speed * np.cos(heading), speed * np.sin(heading)], (T, 1))
        np.testing.assert_allclose(scen.velocity[a], v)
        # observed flag kept: history is the first 50 steps
        np.testing.assert_array_equal(scen.observed[a], np.arange(T) < OBSERVED)
    # positions advance by v * 0.1 s per step
    np.testing.assert_allclose(np.diff(scen.xy[idx["focal"], :, 0]), 1.0)
    assert not store.quarantine_table().num_rows


@pytest.mark.parametrize(
    ("object_type", "expected"),
    [
        ("vehicle", AgentType.VEHICLE),
        ("bus", AgentType.VEHICLE),
        ("pedestrian", AgentType.PEDESTRIAN),
        ("cyclist", AgentType.CYCLIST),
        ("motorcyclist", AgentType.CYCLIST),
        ("static", AgentType.OTHER),
        ("background", AgentType.OTHER),
        ("construction", AgentType.OTHER),
        ("riderless_bicycle", AgentType.OTHER),
        ("unknown", AgentType.OTHER),
    ],
)
def test_object_type_mapping(tmp_path, object_type, expected):
    tracks = [("focal", "vehicle", 5.0, 0.0), ("other", object_type, 1.0, 1.0)]
    write_scenario(tmp_path / "in", scenario_table(tracks), map_data=None)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_quarantined == 0
    scen = store.load_scenario(f"av2:{SID}")
    a = list(scen.track_ids).index("other")
    assert scen.agent_type[a] == expected and scen.source_type[a] == object_type


def test_multiple_row_groups_share_track_codes(tmp_path):
    # Row groups become Arrow chunks; track codes must be global, not per chunk.
    write_scenario(tmp_path / "in", row_group_size=97, map_data=None)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_quarantined == 0
    tracks = tracks_of(store)
    counts = tracks.group_by("track_id").aggregate([("timestep", "count")]).to_pylist()
    assert {r["track_id"]: r["timestep_count"] for r in counts} == {t[0]: T for t in DEFAULT_TRACKS}


def test_rerun_skips_unchanged_scenario(tmp_path):
    write_scenario(tmp_path / "in")
    ingest(tmp_path / "in", tmp_path)
    again, _ = ingest(tmp_path / "in", tmp_path)
    assert again.units_skipped == 1 and again.units_written == 0


# -- discovery ---------------------------------------------------------------------------------


def test_discover_splits_from_folders(tmp_path):
    root = tmp_path / "in"
    for i, split in enumerate(("train", "val", "test")):
        write_scenario(root, split=split, scenario_id=f"s{i}")
    units = Av2Adapter().discover(root, None)
    assert sorted(u.key for u in units) == ["av2/test/s2", "av2/train/s0", "av2/val/s1"]
    for u in units:
        assert [p.name for p in u.files] == [f"scenario_{u.key.split('/')[-1]}.parquet",
                                             f"log_map_archive_{u.key.split('/')[-1]}____PIT_city_1234.json"]
    # the split folder may be the root itself
    assert [u.key for u in Av2Adapter().discover(root / "val", None)] == ["av2/val/s1"]
    # --split wins over the folder
    assert {u.split for u in Av2Adapter().discover(root, "test")} == {"test"}


def test_discover_without_split_names_the_file(tmp_path):
    parquet = write_scenario(tmp_path / "in", split=None)
    with pytest.raises(ValueError, match=parquet.name):
        Av2Adapter().discover(tmp_path / "in", None)
    assert [u.split for u in Av2Adapter().discover(tmp_path / "in", "train")] == ["train"]


def test_discover_rejects_same_scenario_twice_in_a_split(tmp_path):
    write_scenario(tmp_path / "in" / "a")
    write_scenario(tmp_path / "in" / "b")
    with pytest.raises(ValueError, match="twice in split 'val'"):
        Av2Adapter().discover(tmp_path / "in", None)


def test_discover_without_map_lists_parquet_only(tmp_path):
    write_scenario(tmp_path / "in", map_data=None)
    [unit] = Av2Adapter().discover(tmp_path / "in", None)
    assert len(unit.files) == 1
    _, store = ingest(tmp_path / "in", tmp_path)
    assert store.scenarios()[0].map_id is None and store.map_ids() == []


# -- map ---------------------------------------------------------------------------------------


def test_map_layers_and_geometry(tmp_path):
    write_scenario(tmp_path / "in")
    _, store = ingest(tmp_path / "in", tmp_path)
    layers = store.load_map(f"av2:{SID}")
    assert sorted(layers) == ["crosswalk", "drivable_area", "lane", "lane_centerline"]
    table = store.map_table(f"av2:{SID}")
    by = {(r["layer"], r["feature_id"]): r for r in table.to_pylist()}
    assert by[("lane", "11")]["allowed"] == "passenger" and by[("lane", "12")]["allowed"] == "bicycle"
    assert by[("crosswalk", "21")]["allowed"] == "pedestrian"
    assert all(r["speed_limit"] is None for r in by.values())

    lane11, lane12 = layers["lane"]
    assert lane11.is_valid and lane11.area == pytest.approx(LANE_L * LANE_W)
    assert lane12.area == pytest.approx(10.0 * 2.0)
    center11, center12 = layers["lane_centerline"]
    # mean of the boundaries: along y = 0, full lane length
    assert center11.length == pytest.approx(LANE_L)
    np.testing.assert_allclose(np.asarray(center11.coords)[:, 1], 0.0)
    assert list(center12.coords) == [(LANE_L, 0.0), (LANE_L + 10, 0.0)]
    [crosswalk] = layers["crosswalk"]
    assert crosswalk.is_valid and crosswalk.area == pytest.approx(4.0 * 10.0)
    [area] = layers["drivable_area"]
    assert area.area == pytest.approx(80.0 * 20.0)


def test_centerline_from_boundaries_with_unequal_point_counts(tmp_path):
    # Lane 12's boundaries have 3 and 2 points: without a centerline in the archive, the store
    # still gets one, resampled by arc length as av2-api does (10 points, y = 0 midway).
    data = map_json()
    del data["lane_segments"]["12"]["centerline"]
    write_scenario(tmp_path / "in", map_data=data)
    _, store = ingest(tmp_path / "in", tmp_path)
    table = store.map_table(f"av2:{SID}").filter(pa.compute.field("layer") == "lane_centerline")
    assert table["feature_id"].to_pylist() == ["11", "12"]
    center12 = shapely.from_wkb(table["geometry"][1].as_py())
    np.testing.assert_allclose(np.asarray(center12.coords), np.c_[np.linspace(LANE_L, LANE_L + 10, 10), np.zeros(10)],
                               atol=1e-12)


def test_broken_map_keeps_tracks(tmp_path):
    write_scenario(tmp_path / "in", map_data='{"lane_segments": {"1": {"left_lane_bou')
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_written == len(DEFAULT_TRACKS) * T and summary.rows_quarantined == 0
    assert summary.files_quarantined == 1
    [info] = store.scenarios()
    assert info.map_id is None and store.map_ids() == []
    [rec] = quarantine_rows(store)
    assert rec["source_file"].endswith(".json") and rec["row"] == -1 and rec["field"] == "map"
    assert rec["reason"].startswith("unreadable map JSON")


def test_broken_map_and_broken_parquet_keep_both_records(tmp_path):
    parquet = write_scenario(tmp_path / "in", map_data="not json")
    parquet.write_bytes(parquet.read_bytes()[:200])
    summary, store = ingest(tmp_path / "in", tmp_path)
    recs = quarantine_rows(store)
    assert {(Path(r["source_file"]).suffix, r["row"], r["field"]) for r in recs} == {
        (".json", -1, "map"), (".parquet", -1, "file")}
    assert summary.rows_read == 0 and summary.files_quarantined == 2  # one per faulty file


# -- quarantine --------------------------------------------------------------------------------


def _row_of(table: pa.Table, track_id: str, timestep: int) -> int:
    tid = np.asarray(table["track_id"].to_pylist())
    return int(np.flatnonzero((tid == track_id) & (table["timestep"].to_numpy() == timestep))[0])


def test_nan_position_row_quarantined(tmp_path):
    table = scenario_table()
    row = _row_of(table, "ped1", 30)
    x = table["position_x"].to_numpy().copy()
    x[row] = np.nan
    table = table.set_column(table.schema.get_field_index("position_x"), "position_x", pa.array(x))
    parquet = write_scenario(tmp_path / "in", table)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_quarantined == 1 and summary.rows_written == table.num_rows - 1
    [rec] = quarantine_rows(store)
    assert rec == {"source_file": str(parquet), "row": row, "field": "x", "reason": "non-finite position",
                   "source": "av2"}
    scen = store.load_scenario(f"av2:{SID}")
    assert not scen.present[list(scen.track_ids).index("ped1"), 30]


def test_duplicate_track_timestep_quarantined(tmp_path):
    table = scenario_table()
    dup = table.slice(_row_of(table, "cyc1", 7), 1)
    table = pa.concat_tables([table, dup])
    parquet = write_scenario(tmp_path / "in", table)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_read == table.num_rows and summary.rows_quarantined == 1
    [rec] = quarantine_rows(store)
    assert (rec["source_file"], rec["row"], rec["field"], rec["reason"]) == (
        str(parquet), table.num_rows - 1, "timestep", "duplicate (track, timestep)")


def test_unknown_object_type_quarantined(tmp_path):
    tracks = [*DEFAULT_TRACKS, ("ufo1", "spaceship", 1.0, 0.0)]
    table = scenario_table(tracks)
    parquet = write_scenario(tmp_path / "in", table)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_quarantined == T and summary.rows_written == len(DEFAULT_TRACKS) * T
    recs = quarantine_rows(store)
    ufo_rows = np.flatnonzero(np.asarray(table["track_id"].to_pylist()) == "ufo1")
    assert [r["row"] for r in recs] == list(ufo_rows)
    assert {(r["source_file"], r["field"], r["reason"]) for r in recs} == {
        (str(parquet), "agent_type", "unknown agent type 'spaceship'")}
    assert "ufo1" not in set(tracks_of(store)["track_id"].to_pylist())


@pytest.mark.parametrize(
    ("column", "change", "reason"),
    [
        ("position_y", "drop", "missing column 'position_y'"),
        ("observed", "drop", "missing column 'observed'"),
        ("timestep", pa.string(), "column 'timestep' has type string, expected integer"),
        ("heading", pa.string(), "column 'heading' has type string, expected number"),
        ("track_id", "numbers", "column 'track_id' has type int64, expected string"),
    ],
)
def test_missing_or_mistyped_column_quarantines_file(tmp_path, column, change, reason):
    table = scenario_table()
    if change == "drop":
        table = table.drop_columns([column])
    elif change == "numbers":  # a string column read as a dictionary must still be typed
        i = table.schema.get_field_index(column)
        table = table.set_column(i, column, pa.array(np.arange(table.num_rows)))
    else:
        i = table.schema.get_field_index(column)
        table = table.set_column(i, column, table[column].cast(change))
    parquet = write_scenario(tmp_path / "in", table)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_read == summary.rows_quarantined == table.num_rows and summary.rows_written == 0
    assert summary.files_quarantined == 1
    assert store.scenarios() == []
    recs = quarantine_rows(store)
    assert [r["row"] for r in recs] == list(range(table.num_rows))
    assert {(r["source_file"], r["field"], r["reason"]) for r in recs} == {(str(parquet), column, reason)}


def test_null_track_id_quarantines_that_row_only(tmp_path):
    # One row without a track id is that row's fault: the other rows are valid and kept,
    # and the row never becomes a track "".
    table = scenario_table()
    ids = table["track_id"].to_pylist()
    ids[5] = None
    table = table.set_column(table.schema.get_field_index("track_id"), "track_id", pa.array(ids, pa.string()))
    parquet = write_scenario(tmp_path / "in", table)
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_quarantined == 1 and summary.rows_written == table.num_rows - 1
    [rec] = quarantine_rows(store)
    assert (rec["source_file"], rec["row"], rec["field"], rec["reason"]) == (str(parquet), 5, "track_id",
                                                                             "missing track id")
    assert "" not in set(tracks_of(store)["track_id"].to_pylist())


def test_truncated_parquet_quarantined_whole_file(tmp_path):
    parquet = write_scenario(tmp_path / "in")
    data = parquet.read_bytes()
    parquet.write_bytes(data[: len(data) // 2])
    summary, store = ingest(tmp_path / "in", tmp_path)
    assert summary.rows_read == summary.rows_written == summary.rows_quarantined == 0
    assert summary.files_quarantined == 1 and store.scenarios() == []
    [rec] = quarantine_rows(store)
    assert (rec["source_file"], rec["row"], rec["field"]) == (str(parquet), -1, "file")
    assert rec["reason"].startswith("unreadable Parquet")
    # the map of the scenario is still read
    assert store.map_ids() == [f"av2:{SID}"]


def test_counts_add_up_over_mixed_inputs(tmp_path):
    root = tmp_path / "in"
    write_scenario(root, scenario_id="good")
    bad = scenario_table(scenario_id="bad")
    x = bad["position_x"].to_numpy().copy()
    x[[3, 200]] = np.nan
    write_scenario(root, bad.set_column(bad.schema.get_field_index("position_x"), "position_x", pa.array(x)),
                   scenario_id="bad")
    nocols = scenario_table(scenario_id="nocols").drop_columns(["velocity_x"])
    write_scenario(root, nocols, scenario_id="nocols")
    summary, store = ingest(root, tmp_path)
    n = len(DEFAULT_TRACKS) * T
    assert summary.rows_read == 3 * n
    assert summary.rows_quarantined == 2 + n and summary.rows_written == 2 * n - 2
    assert summary.quarantine_reasons == {"non-finite position": 2, "missing column 'velocity_x'": n}
    assert store.quarantine_table().num_rows == 2 + n


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path, capsys):
    root, store = tmp_path / "in", tmp_path / "store"
    write_scenario(root)
    assert main(["--quiet", "ingest", "--source", "av2", str(root), "--store", str(store)]) == 0
    assert Store(store).scenarios()[0].scenario_id == f"av2:{SID}"
    summary = json.loads((store / "_summaries" / "ingest-av2-shard0of1.json").read_text())
    assert summary["rows_written"] == len(DEFAULT_TRACKS) * T

    broken = tmp_path / "broken"
    parquet = write_scenario(broken)
    parquet.write_bytes(b"PAR1 this is not a parquet file")
    args = ["--quiet", "ingest", "--source", "av2", str(broken), "--store", str(tmp_path / "store2")]
    assert main(args) == 0
    assert main([*args, "--strict"]) == 3
    # no split folder and no --split: a usage error naming the file
    nosplit = tmp_path / "nosplit"
    write_scenario(nosplit, split=None)
    assert main(["--quiet", "ingest", "--source", "av2", str(nosplit), "--store", str(tmp_path / "s3")]) == 2
    assert "scenario_" in capsys.readouterr().err
