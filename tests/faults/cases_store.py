"""Store faults: damaged store files read back (a clear error naming the file) and reruns of ingest
over a damaged or changed store (noticed and repaired, no row lost or doubled)."""

from __future__ import annotations

from pathlib import Path

from tests.faults.cases_ingest import _store_rows
from tests.faults.harness import CLEAR, LOST, OK, TRACEBACK, WRONG, Case, Env, Result, expect_cli


def _store_copy(env: Env):
    from forecast.data.store import Store

    return Store(env.copy(env.store.path if hasattr(env.store, "path") else env.store, "store"))


def _damaged_store(name: str, damage, owner: str = "reliab") -> Case:
    """A damaged store read back: a clear error naming the file, never a traceback or a silent short read."""
    def run(env: Env) -> Result:
        store = _store_copy(env)
        target = damage(store)
        from forecast.data.store import Store

        def read():
            s = Store(store.path)
            s.summary()
            for info in s.scenarios():
                s.load_scenario(info.scenario_id)

        res = expect_cli(["store", str(store.path)], 2, target.name)
        if res.kind not in (CLEAR,):
            return res
        from tests.faults.harness import expect_raise

        return expect_raise(read, (ValueError, OSError), target.name)

    return Case("store", name, run, owner=owner, needs=("store",))


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _store_cases() -> list[Case]:
    out = [
        _damaged_store("tracks_truncated", lambda s: _truncate(sorted(s.tracks_dir.rglob("*.parquet"))[0])),
        _damaged_store("scenarios_truncated", lambda s: _truncate(sorted(s.scenarios_dir.rglob("*.parquet"))[0])),
        _damaged_store("tracks_garbage", lambda s: (p := sorted(s.tracks_dir.rglob("*.parquet"))[0],
                                                    p.write_bytes(b"PAR1 garbage PAR1"))[0]),
    ]

    def rerun_repairs(name, damage, owner="scale"):
        def run(env: Env) -> Result:
            from forecast.data.ingest import run_ingest
            from forecast.data.sources.sumo import SumoAdapter
            from forecast.data.store import Store

            store = Store(env.tmp / "store")
            run_ingest(SumoAdapter(scenario_length_s=5.0), env.sumo_runs, store, progress=False)
            before = _store_rows(store)
            damage(store)
            try:
                run_ingest(SumoAdapter(scenario_length_s=5.0), env.sumo_runs, store, progress=False)
                after = _store_rows(store)
            except Exception as exc:
                return Result(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
            if after != before:
                return Result(LOST if after < before else WRONG, f"{after} rows after the rerun, {before} before")
            return Result(OK, "the rerun noticed and repaired the store")
        return Case("store", name, run, owner=owner, needs=("sumo_runs",))

    out += [
        rerun_repairs("rerun_after_tracks_truncated", lambda s: _truncate(sorted(s.tracks_dir.rglob("*.parquet"))[0])),
        rerun_repairs("rerun_after_tracks_deleted", lambda s: sorted(s.tracks_dir.rglob("*.parquet"))[0].unlink()),
        rerun_repairs("rerun_after_manifest_garbage", lambda s: sorted(s.manifest_dir.rglob("*.json"))[0]
                      .write_text("{garbage"), owner="scale"),
        rerun_repairs("rerun_is_idempotent", lambda s: None, owner="reliab"),
    ]

    def settings_change(env: Env) -> Result:
        from forecast.data.ingest import run_ingest
        from forecast.data.sources.sumo import SumoAdapter
        from forecast.data.store import Store

        store = Store(env.tmp / "store")
        run_ingest(SumoAdapter(scenario_length_s=10.0), env.sumo_runs, store, progress=False)
        n10 = len(store.scenarios())
        try:
            run_ingest(SumoAdapter(scenario_length_s=5.0), env.sumo_runs, store, progress=False)
        except Exception as exc:
            return Result(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
        n5 = len(Store(store.path).scenarios())
        if n5 <= n10:
            return Result(WRONG, f"--scenario-length 5 after 10 kept {n5} scenarios (had {n10}): the old cut was kept")
        return Result(OK, f"{n10} -> {n5} scenarios")

    out.append(Case("store", "rerun_with_other_scenario_length", settings_change, owner="scale", needs=("sumo_runs",)))
    return out


def cases() -> list[Case]:
    return _store_cases()
