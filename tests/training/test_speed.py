"""Trainer speed options: agent buckets keep the real agents' outputs, compile sees few shapes, options train."""

from __future__ import annotations

import dataclasses
import traceback

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from forecast.export.onnx_export import synthetic_sample
from forecast.model.batch import collate
from forecast.model.checkpoint import load_model
from forecast.model.world_model import WorldModel
from forecast.training.config import TrainerConfig
from forecast.training.speed import (
    AgentBuckets,
    LoaderBatch,
    SyncWatch,
    apply_model_options,
    bucket_size,
    collate_for_loader,
    pad_agents,
    scaled_lr,
)
from forecast.training.train import run_training
from tests.conftest import tiny_features_and_model, tiny_train_config
from tests.model.test_world_model import FEAT, MCFG, _batch


def test_bucket_sizes():
    assert [bucket_size(a, [16, 8, 32]) for a in (1, 8, 9, 32, 33, 70)] == [8, 8, 16, 32, 64, 96]
    assert scaled_lr(1e-3, 256, 2, 32) == pytest.approx(1.6e-2) and scaled_lr(1e-3, 256, 2, None) == 1e-3


def test_padding_agents_leaves_the_real_agents_unchanged():
    features, model_cfg = tiny_features_and_model()
    torch.manual_seed(0)
    model = WorldModel(model_cfg, features.scene_scale).eval()
    torch.nn.init.normal_(model.rollout.head[-1].weight, std=0.05)
    samples = [synthetic_sample(n, features, seed=n)[0] for n in (3, 5)]
    batch = collate(samples, features.future_steps)
    padded = collate(samples, features.future_steps)
    pad_agents(padded, 8)
    assert padded.hist.shape[1] == 8 and padded.raster.shape[1] == 8 and padded.agent_mask.dtype == torch.bool
    assert not padded.agent_mask[:, 5:].any() and not padded.target_mask[:, 5:].any()
    with torch.no_grad():
        ref = model(*batch.model_inputs())
        out = model(*padded.model_inputs())
    for r, o in zip(ref, out, strict=True):
        real = batch.agent_mask
        torch.testing.assert_close(o[:, :5][real], r[real], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_agents(padded, 4)


def test_channels_last_computes_the_same_outputs_and_gradients():
    """trainer.channels_last pads the raster input to 8 channels in NHWC memory (for cuDNN's tensor
    cores): the same function, and the padded channels' weights are not parameters."""
    import copy

    from forecast.model.encoders import channels_last_input
    from forecast.training.config import TrainerConfig
    from forecast.training.speed import apply_model_options

    features, model_cfg = tiny_features_and_model()
    torch.manual_seed(0)
    plain = WorldModel(model_cfg, features.scene_scale)
    torch.nn.init.normal_(plain.rollout.head[-1].weight, std=0.05)
    fast = copy.deepcopy(plain)
    apply_model_options(fast, TrainerConfig(channels_last=True))
    assert fast.encoder.raster.channels_last and not plain.encoder.raster.channels_last
    samples = [synthetic_sample(n, features, seed=n)[0] for n in (3, 5)]
    inputs = collate(samples, features.future_steps, pack_rasters=True).model_inputs()
    x, w = channels_last_input(inputs[4], plain.encoder.raster.net[0].weight)
    c = inputs[4].shape[1]
    assert x.shape[1] % 8 == 0 and x.shape[1] >= c and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[:, :c], inputs[4].float()) and not x[:, c:].any() and not w[:, c:].any()
    outs = []
    for m in (plain, fast):
        traj, scale, logits = m.forward_logits(*inputs)
        (traj.sum() + scale.sum() + logits.sum()).backward()
        outs.append((traj, scale, logits, m.encoder.raster.net[0].weight.grad))
    for r, o in zip(*outs, strict=True):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-4)
    assert fast.encoder.raster.net[0].weight.shape[1] == c


def test_loader_batches_pin_and_copy_like_batches():
    features, _ = tiny_features_and_model()
    b = collate_for_loader([synthetic_sample(4, features, seed=1)[0]], features.future_steps)
    assert isinstance(b, LoaderBatch) and isinstance(b.to("cpu"), LoaderBatch)
    np.testing.assert_array_equal(b.to("cpu").hist.numpy(), b.hist.numpy())
    if torch.cuda.is_available():  # pinning needs an accelerator
        assert b.pin_memory().hist.is_pinned()


@pytest.mark.slow  # about 20 s: dynamo traces the tiny model for each bucket
@pytest.mark.parametrize("scope", ["regions", "model"])
def test_compiled_bucketed_training_runs_and_saves_a_plain_model(sumo_store, tmp_path, scope):
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    buckets = AgentBuckets([4, 8])
    cfg = tiny_train_config(sumo_store.path, tmp_path / "run", **{
        "trainer.agent_buckets": "[4,8]", "trainer.compile": "true", "trainer.compile_backend": "eager",
        "trainer.compile_scope": scope, "trainer.channels_last": "true", "trainer.pin_memory": "false",
        "optim.lr_reference_batch_size": 2})
    result = run_training(cfg, progress=False, extra_callbacks=[buckets])
    assert result.global_step > 0 and np.isfinite(result.metrics["val/minFDE"])
    # every batch was padded to a bucket (the callback given here runs after the configured one)
    assert buckets.seen and buckets.seen <= {4, 8}
    # a handful of graphs per compiled region (train/eval x buckets x the odd last batch), not one per
    # agent count, and not one per latent step: the step is compiled once and replayed
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    regions = 3 if scope == "regions" else 1
    assert 0 < graphs <= 12 * regions, graphs
    loaded = load_model(result.model_path)  # plain state-dict keys: no compile wrapper in them
    assert not any("_orig_mod" in k for k in loaded.model.state_dict())
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert saved["meta"]["train_config"]["optim"]["lr"] == pytest.approx(1e-3 * 4 / 2)


@pytest.mark.parametrize(("autocast", "map_lookup"), [(False, False), (True, False), (True, True)])
def test_a_compiled_latent_step_compiles_once_for_every_step_of_the_rollout(autocast, map_lookup):
    """Regional compilation pays off only if the step's guards hold from one step to the next: the first
    step's inputs (zeros, t0 velocity) must look like the later ones' (strides, requires_grad, dtypes
    under bf16 autocast, as the full config trains), the raster's feature map too (``model.map_lookup``)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    raster = FEAT.raster
    model = WorldModel(dataclasses.replace(MCFG, map_lookup=map_lookup, raster_size=raster.size,
                                           raster_resolution=raster.resolution, raster_ahead=raster.ahead))
    compiled = {"n": 0}

    def counting_backend(gm, example_inputs):
        compiled["n"] += 1
        return gm.forward

    model.rollout.step = torch.compile(model.rollout.step, backend=counting_backend)
    batch = _batch()
    for grad in (True, False):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            before = compiled["n"]
            traj, _, _ = model.forward_logits(*batch.model_inputs())
            assert compiled["n"] == before + 1, f"grad={grad}: {compiled['n'] - before} compilations of the step"
    assert MCFG.future_steps // MCFG.rollout_stride > 1 and traj.shape[3] == MCFG.future_steps


def test_an_unknown_compile_scope_is_refused_by_name():
    cfg = TrainerConfig(compile=True, compile_scope="everything")
    with pytest.raises(ValueError, match="compile_scope='everything'.*regions, model"):
        apply_model_options(WorldModel(MCFG), cfg)


@pytest.mark.parametrize("bar", [False, True])
def test_training_steps_turn_no_tensor_into_a_number_without_a_progress_bar(sumo_store, tmp_path, monkeypatch, bar):
    """Progress-bar values are converted to Python numbers after every batch (a GPU sync per step,
    issue 12); a scheduled run has no bar, so its steps must log nothing to one."""
    import lightning as L
    from lightning.pytorch.trainer.connectors.logger_connector import result

    from forecast.training.datamodule import ForecastDataModule
    from forecast.training.module import ForecastModule

    converted = []
    real = result.convert_tensors_to_scalars
    monkeypatch.setattr(result, "convert_tensors_to_scalars", lambda v: converted.append(v) or real(v))
    cfg = tiny_train_config(sumo_store.path, tmp_path / "run").resolved()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=bar, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(ForecastModule(cfg), datamodule=ForecastDataModule(cfg))
    assert trainer.global_step == 3
    assert bool(converted) == bar


class _HostSyncs(TorchDispatchMode):
    """Records the operations that, on a GPU, make the host wait for the device: a tensor made from
    Python data (copied from pageable memory), a value read on the host, a data-dependent shape (a
    boolean mask as an index, ``repeat_interleave`` without its output size). What it cannot see on a
    CPU: an index made on the host and copied to the GPU (every tensor is on the CPU here); the CUDA
    test below (``SyncWatch``, torch's own check) catches those."""

    SYNCS = {"aten.lift_fresh.default", "aten._local_scalar_dense.default", "aten.nonzero.default",
             "aten.is_nonzero.default", "aten.masked_select.default", "aten.repeat_interleave.Tensor"}
    INDEXING = {"aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default"}
    WRAPPERS = ("torch/_dynamo/", "torch/_compile.py", "torch/utils/_python_dispatch.py")

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def _syncs(self, name: str, args, kwargs) -> bool:
        if name == "aten.repeat_interleave.Tensor":
            return kwargs.get("output_size") is None
        if name in self.INDEXING:  # a boolean mask as an index: its nonzero runs inside the kernel
            return any(i is not None and i.dtype == torch.bool for i in args[1])
        return name in self.SYNCS

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if self._syncs(name, args, kwargs):
            # the frame that called the operation, past torch's own wrappers (dynamo's, the dispatch's)
            caller = next(f for f in reversed(traceback.extract_stack()[:-1])
                          if not any(w in f.filename.replace("\\", "/") for w in self.WRAPPERS))
            # AdamW reads its step counters, kept on the CPU (torch's choice on a GPU too): no sync
            optimizer_step = name == "aten._local_scalar_dense.default" and "torch/optim/" in caller.filename.replace("\\", "/")
            if not optimizer_step:
                self.seen.append((name, f"{caller.filename}:{caller.lineno}"))
        return func(*args, **kwargs)


class _WatchSteps(L.Callback):
    """The dispatch mode around every training batch after the first (which sets up the optimizer's state
    and Lightning's metric buffers once), and around every validation batch after each epoch's first
    (its accumulators and Lightning's buffers), sanity check left out; counted in ``watched`` and
    ``watched_val``."""

    def __init__(self):
        self.mode, self.seen, self.watched, self.watched_val = None, [], 0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= 1:
            self.mode = _HostSyncs()
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._leave(counted=True)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if batch_idx >= 1 and not trainer.sanity_checking:
            self.mode = _HostSyncs()
            self.mode.__enter__()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if self.mode is not None:
            self.watched_val += 1
            self._leave(counted=False)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._leave(counted=False)  # a mode left on would watch every later test in the process

    def _leave(self, counted: bool) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.seen += self.mode.seen
            self.watched += counted
            self.mode = None


# Plans in every scene, so that their sampling, the near-plan weights and the planned rollout all run;
# channels-last rasters, as configs/train/full.yaml trains.
_WATCHED = {"data.plan_probability": 1.0, "optim.max_epochs": 1, "trainer.channels_last": True}


def test_a_training_step_never_makes_the_host_wait_for_the_gpu(sumo_store, tmp_path):
    # issue 12: torch.tensor(python data, device="cuda") in the rollout (four per latent step) and an index
    # made on the host in the plan sampling each synchronised the host with the GPU, so the host could not
    # queue the next kernels while the GPU ran: fit steps held the host 165 ms against 90-110 ms for the bare
    # step (H200, batch 256). Checked on the CPU by the operations that sync on a GPU.
    # The validation steps too: a boolean mask as an index and the constant-velocity yardstick computed on
    # the host made each validation batch wait for the GPU about 16 times.
    watch = _WatchSteps()
    run_training(tiny_train_config(sumo_store.path, tmp_path / "run", **_WATCHED), progress=False,
                 extra_callbacks=[watch])
    assert watch.watched >= 2 and watch.watched_val >= 1, (watch.watched, watch.watched_val)
    assert watch.seen == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench/train.py's fit rows report it there)")
def test_a_training_step_on_a_gpu_never_synchronises(sumo_store, tmp_path):
    watch = SyncWatch()
    cfg = tiny_train_config(sumo_store.path, tmp_path / "run", **_WATCHED, **{"trainer.accelerator": "gpu",
                                                                             "trainer.devices": 1})
    run_training(cfg, progress=False, extra_callbacks=[watch])
    assert watch.watched >= 2
    assert watch.seen == []
