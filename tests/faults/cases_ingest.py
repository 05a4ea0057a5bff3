"""Ingest faults: malformed fields, lines and files (ETH/UCY text, SUMO Parquet) and bad arguments
(damaged stores and reruns: ``cases_store``). Every input row must end in the store or in quarantine
with its reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.faults.harness import (
    CLEAR,
    LOST,
    OK,
    QUARANTINED,
    TRACEBACK,
    UNCLEAR,
    WRONG,
    Case,
    Env,
    Result,
    expect_cli,
)

PEDS, FRAMES = 3, 20
ETH_ROWS = PEDS * FRAMES
BAD_ROW = 10  # frame 3, pedestrian 2: inside a track


def eth_lines() -> list[str]:
    """A clean ETH/UCY file: 3 pedestrians over 20 frames (step 10), rows by frame then pedestrian."""
    lines = []
    for f in range(FRAMES):
        for i in range(PEDS):
            lines.append(f"{f * 10:.1f} {i + 1:.1f} {i * 5.0 + 0.5 * f:.3f} {2.0 * i - 0.1 * f:.3f}")
    return lines


def _store_rows(store) -> int:
    return store.tracks_dataset().count_rows() if store.tracks_dir.is_dir() else 0


def judge_ingest(env: Env, adapter, root: Path, expect_written: int, bad: dict[int, set[str] | None],
                 source_file: Path | None = None, whole_file: bool = False, split: str | None = None) -> Result:
    """Ingest ``root``; ``bad`` maps file rows that must be quarantined to the field names accepted for them."""
    from forecast.data.ingest import run_ingest
    from forecast.data.store import Store

    store = Store(env.tmp / "store")
    try:
        summary = run_ingest(adapter, root, store, progress=False, split=split)
    except Exception as exc:
        return Result(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
    if summary.rows_read != summary.rows_written + summary.rows_quarantined:
        return Result(WRONG, f"counts do not add up: {summary.to_dict()}")
    written = _store_rows(store)
    if written != summary.rows_written:
        return Result(WRONG, f"store has {written} rows, summary says {summary.rows_written}")
    q = store.quarantine_table()
    rows = q.to_pylist() if q.num_rows else []
    if whole_file:
        hit = [r for r in rows if source_file is None or Path(r["source_file"]) == source_file]
        if written:
            return Result(WRONG, f"{written} rows stored from a file that should be quarantined whole")
        if not hit:
            return Result(WRONG, "nothing stored and nothing quarantined: the file vanished without a word")
        return Result(QUARANTINED, f"{hit[0]['field']}: {hit[0]['reason'][:150]}")
    if written < expect_written:
        lost = [f"row {r['row']} {r['field']}: {r['reason'][:60]}" for r in rows if r["row"] not in bad][:3]
        return Result(LOST, f"{expect_written - written} valid rows lost ({written} of {expect_written}); {lost}")
    if written > expect_written:
        return Result(WRONG, f"{written - expect_written} bad rows stored ({written} instead of {expect_written})")
    for row, fields in bad.items():
        match = [r for r in rows if r["row"] == row and (source_file is None or Path(r["source_file"]) == source_file)]
        if not match:
            return Result(WRONG, f"row {row} is neither stored nor quarantined")
        if fields is not None and match[0]["field"] not in fields:  # kept out of the store, but misnamed
            return Result(UNCLEAR, f"row {row} quarantined under field {match[0]['field']!r} "
                                   f"({match[0]['reason'][:80]}), expected {sorted(fields)}")
        if not match[0]["reason"]:
            return Result(WRONG, f"row {row} quarantined without a reason")
    if bad:
        r = next(r for r in rows if r["row"] in bad)
        return Result(QUARANTINED, f"row {r['row']} {r['field']}: {r['reason'][:150]}")
    return Result(OK, f"{written} rows stored, {len(rows)} quarantined")


# --- ETH/UCY text ----------------------------------------------------------------------------------------

def _eth(text: str | bytes, expect_written: int, bad: dict[int, set[str] | None], whole_file: bool = False):
    def run(env: Env) -> Result:
        from forecast.data.sources.eth_ucy import EthUcyAdapter

        path = env.tmp / "in" / "scene" / "train" / "f.txt"
        path.parent.mkdir(parents=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return judge_ingest(env, EthUcyAdapter(), env.tmp / "in", expect_written, bad, path, whole_file)

    return run


FIELD_ALIASES = {0: {"frame", "time", "timestep"}, 1: {"pedestrian_id", "track_id", "id"}, 2: {"x"}, 3: {"y"}}
BAD_VALUES = {"word": "abc", "nan": "nan", "inf": "inf", "neg_inf": "-inf", "overflow": "1e400", "hex": "0x1A",
              "comma_decimal": "1,5", "double_sign": "--1", "lone_e": "1e", "dot": ".", "plus": "+",
              "null": "null"}
FIELD_NAMES = ("frame", "pedestrian_id", "x", "y")


def _eth_bad_field(col: int, value: str):
    lines = eth_lines()
    parts = lines[BAD_ROW].split()
    parts[col] = value
    lines[BAD_ROW] = " ".join(parts)
    return _eth("\n".join(lines) + "\n", ETH_ROWS - 1, {BAD_ROW: FIELD_ALIASES[col] | {"line"}})


def _eth_line_cases() -> list[Case]:
    lines = eth_lines()
    out = []

    def with_line(i, new):
        ls = list(lines)
        ls[i] = new
        return "\n".join(ls) + "\n"

    def add(name, run, owner="reliab"):
        out.append(Case("ingest", f"eth/{name}", run, owner=owner))

    parts = lines[BAD_ROW].split()
    add("three_fields", _eth(with_line(BAD_ROW, " ".join(parts[:3])), ETH_ROWS - 1, {BAD_ROW: {"line"}}))
    add("five_fields", _eth(with_line(BAD_ROW, " ".join(parts + ["7"])), ETH_ROWS - 1, {BAD_ROW: {"line"}}))
    add("one_field", _eth(with_line(BAD_ROW, "garbage"), ETH_ROWS - 1, {BAD_ROW: {"line"}}))
    add("tab_separated", _eth("\n".join(x.replace(" ", "\t") for x in lines), ETH_ROWS, {}))
    add("crlf", _eth("\r\n".join(lines) + "\r\n", ETH_ROWS, {}))
    add("blank_lines", _eth("\n\n".join(lines) + "\n\n", ETH_ROWS, {}))
    add("trailing_spaces", _eth("\n".join(x + "   " for x in lines), ETH_ROWS, {}))
    add("no_final_newline", _eth("\n".join(lines), ETH_ROWS, {}))
    add("utf8_bom", _eth("\ufeff" + "\n".join(lines), ETH_ROWS, {}))
    add("comma_separated", _eth("\n".join(x.replace(" ", ",") for x in lines), 0,
                                {i: {"line"} for i in range(ETH_ROWS)}))
    add("empty_file", _eth("", 0, {}))
    add("only_blank", _eth("\n\n   \n", 0, {}))
    add("binary_garbage", _eth(bytes(range(256)) * 8, 0, {}, whole_file=True))
    add("latin1", _eth(("\n".join(lines) + "\n# caf\xe9\n").encode("latin-1"), 0, {}, whole_file=True))
    cut = " ".join(lines[-1].split()[:2])  # a file cut short in its last line: two of four fields left
    add("truncated_last_line", _eth("\n".join(lines[:-1] + [cut]), ETH_ROWS - 1, {ETH_ROWS - 1: {"line"}}))
    add("single_row", _eth(lines[0] + "\n", 1, {}))
    add("negative_frames", _eth("\n".join(f"{float(x.split()[0]) - 500:.1f} " + " ".join(x.split()[1:])
                                          for x in lines), ETH_ROWS, {}))
    add("far_away_world", _eth("\n".join(" ".join(x.split()[:2] + [f"{float(x.split()[2]) + 1e6:.3f}",
                                                                    x.split()[3]]) for x in lines), ETH_ROWS, {}))
    dup = list(lines) + [lines[BAD_ROW]]
    add("exact_duplicate_row", _eth("\n".join(dup), ETH_ROWS, {ETH_ROWS: None}))
    conflict = list(lines) + [" ".join(parts[:2] + ["99.0", "99.0"])]
    add("conflicting_duplicate", _eth("\n".join(conflict), ETH_ROWS, {ETH_ROWS: None}))
    jump = with_line(BAD_ROW, " ".join(parts[:2] + [f"{float(parts[2]) + 500:.3f}", parts[3]]))
    add("teleport", _eth(jump, ETH_ROWS - 1, {BAD_ROW: None}), owner="data")
    off = with_line(BAD_ROW, " ".join([f"{float(parts[0]) + 3:.1f}"] + parts[1:]))
    add("off_grid_frame", _eth(off, ETH_ROWS - 1, {BAD_ROW: None}))
    add("reversed_file", _eth("\n".join(reversed(lines)), ETH_ROWS, {}), owner="data")
    rng = np.random.default_rng(0)
    add("shuffled_rows", _eth("\n".join(np.array(lines)[rng.permutation(ETH_ROWS)]), ETH_ROWS, {}), owner="data")
    moved = list(lines)
    moved.append(moved.pop(4))  # one row written late: order is not validity
    add("one_row_late", _eth("\n".join(moved), ETH_ROWS, {}), owner="data")
    huge = with_line(BAD_ROW, " ".join([parts[0], "1" * 1_000_000, *parts[2:]]))
    add("megabyte_id", _eth(huge, ETH_ROWS - 1, {BAD_ROW: {"pedestrian_id", "line"}}), owner="data")
    add("fractional_id", _eth(with_line(BAD_ROW, " ".join([parts[0], "2.5", *parts[2:]])), ETH_ROWS, {}))
    return out


# --- SUMO Parquet --------------------------------------------------------------------------------------

SUMO_BAD_ROW = 100


def _sumo_run(env: Env) -> Path:
    """A copy of the first run whose row ``SUMO_BAD_ROW`` is a car's, so that the faults go through the
    centre conversion of vehicles (in a run where the signals' stop walls fill the first steps, it is a wall's)."""
    import pyarrow.parquet as pq

    src = next(f.parent for f in sorted(env.sumo_runs.rglob("fcd.parquet"))
               if pq.read_table(f, columns=["vehicle_type"]).column(0)[SUMO_BAD_ROW].as_py() == "DEFAULT_VEHTYPE")
    dst = env.tmp / "in" / src.parent.name / src.name
    shutil.copytree(src, dst)
    return dst


def _sumo_baseline(env: Env) -> dict:
    if "sumo_baseline" not in env.shared:
        from forecast.data.ingest import run_ingest
        from forecast.data.sources.sumo import SumoAdapter
        from forecast.data.store import Store

        run = _sumo_run(env)
        s = run_ingest(SumoAdapter(scenario_length_s=5.0), run.parent.parent, Store(env.tmp / "baseline"),
                       progress=False)
        q = Store(env.tmp / "baseline").quarantine_table()
        env.shared["sumo_baseline"] = {"written": s.rows_written, "read": s.rows_read,
                                       "quarantined_rows": set(q.column("row").to_pylist()) if q.num_rows else set()}
        shutil.rmtree(env.tmp / "in")
    return env.shared["sumo_baseline"]


def _sumo(mutate, expect, owner: str = "reliab") -> Case:
    """``mutate(table) -> table``; ``expect(baseline) -> (expect_written, bad rows, whole_file)``."""
    def run(env: Env) -> Result:
        import pyarrow.parquet as pq

        from forecast.data.sources.sumo import SumoAdapter

        base = _sumo_baseline(env)
        rundir = _sumo_run(env)
        fcd = rundir / "fcd.parquet"
        out = mutate(pq.read_table(fcd), fcd)
        if out is not None:
            pq.write_table(out, fcd)
        written, bad, whole = expect(base)
        return judge_ingest(env, SumoAdapter(scenario_length_s=5.0), env.tmp / "in", written, bad, fcd, whole)

    return run, owner


def _set_value(column: str, value, row: int = SUMO_BAD_ROW):
    def mutate(table, fcd):
        import pyarrow as pa

        col = table.column(column).to_pylist()
        col[row] = value
        typ = table.schema.field(column).type
        return table.set_column(table.schema.get_field_index(column), column, pa.array(col, typ))
    return mutate


def _one_bad(fields: set[str] | None):
    return lambda b: (b["written"] - 1, {SUMO_BAD_ROW: fields}, False)


def _none_bad(b):
    return b["written"], {}, False


def _whole(b):
    return 0, {}, True


def _sumo_cases() -> list[Case]:
    import pyarrow as pa
    import pyarrow.compute as pc

    xf, yf, tf = {"vehicle_x", "x"}, {"vehicle_y", "y"}, {"timestep_time", "time", "timestep"}
    specs = {
        "x_nan": (_set_value("vehicle_x", float("nan")), _one_bad(xf)),
        "x_inf": (_set_value("vehicle_x", float("inf")), _one_bad(xf)),
        "x_null": (_set_value("vehicle_x", None), _one_bad(xf)),
        "y_neg_inf": (_set_value("vehicle_y", float("-inf")), _one_bad(yf)),
        "y_null": (_set_value("vehicle_y", None), _one_bad(yf)),
        "time_nan": (_set_value("timestep_time", float("nan")), _one_bad(tf)),
        "time_null": (_set_value("timestep_time", None), _one_bad(tf)),
        "time_negative": (_set_value("timestep_time", -5.0), _one_bad(None)),
        "time_off_grid": (_set_value("timestep_time", 10.05), _one_bad(None)),
        "id_null": (_set_value("vehicle_id", None), _one_bad({"vehicle_id", "track_id", "id"})),
        "id_empty": (_set_value("vehicle_id", ""), _one_bad({"vehicle_id", "track_id", "id"})),
        "id_nul_char": (_set_value("vehicle_id", "car\x00x"), _one_bad({"vehicle_id", "track_id", "id"})),
        "id_megabyte": (_set_value("vehicle_id", "v" * 1_000_000), _one_bad({"vehicle_id", "track_id", "id"})),
        # a vehicle's centre comes from the path its front drove: a row without an angle keeps its
        # position and stores an unknown (NaN) heading, so no valid row is lost
        "angle_nan": (_set_value("vehicle_angle", float("nan")), _none_bad),
        "type_unknown": (_set_value("vehicle_type", "ufo"), _one_bad({"agent_type", "vehicle_type"})),
        "type_null": (_set_value("vehicle_type", None), _one_bad({"agent_type", "vehicle_type"})),
        "speed_negative": (_set_value("vehicle_speed", -3.0), _none_bad),
        "teleport": (_set_value("vehicle_x", 1e5), _one_bad(None)),
        "missing_x_column": (lambda t, f: t.drop_columns(["vehicle_x"]), _whole),
        "missing_id_column": (lambda t, f: t.drop_columns(["vehicle_id"]), _whole),
        "x_as_string": (lambda t, f: t.set_column(t.schema.get_field_index("vehicle_x"), "vehicle_x",
                                                  pc.cast(t.column("vehicle_x"), pa.string())), _whole),
        "truncated_file": (lambda t, f: (f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), None)[1], _whole),
        "empty_file": (lambda t, f: (f.write_bytes(b""), None)[1], _whole),
        "not_parquet": (lambda t, f: (f.write_text("timestep_time,vehicle_id\n0,a\n"), None)[1], _whole),
        "zero_rows": (lambda t, f: t.slice(0, 0), lambda b: (0, {}, False)),
        "reversed_rows": (lambda t, f: t.take(pa.array(np.arange(t.num_rows)[::-1])), _none_bad),
        "shuffled_rows": (lambda t, f: t.take(pa.array(np.random.default_rng(1).permutation(t.num_rows))), _none_bad),
        "duplicated_rows": (lambda t, f: pa.concat_tables([t, t.slice(SUMO_BAD_ROW, 1)]),
                            lambda b: (b["written"], {b["read"]: None}, False)),
        "extra_column": (lambda t, f: t.append_column("extra", pa.array(np.zeros(t.num_rows))), _none_bad),
        "float32_xy": (lambda t, f: t.set_column(t.schema.get_field_index("vehicle_x"), "vehicle_x",
                                                 pc.cast(t.column("vehicle_x"), pa.float32())), _none_bad),
    }
    # the centre conversion (00cf47d) turns a bad y or time into a NaN x, quarantined as "x"
    owners = {"y_neg_inf": "data", "y_null": "data", "time_nan": "data", "time_null": "data", "id_null": "data", "id_empty": "data", "teleport": "data", "id_nul_char": "data", "id_megabyte": "data", "reversed_rows": "data",
              "shuffled_rows": "data"}
    out = []
    for name, (mutate, expect) in specs.items():
        run, owner = _sumo(mutate, expect, owners.get(name, "reliab"))
        out.append(Case("ingest", f"sumo/{name}", run, owner=owner, needs=("sumo_runs",)))
    return out


def _sumo_files_case(name: str, damage, owner: str = "reliab") -> Case:
    """Damage to run.json or the network: the tracks must still be stored (or a clear error name the file)."""
    def run(env: Env) -> Result:
        from forecast.data.sources.sumo import SumoAdapter

        base = _sumo_baseline(env)
        rundir = _sumo_run(env)
        damage(rundir)
        res = judge_ingest(env, SumoAdapter(scenario_length_s=5.0), env.tmp / "in", base["written"], {},
                           rundir / "fcd.parquet")
        if res.kind == TRACEBACK and "run.json" in res.detail:
            return Result(CLEAR, res.detail)  # refusing the whole ingest, naming the file, is clear enough
        return res

    return Case("ingest", f"sumo/{name}", run, owner=owner, needs=("sumo_runs",))


def _net(rundir: Path) -> Path:
    return sorted(rundir.glob("*.net.xml"))[0]


def _sumo_file_cases() -> list[Case]:
    return [
        _sumo_files_case("run_json_list", lambda d: (d / "run.json").write_text("[1, 2]"), owner="data"),
        _sumo_files_case("run_json_broken", lambda d: (d / "run.json").write_text("{broken"), owner="data"),
        _sumo_files_case("run_json_empty", lambda d: (d / "run.json").write_text(""), owner="data"),
        _sumo_files_case("net_deleted", lambda d: _net(d).unlink()),
        _sumo_files_case("net_garbage", lambda d: _net(d).write_text("<net><edge")),
        _sumo_files_case("net_empty", lambda d: _net(d).write_text("")),
    ]


# --- command line and store ------------------------------------------------------------------------------

def _cli(argv_of, code: int, *mentions: str, owner: str = "reliab"):
    def run(env: Env) -> Result:
        return expect_cli(argv_of(env), code, *[m(env) if callable(m) else m for m in mentions])

    return run, owner


def _cli_cases() -> list[Case]:
    runs = lambda e: str(e.sumo_runs)  # noqa: E731
    st = lambda e: str(e.tmp / "store")  # noqa: E731
    specs = {
        "input_missing": (lambda e: ["ingest", "--source", "sumo", str(e.tmp / "nope"), "--store", st(e)], 2, "nope"),
        "input_empty_dir": (lambda e: ["ingest", "--source", "sumo", str(e.tmp), "--store", st(e)], 2,
                            lambda e: str(e.tmp)),
        "source_unknown": (lambda e: ["ingest", "--source", "waymo", runs(e), "--store", st(e)], 2, "waymo"),
        "shard_out_of_range": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e), "--shard", "3/2"],
                               2, "3/2"),
        "shard_zero": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e), "--shard", "0/0"], 2, "0/0"),
        "shard_words": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e), "--shard", "a/b"], 2,
                        "a/b"),
        "split_unknown": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e), "--split", "dev"], 2,
                          "dev"),
        "scenario_length_negative": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e),
                                                "--scenario-length", "-5"], 2, "scenario"),
        "scenario_length_zero": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e),
                                            "--scenario-length", "0"], 2, "scenario"),
        "scenario_length_nan": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e),
                                           "--scenario-length", "nan"], 2, "scenario"),
        "scenario_length_word": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e),
                                            "--scenario-length", "ten"], 2, "scenario-length"),
        "store_readonly": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", str(e.readonly() / "s")], 2,
                           lambda e: str(e.readonly() / "s")),
        "store_is_a_file": (lambda e: (e.tmp.joinpath("f").write_text("x"),
                                       ["ingest", "--source", "sumo", runs(e), "--store", str(e.tmp / "f")])[1], 2,
                            lambda e: str(e.tmp / "f")),
        "summary_in_missing_dir": (lambda e: ["ingest", "--source", "sumo", runs(e), "--store", st(e), "--summary",
                                              str(e.readonly() / "x" / "s.json")], 2, lambda e: str(e.readonly() / "x")),
        "store_cmd_missing": (lambda e: ["store", str(e.tmp / "nope")], 2, "nope"),
        "store_cmd_on_file": (lambda e: (e.tmp.joinpath("f").write_text("x"), ["store", str(e.tmp / "f")])[1], 2,
                              lambda e: str(e.tmp / "f")),
    }
    owners = {"scenario_length_negative": "data", "scenario_length_zero": "data", "scenario_length_nan": "data"}
    out = []
    for name, (argv, code, *mentions) in specs.items():
        run, owner = _cli(lambda e, a=argv: ["--quiet", *a(e)], code, *mentions, owner=owners.get(name, "reliab"))
        out.append(Case("ingest" if not name.startswith("store_cmd") else "store", f"cli/{name}", run, owner=owner,
                        needs=("sumo_runs",)))
    return out


def _run_json_deleted(env: Env) -> Result:
    """Without run.json the vType classes are unknown: such rows may be quarantined, but each with its reason."""
    from forecast.data.ingest import run_ingest
    from forecast.data.sources.sumo import SumoAdapter
    from forecast.data.store import Store

    rundir = _sumo_run(env)
    (rundir / "run.json").unlink()
    store = Store(env.tmp / "store")
    try:
        s = run_ingest(SumoAdapter(scenario_length_s=5.0), env.tmp / "in", store, progress=False)
    except Exception as exc:
        return Result(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
    q = store.quarantine_table()
    if s.rows_read != s.rows_written + s.rows_quarantined or _store_rows(store) != s.rows_written:
        return Result(WRONG, f"counts do not add up: {s.to_dict()}")
    if q.num_rows != s.rows_quarantined or not all(q.column("reason").to_pylist()):
        return Result(LOST, "rows missing from both store and quarantine, or without a reason")
    return Result(QUARANTINED, f"{s.rows_quarantined} rows quarantined with their reason: {s.quarantine_reasons}")


def cases() -> list[Case]:
    out = [Case("ingest", f"eth/{FIELD_NAMES[c]}_{n}", _eth_bad_field(c, v)) for c in range(4)
           for n, v in BAD_VALUES.items()]
    out += _eth_line_cases()
    out += _sumo_cases() + _sumo_file_cases()
    out.append(Case("ingest", "sumo/run_json_deleted", _run_json_deleted, needs=("sumo_runs",)))
    out += _cli_cases()
    for c in out:
        if c.area == "ingest" and c.name.startswith("eth/"):
            c.needs = ()
    return out


def _json(path: Path):
    return json.loads(path.read_text())
