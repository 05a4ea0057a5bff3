"""The tag table beside the store: written once, idempotent, readable by Arrow, joined back by key."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from forecast.scenarios.table import read_meta, tag_lookup, tag_store
from forecast.scenarios.tags import TAGS


def test_tag_store_writes_a_parquet_table_once(sumo_store, tmp_path):
    out = tmp_path / "tags.parquet"
    path = tag_store(sumo_store, splits=["test"], out=out)
    assert path == out
    table = pq.read_table(path)
    assert {"scenario_id", "split", "track_id", "t0", "agent_type", *TAGS} <= set(table.column_names)
    cols = table.to_pydict()
    assert table.num_rows > 0 and set(cols["split"]) == {"test"}
    assert all(any(cols[t][r] for t in TAGS) for r in range(table.num_rows))  # only tagged agent-steps have rows
    meta = read_meta(path)
    assert meta["counts"] == {t: int(sum(cols[t])) for t in TAGS}
    assert meta["agent_steps"] >= table.num_rows
    mtime = path.stat().st_mtime_ns
    tag_store(sumo_store, splits=["test"], out=out)  # unchanged store and settings: nothing rewritten
    assert path.stat().st_mtime_ns == mtime
    row = {k: v[0] for k, v in cols.items()}
    hit = tag_lookup(table, np.array([row["scenario_id"], "nope"]), np.array([row["track_id"], "x"]),
                     np.array([row["t0"], 0]))
    assert [bool(hit[t][0]) for t in TAGS] == [bool(row[t]) for t in TAGS]
    assert not any(hit[t][1] for t in TAGS)


def test_cli_tag(sumo_store, tmp_path, capsys):
    from forecast.cli import main

    out = tmp_path / "t.parquet"
    assert main(["tag", "--store", str(sumo_store.path), "--split", "test", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "agent-steps" in text and "near_miss" in text
    assert main(["tag", "--store", str(tmp_path / "none")]) == 2


def test_cli_tag_quiet_prints_no_progress(sumo_store, tmp_path, capsys):
    from forecast.cli import main

    out = tmp_path / "t.parquet"
    assert main(["tag", "--store", str(sumo_store.path), "--split", "test", "--out", str(out), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert "agent-steps" in quiet.out and "tagged" not in quiet.err
    out.unlink()
    assert main(["tag", "--store", str(sumo_store.path), "--split", "test", "--out", str(out)]) == 0
    assert "tagged" in capsys.readouterr().err
