"""Trainer options that use the hardware: agent-count buckets, torch.compile, channels-last, pinned batches.

Every option is off by default (``configs/train/*.yaml``, ``trainer:`` section) and none changes
what the model computes for the real agents: padded agents are masked everywhere.

* ``agent_buckets``: the agent axis of every batch is padded up to the next of a few fixed sizes,
  on the device, so that ``torch.compile`` (and cuDNN/oneDNN's per-shape kernel choice, which bf16
  pays again for every new shape) sees a handful of shapes instead of one per batch. Packed rasters
  (``[N, C, S, S]``, ``forecast.model.batch``) get their rows padded to the same sizes times the
  batch size, so the raster CNN too sees a handful of shapes, and fewer rows than padded rasters.
* ``compile``: ``torch.compile`` of the model's forward (the weights and their state-dict keys
  stay those of the plain module, so checkpoints and ``model.pt`` do not change).
* ``channels_last``: the convolutions' weights in channels-last memory format, and the raster CNN's
  input too, its channels padded to a multiple of 8 (``forecast.model.encoders.channels_last_input``).
* ``pin_memory``: batches are pinned by the loader (``LoaderBatch.pin_memory``) and Lightning copies
  them to the GPU with ``non_blocking=True``.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from dataclasses import fields

import lightning as L
import torch
from torch.nn import functional as F

from forecast.model.batch import Batch, collate
from forecast.model.encoders import RasterEncoder
from forecast.training.config import TrainerConfig
from forecast.training.raster_pool import RasterPool, Slot, free, release_when_unused


class LoaderBatch(Batch):
    """A ``Batch`` that the DataLoader's pinning thread can pin and that copies to a GPU without blocking.

    (Lightning moves any object with a ``.to`` by calling it without ``non_blocking``.) Its rasters may
    live in a loader worker's reused shared memory (``raster_slot``, ``forecast.training.raster_pool``):
    the process that unpickles the batch from the worker frees that slot once nothing views its rasters.
    """

    # Not fields: no tensors, not moved or pinned; a copy or a moved batch has neither.
    raster_slot: Slot | None = None
    _release: weakref.finalize | None = None

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("raster_slot", "_release")}
        if torch.utils.data.get_worker_info() is not None:
            state["raster_slot"] = self.raster_slot  # the worker hands the slot to the reading process
        elif self._release is not None:
            # Pickled again by the reading process (to another process, torch.save): whoever unpickles it
            # may map the same memory, which this process cannot watch; the slot stays in use for good.
            self._release.detach()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._release = release_when_unused(self.raster, self.raster_slot)

    def __deepcopy__(self, memo: dict) -> LoaderBatch:
        # A copy owns no slot (Lightning's precision plugins copy batches): the original's finalizer frees
        # it, and only once the copy's views of the rasters are gone too.
        out = LoaderBatch(**{f.name: copy.deepcopy(getattr(self, f.name), memo) for f in fields(self)})
        memo[id(self)] = out
        return out

    def pin_memory(self) -> LoaderBatch:
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = True) -> LoaderBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def _map(self, fn) -> LoaderBatch:
        return LoaderBatch(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                              for f in fields(self)})


def collate_for_loader(samples, future_steps: int | None = None, pack_rasters: bool = True,
                       pool: RasterPool | None = None) -> LoaderBatch:
    """``collate`` (the one batch builder) returning a pinnable batch, rasters packed by default, in a
    slot of ``pool`` when one is free (in a loader worker)."""
    slot = None

    def alloc(shape: tuple[int, ...]) -> torch.Tensor:
        nonlocal slot
        out, slot = pool.take(shape)
        return out

    try:
        b = collate(samples, future_steps, pack_rasters, raster_alloc=alloc if pool is not None else None)
    except BaseException:
        free(slot)  # no batch will carry it to a reader that would free it
        raise
    out = LoaderBatch(**{f.name: getattr(b, f.name) for f in fields(b)})
    out.raster_slot = slot
    return out


def pin_batches(trainer_cfg) -> bool:
    """Pinned loader batches: as configured, else when the trainer runs on a GPU that is there."""
    if trainer_cfg.pin_memory is not None:
        return bool(trainer_cfg.pin_memory)
    return trainer_cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def bucket_size(agents: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``agents``; beyond the largest, the next multiple of it."""
    for size in sorted(buckets):
        if agents <= size:
            return size
    top = max(buckets)
    return -(-agents // top) * top


def pad_agents(batch: Batch, agents: int) -> None:
    """In place: pad the agent axis (dim 1) of every field to ``agents`` (zeros / False), on its device.

    Packed rasters have no agent axis and stay as they are (``pad_rows`` pads them).
    """
    a = batch.hist.shape[1]
    if agents == a:
        return
    if agents < a:
        raise ValueError(f"cannot pad {a} agents down to {agents}")
    for f in fields(batch):
        t = getattr(batch, f.name)
        if t is None or (f.name == "raster" and batch.packed):
            continue
        pad = [0, 0] * (t.dim() - 2) + [0, agents - a]
        setattr(batch, f.name, F.pad(t, pad) if t.dtype != torch.bool else F.pad(t.to(torch.uint8), pad).bool())


def pad_rows(batch: Batch, rows: int) -> None:
    """In place: append zero rows to packed rasters up to ``rows`` (nothing reads them)."""
    if not batch.packed:
        raise ValueError("pad_rows pads packed rasters [N, C, S, S]; this batch's are padded")
    n = batch.raster.shape[0]
    if rows < n:
        raise ValueError(f"cannot pad {n} raster rows down to {rows}")
    if rows > n:
        batch.raster = torch.cat([batch.raster, batch.raster.new_zeros(rows - n, *batch.raster.shape[1:])])


def pad_to_buckets(batch: Batch, buckets: list[int]) -> int:
    """In place: agents to their bucket and packed raster rows to the batch size times a bucket.

    Returns the agent bucket. The rows' bucket is at most the agents' (N <= B x A), so the CNN
    never sees more rows than the padded layout would give it.
    """
    size = bucket_size(batch.hist.shape[1], buckets)
    pad_agents(batch, size)
    if batch.packed:
        pad_rows(batch, bucket_size(batch.raster.shape[0], [batch.size * k for k in buckets]))
    return size


class AgentBuckets(L.Callback):
    """Pads each batch's agent axis to a bucket after it reached the device (train and validation)."""

    def __init__(self, buckets: list[int]):
        if not buckets or any(int(b) < 1 for b in buckets):
            raise ValueError(f"agent_buckets must be positive sizes, got {buckets!r}")
        self.buckets = sorted(int(b) for b in buckets)
        self.seen: set[int] = set()  # padded agent counts, for tests and logs

    def _pad(self, batch: Batch) -> None:
        self.seen.add(pad_to_buckets(batch, self.buckets))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._pad(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx: int = 0) -> None:
        self._pad(batch)


COMPILE_SCOPES = ("regions", "model")


def apply_model_options(model: torch.nn.Module, t: TrainerConfig) -> None:
    """In place on the ``WorldModel``: channels-last convolution weights, compiled forwards (the whole
    forward, or its regions: ``trainer.compile_scope``, ``compile_regions``).

    The compiled functions are instance attributes (or ``Module.compile``'s wrapper of a submodule's
    call) over the same parameters, so ``state_dict`` keys, checkpoints and export are those of the
    plain module. ``compile_dynamic=False``: a new agent bucket compiles a new static graph once (six
    buckets: minutes of compilation before a run's steady rate); ``True``: one graph with symbolic
    agent and raster-row counts serves every bucket.
    """
    if t.channels_last:
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
            elif isinstance(m, RasterEncoder):
                m.channels_last = True
    if t.compile:
        if t.compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"trainer.compile_scope={t.compile_scope!r}: expected one of {', '.join(COMPILE_SCOPES)}")
        kwargs = {"dynamic": t.compile_dynamic, "backend": t.compile_backend}
        if t.compile_mode:
            kwargs["mode"] = t.compile_mode
        if t.compile_scope == "regions":
            compile_regions(model, kwargs)
        else:
            model.forward_logits = torch.compile(model.forward_logits, **kwargs)
            model.forward = torch.compile(model.forward, **kwargs)


def compile_regions(model: torch.nn.Module, kwargs: dict) -> None:
    """Regional compilation of a ``WorldModel`` in place: ``torch.compile`` of the encoder, of one latent
    step (compiled once and replayed at every step of the rollout) and of the mode scorer, instead of the
    whole forward with its rollout unrolled. The graphs are a fraction of the size: compiling a new agent
    bucket takes a fraction of the time (docs/measurements.md), at the cost of fusing across steps."""
    model.encoder.compile(**kwargs)
    model.rollout.step = torch.compile(model.rollout.step, **kwargs)
    model.rollout.scorer.compile(**kwargs)


def scaled_lr(lr: float, batch_size: int, world_size: int, reference_batch_size: int | None) -> float:
    """Linear scaling rule: ``lr`` was tuned for ``reference_batch_size`` scenes per optimiser step."""
    if not reference_batch_size:
        return lr
    return lr * batch_size * world_size / reference_batch_size


class SyncWatch(L.Callback):
    """Counts the host-GPU synchronisations inside each training batch after the first, with torch's own
    check (``torch.cuda.set_sync_debug_mode``): a sync in the step keeps the host from queueing the next
    kernels while the GPU runs (issue 12). ``seen`` lists the warnings' messages; a no-op without CUDA.

    The first batch sets up the optimizer's state and Lightning's metric buffers once, and is not counted.
    """

    def __init__(self):
        self.seen: list[str] = []
        self.watched = 0
        self._catch = None
        self._log: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= 1 and torch.cuda.is_available():
            self._catch = warnings.catch_warnings(record=True)
            self._log = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._leave(counted=True)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._leave(counted=False)

    def _leave(self, counted: bool) -> None:
        if self._catch is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(None, None, None)
        self.seen += [str(w.message) for w in self._log if "synchroniz" in str(w.message)]
        self.watched += counted
        self._catch = None

    def per_step(self) -> float:
        return len(self.seen) / self.watched if self.watched else float("nan")
