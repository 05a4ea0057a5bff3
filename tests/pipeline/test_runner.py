"""The runner with stand-in steps: hashing, skipping, resume, atomic commits, the gate, DDP workers."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from forecast.pipeline.gate import GateConfig, RegisteredModel
from forecast.pipeline.runner import (
    RunOptions,
    plan,
    run_pipeline,
    run_worker,
    step_states,
)
from forecast.pipeline.steps import StepContext, StepResult
from forecast.pipeline.workdir import SUCCESS
from forecast.training.ranks import ddp_rank_from_env


class FakeStep:
    """Writes ``out.txt`` (its name and its inputs' texts); can fail on chosen attempts after writing part."""

    def __init__(self, name: str, inputs: tuple[str, ...] = (), resumable: bool = False, spec: dict | None = None,
                 fail_on: tuple[int, ...] = (), write: dict | None = None):
        self.name, self.inputs, self.resumable = name, inputs, resumable
        self._spec = spec or {"setting": 1}
        self.fail_on = fail_on
        self.write = write or {}
        self.calls: list[StepContext] = []
        self.seen_final_during_run: list[bool] = []

    def spec(self) -> dict:
        return self._spec

    def run(self, ctx: StepContext) -> StepResult:
        self.calls.append(ctx)
        final = ctx.out.parent / ctx.hash
        self.seen_final_during_run.append(final.exists())
        resumed_from = (ctx.out / "partial.txt").read_text() if (ctx.out / "partial.txt").exists() else None
        (ctx.out / "partial.txt").write_text(f"attempt {len(self.calls)}")
        if len(self.calls) in self.fail_on:
            raise RuntimeError(f"{self.name} killed mid-way (attempt {len(self.calls)})")
        text = self.name + "".join(f"<{(p / 'out.txt').read_text()}" for p in ctx.inputs.values())
        (ctx.out / "out.txt").write_text(text)
        for name, content in self.write.items():
            (ctx.out / name).write_text(content)
        return StepResult({"out": "out.txt"}, {"resumed_from": resumed_from}, {"calls": float(len(self.calls))})


def chain(**kw) -> list[FakeStep]:
    return [FakeStep("simulate", resumable=True), FakeStep("ingest", ("simulate",), resumable=True),
            FakeStep("train", ("ingest",), resumable=True, **kw), FakeStep("evaluate", ("train", "ingest")),
            FakeStep("export", ("train",))]


def quiet(**kw) -> RunOptions:
    return RunOptions(name="test", progress=False, log=lambda msg: None, **kw)


def test_second_run_skips_every_step(tmp_path):
    steps = chain()
    first = run_pipeline(steps, tmp_path, quiet())
    assert first.status == "ok" and [o.status for o in first.outcomes] == ["ran"] * 5
    assert (first.path("export") / "out.txt").read_text() == "export<train<ingest<simulate"
    second = run_pipeline(steps, tmp_path, quiet())
    assert second.all_skipped and [len(s.calls) for s in steps] == [1] * 5
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["status"] == "ok"
    for p in plan(steps, tmp_path):
        assert latest["steps"][p.name]["path"] == str(p.final) == str(tmp_path / p.name / p.hash)
        record = json.loads((p.final / SUCCESS).read_text())
        assert record["hash"] == p.hash and record["input_hashes"] == p.input_hashes
    assert [s["state"] for s in step_states(steps, tmp_path)] == ["done"] * 5


def test_hash_follows_settings_inputs_and_version(tmp_path):
    base = {p.name: p.hash for p in plan(chain(), tmp_path)}
    assert base == {p.name: p.hash for p in plan(chain(), tmp_path)}  # stable
    changed = chain()
    changed[1]._spec = {"setting": 2}  # ingest changes: it and everything downstream of it
    after = {p.name: p.hash for p in plan(changed, tmp_path)}
    assert after["simulate"] == base["simulate"]
    assert all(after[n] != base[n] for n in ("ingest", "train", "evaluate", "export"))
    last = chain()
    last[4]._spec = {"setting": 2}
    assert {n for n, h in ((p.name, p.hash) for p in plan(last, tmp_path)) if h != base[n]} == {"export"}
    from forecast.pipeline.runner import step_hash

    assert step_hash("train", {"a": 1}, {"ingest": "x"}, "0.1.0") != step_hash("train", {"a": 1}, {"ingest": "x"}, "0.2.0")


def test_failed_step_resumes_and_no_half_output_is_visible(tmp_path):
    steps = chain(fail_on=(1,))
    first = run_pipeline(steps, tmp_path, quiet())
    assert first.status == "failed" and "killed mid-way" in first.error
    assert [o.status for o in first.outcomes] == ["ran", "ran", "failed"]
    train = plan(steps, tmp_path)[2]
    assert not train.final.exists() and (train.partial / "partial.txt").exists()  # kept for the resume
    assert not any(s.calls for s in steps[3:])
    assert json.loads((tmp_path / "latest.json").read_text())["status"] == "failed"

    second = run_pipeline(steps, tmp_path, quiet())
    assert second.status == "ok"
    assert [o.status for o in second.outcomes] == ["skipped", "skipped", "ran", "ran", "ran"]
    assert steps[2].calls[1].out == train.partial  # the same directory: a trainer finds its last.ckpt there
    record = json.loads((train.final / SUCCESS).read_text())
    assert record["resumed"] is True and record["summary"]["resumed_from"] == "attempt 1"
    assert not train.partial.exists()
    for s in steps:  # a step never ran with its final directory in place, nor wrote straight into it
        assert not any(s.seen_final_during_run)
        assert all(c.out.name.startswith(".tmp-") or c.out.name.endswith(".partial") for c in s.calls)


def test_failed_non_resumable_step_leaves_nothing(tmp_path):
    steps = chain()
    steps[3] = FakeStep("evaluate", ("train", "ingest"), fail_on=(1,))
    assert run_pipeline(steps, tmp_path, quiet()).status == "failed"
    assert os.listdir(tmp_path / "evaluate") == []


def test_stale_tmp_dirs_are_cleaned_and_partial_kept(tmp_path):
    steps = chain()
    stale = tmp_path / "evaluate" / ".tmp-0123-99999"
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text("{half")
    partial = plan(steps, tmp_path)[0].partial
    partial.mkdir(parents=True)
    (partial / "partial.txt").write_text("attempt 0")
    assert run_pipeline(steps, tmp_path, quiet()).status == "ok"
    assert not stale.exists()
    assert steps[0].calls[0].out == partial


def test_interrupted_commit_is_finished_without_rerunning(tmp_path):
    steps = chain()
    p = plan(steps, tmp_path)[0]
    p.partial.mkdir(parents=True)
    (p.partial / "out.txt").write_text("simulate")
    files = {"out.txt": hashlib.sha256(b"simulate").hexdigest()}
    (p.partial / SUCCESS).write_text(json.dumps({"hash": p.hash, "files": files}))  # killed just before the rename
    result = run_pipeline(steps, tmp_path, quiet())
    assert result.outcomes[0].status == "skipped" and not steps[0].calls and p.done


def test_force_reruns_the_step_and_what_reads_it(tmp_path):
    steps = chain()
    run_pipeline(steps, tmp_path, quiet())
    result = run_pipeline(steps, tmp_path, quiet(force={"train"}))
    assert [o.status for o in result.outcomes] == ["skipped", "skipped", "ran", "ran", "ran"]
    assert not list((tmp_path / "train").glob(".trash-*"))
    with pytest.raises(ValueError, match="not a step"):
        run_pipeline(steps, tmp_path, quiet(force={"nope"}))


def _metrics(model: float, cv: float = 2.0) -> dict:
    return {"overall": {"minFDE@6": model, "MR@6": 0.1}, "baselines": {"constant_velocity": {"overall": {"minFDE@6": cv}}}}


def gated_chain(model_fde: float) -> list[FakeStep]:
    steps = chain()
    steps[3] = FakeStep("evaluate", ("train", "ingest"), spec={"fde": model_fde},
                        write={"metrics.json": json.dumps(_metrics(model_fde))})
    return steps


def test_gate_blocks_export_and_records_reasons(tmp_path):
    gate = GateConfig(enabled=True, max_metrics={"minFDE@6": 1.5}, must_beat_baselines=["constant_velocity"])
    steps = gated_chain(1.8)
    result = run_pipeline(steps, tmp_path, quiet(gate=gate))
    assert result.status == "gate_failed" and not result.gate.passed
    assert [o.status for o in result.outcomes][-1] == "blocked" and not steps[4].calls
    saved = json.loads((tmp_path / "gate.json").read_text())
    assert saved["passed"] is False
    assert any(r.startswith("FAIL max minFDE@6: minFDE@6 1.8000 > 1.5") for r in saved["reasons"])
    assert any(r.startswith("PASS beat constant_velocity") for r in saved["reasons"])
    assert json.loads((tmp_path / "latest.json").read_text())["steps"]["export"]["status"] == "blocked"

    passing = gated_chain(1.2)
    ok = run_pipeline(passing, tmp_path, quiet(gate=gate))
    assert ok.status == "ok" and ok.gate.passed and passing[4].calls


def test_gate_compares_with_the_registered_model(tmp_path):
    gate = GateConfig(enabled=True, must_beat_registered=True)
    champion = RegisteredModel("m", "3", {"minFDE@6": 1.0})
    result = run_pipeline(gated_chain(1.1), tmp_path, quiet(gate=gate, champion=lambda: champion))
    assert result.status == "gate_failed"
    assert "vs m v3's 1.0000" in result.gate.reasons[0]


def test_worker_joins_train_only(tmp_path):
    steps = chain()
    run_pipeline(steps[:2], tmp_path, quiet())  # simulate and ingest done by rank 0
    assert run_worker(steps, tmp_path, rank=1, poll_s=0.01) == 0
    train = plan(steps, tmp_path)[2]
    assert [len(s.calls) for s in steps] == [1, 1, 1, 0, 0]
    assert steps[2].calls[0].rank == 1 and steps[2].calls[0].out == train.partial and not train.done
    assert run_worker(chain(), tmp_path / "empty", rank=1, poll_s=0.01, timeout_s=0.05) == 1  # inputs never came
    failing = chain()
    failing[1] = FakeStep("ingest", ("simulate",), resumable=True, fail_on=(1,))
    run_pipeline(failing, tmp_path / "failed", quiet())  # rank 0's run died in ingest: do not wait for it
    assert run_worker(failing, tmp_path / "failed", rank=1, poll_s=0.01, timeout_s=30) == 1


def test_rank_from_env():
    assert ddp_rank_from_env({}) == 0
    assert ddp_rank_from_env({"LOCAL_RANK": "0", "NODE_RANK": "0"}) == 0
    assert ddp_rank_from_env({"LOCAL_RANK": "1"}) > 0  # Lightning's re-executed child
    assert ddp_rank_from_env({"NODE_RANK": "1", "LOCAL_RANK": "0"}) > 0
    assert ddp_rank_from_env({"RANK": "3", "LOCAL_RANK": "1"}) > 0  # torchrun
    assert ddp_rank_from_env({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}) == 0
    assert ddp_rank_from_env({"SLURM_PROCID": "0"}) == 0
    assert ddp_rank_from_env({"SLURM_PROCID": "2"}) == 2  # srun task 2
    assert ddp_rank_from_env({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}) > 0  # sbatch without srun, Lightning child
