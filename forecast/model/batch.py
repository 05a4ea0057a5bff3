"""The one batch type every model, loss, metric and exporter speaks: padded tensors with masks.

Rasters come in one of two layouts. *Padded* ``[B, A, C, S, S]``: every scene's rasters padded to
the batch's largest agent count (the exported graph's input). *Packed* ``[N, C, S, S]``: the
rasters of the real agents only, scene after scene, in the row-major order of ``agent_mask``'s
True entries, optionally followed by padding rows that nothing reads. The data loader ships the
packed layout: with about 12 agents per scene padded to 25 or more, the padded one was mostly
zeros that every batch built, copied through shared memory and encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.utils.data

from forecast.data.types import AgentType
from forecast.features.sample import Sample

SIGNAL = int(AgentType.TRAFFIC_SIGNAL)


@dataclass
class Batch:
    """B scenes padded to A agents. Positions in each agent's frame at t0 (metres).

    ``plan`` is the optional action: a planned future for some agents (``plan_mask``), in their
    own frame, that the rollout follows for them and conditions everyone else on.
    """

    hist: torch.Tensor  # [B, A, T_h, F] float32
    hist_mask: torch.Tensor  # [B, A, T_h] bool
    agent_type: torch.Tensor  # [B, A] int64
    pose: torch.Tensor  # [B, A, 4] float32, scene frame (x/scale, y/scale, cos, sin)
    raster: torch.Tensor  # [B, A, C, S, S] uint8 padded, or [N, C, S, S] packed (module docstring); scaled to [0, 1] in the model
    agent_mask: torch.Tensor  # [B, A] bool, False = padding
    target_mask: torch.Tensor  # [B, A] bool, scored agents
    plan: torch.Tensor  # [B, A, T_f, 2] float32
    plan_mask: torch.Tensor  # [B, A] bool
    future: torch.Tensor | None = None  # [B, A, T_f, 2] float32
    future_mask: torch.Tensor | None = None  # [B, A, T_f] bool

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                        for f in fields(self)})

    @property
    def size(self) -> int:
        return self.hist.shape[0]

    @property
    def packed(self) -> bool:
        """True when ``raster`` holds the real agents' rasters only (``[N, C, S, S]``)."""
        return self.raster.dim() == 4

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """Positional inputs of ``WorldModel.forward`` (and of the exported graph), in order."""
        return (self.hist, self.hist_mask, self.agent_type, self.pose, self.raster, self.agent_mask, self.plan,
                self.plan_mask)


MODEL_INPUT_NAMES = ("hist", "hist_mask", "agent_type", "pose", "raster", "agent_mask", "plan", "plan_mask")
MODEL_OUTPUT_NAMES = ("traj", "scale", "prob")


def batch_empty(shape: tuple[int, ...], dtype: torch.dtype | type) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory already (as torch's
    ``default_collate`` does), so sending it to the main process does not copy it again."""
    if not isinstance(dtype, torch.dtype):
        dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape, dtype=np.int64)), device=elem.device)
    return elem.new(storage).view(shape)


def collate(samples: list[Sample], future_steps: int | None = None, pack_rasters: bool = False,
            raster_alloc: Callable[[tuple[int, ...]], torch.Tensor] | None = None) -> Batch:
    """Pad samples to the largest agent count of the batch.

    pack_rasters: ship the rasters packed (``[N, C, S, S]``, the real agents only, traffic signals
    left out: ``raster_mask``) rather than padded; every other field is padded either way (they are small).
    raster_alloc: makes the uninitialised uint8 raster tensor of a shape (the loader's reused shared
    memory, ``forecast.training.raster_pool``); default ``batch_empty``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    alloc = raster_alloc or (lambda shape: batch_empty(shape, torch.uint8))
    b = len(samples)
    a = max(s.num_agents for s in samples)
    s0 = samples[0]
    tf = future_steps if future_steps is not None else (s0.future.shape[1] if s0.future is not None else 0)
    for s in samples:
        if s.raster.shape[1:] != s0.raster.shape[1:] or len(s.raster) != s.num_agents:
            raise ValueError(f"sample {s.scenario_id!r} t0={s.t0}: raster {tuple(s.raster.shape)} does not match "
                             f"{s.num_agents} agents of rasters {tuple(s0.raster.shape[1:])}")

    def pad(get, shape, dtype, fill=0, make=None):
        t = make((b, a, *shape)) if make else batch_empty((b, a, *shape), dtype)
        out = t.numpy()
        for i, s in enumerate(samples):  # every byte written once: the rows, then only the padding
            v = get(s)
            out[i, : len(v)] = v
            out[i, len(v) :] = fill
        return t

    if pack_rasters:
        keep = [np.flatnonzero(raster_mask(s.agent_mask, s.agent_type)) for s in samples]  # the rows the model unpacks
        raster = alloc((sum(len(k) for k in keep), *s0.raster.shape[1:]))
        out, at = raster.numpy(), 0
        for s, k in zip(samples, keep, strict=True):  # straight into the (shared-memory) batch
            out[at : at + len(k)] = s.raster if len(k) == len(s.raster) else s.raster[k]  # no gather without signals
            at += len(k)
    else:
        raster = pad(lambda s: s.raster, s0.raster.shape[1:], np.uint8, make=alloc)

    has_future = all(s.future is not None for s in samples)
    return Batch(
        hist=pad(lambda s: s.hist, s0.hist.shape[1:], np.float32),
        hist_mask=pad(lambda s: s.hist_mask, s0.hist_mask.shape[1:], bool),
        agent_type=pad(lambda s: s.agent_type, (), np.int64),
        pose=pad(lambda s: s.pose, (4,), np.float32),
        raster=raster,
        agent_mask=pad(lambda s: s.agent_mask, (), bool),
        target_mask=pad(lambda s: s.target_mask, (), bool),
        plan=torch.zeros(b, a, tf, 2),
        plan_mask=torch.zeros(b, a, dtype=torch.bool),
        future=pad(lambda s: s.future, (tf, 2), np.float32) if has_future else None,
        future_mask=pad(lambda s: s.future_mask, (tf,), bool) if has_future else None,
    )


def raster_mask(agent_mask: torch.Tensor | np.ndarray, agent_type: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """[B, A] (or a sample's [A]) bool: the slots whose rasters the packed layout ships: real agents other
    than traffic signals. ``collate`` packs by it and the model unpacks by it, so the two cannot disagree.

    A closed signal's own raster is empty (``forecast.features.raster``), so the model gives it the
    features of an empty raster, as it does padding, without the loader shipping its zeros: in a
    signalised scene signals are a fifth of the agents, and rasters most of a batch's bytes.
    """
    return agent_mask & (agent_type != SIGNAL)


def padded_rasters(raster: torch.Tensor, agent_mask: torch.Tensor, agent_type: torch.Tensor) -> torch.Tensor:
    """Packed rasters ``[N, C, S, S]`` -> padded ``[B, A, C, S, S]`` (zeros for padding and traffic signals),
    on their device. A padded ``[B, A, C, S, S]`` input comes back as it is.
    """
    if raster.dim() == 5:
        return raster
    flat, rows = packed_rows(raster_mask(agent_mask, agent_type))
    out = raster[rows] * flat.to(raster.dtype)[:, None, None, None]
    return out.reshape(*agent_mask.shape, *raster.shape[1:])


def packed_rows(agent_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(real [B * A] bool, row [B * A] int64): the packed row of each agent slot (0 for padding).

    A cumulative sum, not boolean indexing: no device-to-host synchronisation, fixed shapes.
    """
    flat = agent_mask.reshape(-1)
    return flat, (flat.long().cumsum(0) - 1).clamp(min=0)
