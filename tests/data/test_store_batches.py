"""The batched store (schemas 2 and 3): index, row groups, maps once, skip key and output integrity, resumed counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from forecast.data.ingest import run_ingest
from forecast.data.sources.av2 import Av2Adapter
from forecast.data.sources.sumo import SumoAdapter
from forecast.data.store import Store
from tests.data.test_av2 import write_scenario

SIDS = [f"0a1b2c3d-0000-4000-8000-{i:012d}" for i in range(7)]


def _av2_inputs(root: Path) -> Path:
    for sid in SIDS:
        write_scenario(root, split="train", scenario_id=sid)  # every scenario has the same map JSON
    return root


def _content(store: Store) -> dict[str, tuple]:
    """Every scenario's rows, as plain arrays, by id (independent of files and row groups)."""
    out = {}
    for info in store.scenarios():
        s = store.load_scenario(info.scenario_id)
        out[info.scenario_id] = (tuple(s.track_ids), np.nan_to_num(s.xy).round(6).tobytes(), s.present.tobytes())
    return out


def test_batches_index_and_maps_once(tmp_path):
    store = Store(tmp_path / "store")
    summary = run_ingest(Av2Adapter(), _av2_inputs(tmp_path / "in"), store, progress=False, batch_scenarios=3)
    assert summary.units_written == 7 and summary.scenarios_written == 7
    tracks = sorted((store.path / "tracks").rglob("*.parquet"))
    assert len(tracks) == 3  # batches of 3, 3, 1 scenarios
    assert [pq.ParquetFile(p).num_row_groups for p in tracks] == [1, 1, 1]  # up to GROUP_SCENARIOS per group
    infos = store.scenarios()
    assert [i.scenario_id for i in infos] == [f"av2:{s}" for s in SIDS]
    _index_points_at_rows(store, infos)
    maps = sorted((store.path / "maps").rglob("*.parquet"))
    assert [pq.ParquetFile(p).num_row_groups for p in maps] == [1, 1, 1]  # seven identical maps, once per batch
    assert [pq.ParquetFile(p).metadata.num_rows for p in maps] == [infos[0].map_num_rows] * 3
    layers = store.load_map(infos[4].map_id)
    assert set(layers) == {"lane", "lane_centerline", "crosswalk", "drivable_area"}
    assert store.map_table(infos[4].map_id).column("map_id").to_pylist()[0] == infos[4].map_id
    # any Arrow tool reads the directory
    assert ds.dataset(store.path / "tracks", partitioning="hive").count_rows() == summary.rows_written


def _index_points_at_rows(store: Store, infos) -> None:
    """Each scenario's (row group, row offset, rows) holds its rows and only them, and the ranges of a
    file tile its row groups."""
    covered: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for info in infos:
        rg = pq.ParquetFile(store.path / info.tracks_file).read_row_group(info.row_group)
        mine = rg.slice(info.row_offset, info.num_rows)
        assert mine.num_rows == info.num_rows > 0
        assert set(mine.column("scenario_id").to_pylist()) == {info.scenario_id}
        covered.setdefault((info.tracks_file, info.row_group), []).append((info.row_offset, info.num_rows))
    for (rel, g), ranges in covered.items():
        ranges.sort()
        ends = [o + n for o, n in ranges]
        assert ranges[0][0] == 0 and [o for o, _ in ranges[1:]] == ends[:-1]
        assert ends[-1] == pq.ParquetFile(store.path / rel).metadata.row_group(g).num_rows


def test_row_groups_of_several_scenarios(tmp_path, monkeypatch):
    """A row group closes at GROUP_SCENARIOS scenarios; reading, planning and maps are the same as with
    one scenario per row group, and as a schema-2 store (no row offsets) of that layout."""
    import pyarrow as pa

    from forecast.data import batch
    from forecast.features.config import FeatureConfig
    from forecast.features.plans import plan_split

    root = _av2_inputs(tmp_path / "in")
    monkeypatch.setattr(batch, "GROUP_SCENARIOS", 2)
    two = Store(tmp_path / "two")
    run_ingest(Av2Adapter(), root, two, progress=False)
    assert [pq.ParquetFile(p).num_row_groups for p in (two.path / "tracks").rglob("*.parquet")] == [4]  # 2+2+2+1
    _index_points_at_rows(two, two.scenarios())
    monkeypatch.setattr(batch, "GROUP_SCENARIOS", 1)
    one = Store(tmp_path / "one")
    run_ingest(Av2Adapter(), root, one, progress=False)
    # the same store as schema 2 wrote it: one scenario per row group, no offsets in the index
    v2 = Store(tmp_path / "one")
    for p in (v2.path / "scenarios").rglob("*.parquet"):
        t = pq.read_table(p)
        for c in ("row_offset", "map_row_offset", "map_num_rows"):
            t = t.set_column(t.schema.get_field_index(c), c, pa.nulls(t.num_rows, pa.int64()))
        pq.write_table(t, p)
    assert all(i.row_offset is None for i in v2.scenarios())
    assert _content(two) == _content(one) == _content(v2)
    cfg = FeatureConfig()
    plans = [plan_split(s, s.scenarios(), cfg, 10, workers=1) for s in (two, v2)]
    assert len(plans[0]) > 0
    for f in ("scenario", "t0", "offsets", "agents", "scored"):
        assert np.array_equal(getattr(plans[0], f), getattr(plans[1], f)), f
    # a chunk that asks for part of a row group's scenarios plans only those
    part = plan_split(two, two.scenarios()[1:2], cfg, 10, workers=1)
    assert np.array_equal(part.t0, plans[0].t0[plans[0].scenario == 1])
    for s in (two, v2):
        info = s.scenarios()[3]
        assert s.map_table(info.map_id, info.map_where).equals(one.map_table(info.map_id))


def test_decoded_row_groups_follow_a_rewritten_file(tmp_path):
    """The cache of decoded row groups is keyed by the file's size and mtime: a rewrite is read again."""
    import os

    import pyarrow as pa

    store = Store(tmp_path)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    assert store.row_group("t.parquet", 0).column("a").to_pylist() == [1, 2, 3]
    st = path.stat()
    pq.write_table(pa.table({"a": [7, 8, 9]}), path)  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert store.row_group("t.parquet", 0).column("a").to_pylist() == [7, 8, 9]


def test_codes_of_a_dictionary_slice_use_only_its_values():
    """A slice of a row group read as a dictionary carries the group's whole dictionary; its codes and keys
    are those of the values it holds, as for plain strings."""
    import pyarrow as pa

    from forecast.data.scenario import _sorted_codes

    whole = pa.array(["s2", "s1", "s2", "s3", "s1", "s3"]).dictionary_encode()
    part = whole.slice(2, 3)  # s2, s3, s1 of a dictionary [s2, s1, s3]
    keys, code = _sorted_codes(part)
    plain_keys, plain_code = _sorted_codes(pa.array(["s2", "s3", "s1"]))
    assert keys.tolist() == plain_keys.tolist() == ["s1", "s2", "s3"]
    assert code.tolist() == plain_code.tolist() == [1, 2, 0]
    keys, code = _sorted_codes(whole.slice(0, 3))  # s2, s1, s2: s3 unused
    assert keys.tolist() == ["s1", "s2"] and code.tolist() == [1, 0, 1]


def test_batch_size_does_not_change_content(tmp_path):
    root = _av2_inputs(tmp_path / "in")
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    run_ingest(Av2Adapter(), root, a, progress=False, batch_scenarios=2)
    run_ingest(Av2Adapter(), root, b, progress=False)
    assert _content(a) == _content(b)


def test_changed_settings_rewrite_the_unit(sumo_runs, tmp_path):
    store = Store(tmp_path / "s")
    run_ingest(SumoAdapter(10.0), sumo_runs, store, progress=False)
    ten = {i.scenario_id: i.num_timesteps for i in store.scenarios()}
    again = run_ingest(SumoAdapter(5.0), sumo_runs, store, progress=False)
    assert again.units_skipped == 0 and again.units_written == 3
    five = {i.scenario_id: i.num_timesteps for i in store.scenarios()}
    assert max(ten.values()) == 100 and max(five.values()) == 50 and len(five) > len(ten)
    # no scenario of the old cut is left behind
    rows = ds.dataset(store.tracks_dir, partitioning="hive").count_rows()
    assert rows == again.rows_written
    assert len(store.batch_manifests()) == 3


def test_truncated_output_is_noticed_and_redone(tmp_path):
    root = _av2_inputs(tmp_path / "in")
    store = Store(tmp_path / "store")
    first = run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    before = _content(store)
    victim = sorted((store.path / "tracks").rglob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    again = run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    assert again.units_written == 3 and again.units_skipped == 4  # only the damaged batch is redone
    assert _content(store) == before
    assert (again.rows_read, again.rows_written) == (first.rows_read, first.rows_written)
    # a flipped byte (same size) is noticed too
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    third = run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    assert third.units_written == 3 and _content(store) == before


def test_resumed_ingest_counts_the_whole_shard(tmp_path):
    root = _av2_inputs(tmp_path / "in")
    full = run_ingest(Av2Adapter(), root, Store(tmp_path / "full"), progress=False, batch_scenarios=2)
    store = Store(tmp_path / "store")
    run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=2)
    # as after kill -9 before the last two batches committed: their manifests are missing
    for m in store.batch_manifests()[-2:]:
        Path(m["_path"]).unlink()
    resumed = run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=2)
    assert 0 < resumed.units_written < 7 and resumed.units_skipped + resumed.units_written == 7
    for key in ("rows_read", "rows_written", "rows_quarantined", "files_quarantined", "scenarios_total"):
        assert getattr(resumed, key) == getattr(full, key), key
    assert len(store.scenarios()) == 7 and ds.dataset(store.tracks_dir, partitioning="hive").count_rows() == full.rows_written


def test_schema1_manifests_are_replaced(tmp_path):
    """A unit ingested by the old layout (manifest per unit) is rewritten as a batch, not duplicated."""
    root = _av2_inputs(tmp_path / "in")
    store = Store(tmp_path / "store")
    run_ingest(Av2Adapter(), root, store, progress=False)
    m = store.batch_manifests()[0]
    old_out = store.path / "tracks/source=av2/split=train/old-unit.parquet"
    old_out.write_bytes((store.path / next(iter(m["outputs"]))).read_bytes())
    legacy = store.manifest_dir / "av2" / "old-unit.json"
    legacy.write_text(json.dumps({"unit": f"av2/train/{SIDS[0]}", "outputs": [str(old_out.relative_to(store.path))]}))
    again = run_ingest(Av2Adapter(), root, store, progress=False)
    assert not old_out.exists() and not legacy.exists()
    assert again.units_skipped == 7 and len(store.scenarios()) == 7


def _to_schema1(new: Store, old: Store) -> None:
    """Rewrite a batched store in the schema-1 layout: three files and a manifest per unit."""
    import pyarrow as pa

    from forecast.data.store import safe_name

    for m in new.batch_manifests():
        infos = [i for i in new.scenarios() if i.split == m["split"]]
        for u in m["units"]:
            name = safe_name(u["key"])
            mine = [i for i in infos if i.source_file and u["key"].split("/")[-1] in i.scenario_id]
            part = f"source={m['source']}/split={m['split']}/{name}.parquet"
            tracks = pa.concat_tables([pq.ParquetFile(new.path / i.tracks_file).read_row_group(i.row_group)
                                       .slice(i.row_offset, i.num_rows) for i in mine])
            outputs = [f"tracks/{part}", f"scenarios/{part}"]
            (old.path / "tracks" / part).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(tracks, old.path / "tracks" / part)
            keep = ("scenario_id", "map_id", "dt", "num_timesteps", "focal_track_id", "source_file")
            (old.path / "scenarios" / part).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist([{k: getattr(i, k) for k in keep} for i in mine]),
                           old.path / "scenarios" / part)
            for i in mine:
                rel = f"maps/{safe_name(i.map_id)}.parquet"
                (old.path / "maps").mkdir(parents=True, exist_ok=True)
                pq.write_table(new.map_table(i.map_id), old.path / rel)
                outputs.append(rel)
            (old.manifest_dir / m["source"]).mkdir(parents=True, exist_ok=True)
            (old.manifest_dir / m["source"] / f"{name}.json").write_text(json.dumps(
                {"unit": u["key"], "source": m["source"], "split": m["split"], "input_hash": u["input_hash"],
                 "files": u["files"], "outputs": outputs, "counts": u["counts"]}))


def test_compact_converts_a_schema1_store(tmp_path):
    from forecast.cli import main

    root = _av2_inputs(tmp_path / "in")
    new = Store(tmp_path / "new")
    run_ingest(Av2Adapter(), root, new, progress=False)
    old = Store(tmp_path / "old")
    _to_schema1(new, old)
    assert sum(1 for _ in old.path.rglob("*.parquet")) == 21
    legacy = _content(old)  # schema 1 is still readable
    assert legacy == _content(new)
    assert main(["store", "compact", str(old.path), "--batch-scenarios", "4"]) == 0
    assert sorted(p.parent.name for p in old.path.rglob("*.parquet")) == ["source=av2"] * 2 + ["split=train"] * 4
    assert _content(old) == legacy and not old.unit_manifests()
    assert [m["unit"] for m in old.manifests()] == [m["unit"] for m in new.manifests()]
    assert main(["store", "compact", str(old.path)]) == 0  # idempotent
    assert _content(old) == legacy


def _failing_on_call(fn, n: int, exc: BaseException):
    """``fn``, except that its ``n``-th call raises ``exc``."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return fn(*args, **kwargs)

    return wrapped


def test_failure_inside_a_batch_commits_nothing_of_it(tmp_path, monkeypatch):
    root = _av2_inputs(tmp_path / "in")
    store = Store(tmp_path / "store")
    parse = Av2Adapter.parse
    monkeypatch.setattr(Av2Adapter, "parse", _failing_on_call(parse, 5, RuntimeError("killed")))
    try:
        run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    except RuntimeError:
        pass
    # the first batch (3 units) is committed; the open one left no file behind, visible or hidden
    assert [len(m["units"]) for m in store.batch_manifests()] == [3]
    assert len(list((store.path / "tracks").rglob("*.parquet"))) == 1
    assert not [p for p in store.path.rglob(".*") if p.is_file()]
    monkeypatch.setattr(Av2Adapter, "parse", parse)
    again = run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    assert (again.units_skipped, again.units_written) == (3, 4) and len(store.scenarios()) == 7


def test_batch_cut_short_before_its_manifest_is_not_read_twice(tmp_path, monkeypatch):
    """A kill between a batch's files and its manifest (its commit marker) leaves visible files. A rerun
    whose first unit to write is another one (a new input sorted before it) must not keep them."""
    import forecast.data.ingest as ingest
    from forecast.data.batch import BatchWriter

    root = _av2_inputs(tmp_path / "in")
    store = Store(tmp_path / "store")
    # killed as the second batch's manifest is written; KeyboardInterrupt and no abort: as SIGKILL leaves it
    monkeypatch.setattr(ingest, "write_json_atomic", _failing_on_call(ingest.write_json_atomic, 2,
                                                                      KeyboardInterrupt("killed")))
    monkeypatch.setattr(BatchWriter, "abort", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    assert [len(m["units"]) for m in store.batch_manifests()] == [3]
    assert len(store.scenarios_table()) == 6  # the uncommitted batch's scenarios are visible
    monkeypatch.undo()
    write_scenario(root, split="train", scenario_id=SIDS[2] + "5")  # sorts between the two batches' first units
    again = run_ingest(Av2Adapter(), root, store, progress=False, batch_scenarios=3)
    assert (again.units_skipped, again.units_written) == (3, 5)
    ids = store.scenarios_table().column("scenario_id").to_pylist()
    assert len(ids) == len(set(ids)) == 8
    assert not [p for p in store.path.rglob(".*") if p.is_file()]
