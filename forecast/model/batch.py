"""The one batch type every model, loss, metric and exporter speaks: padded tensors with masks."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from forecast.features.sample import Sample


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
    raster: torch.Tensor  # [B, A, C, S, S] uint8 (scaled to [0, 1] inside the model)
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

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """Positional inputs of ``WorldModel.forward`` (and of the exported graph), in order."""
        return (self.hist, self.hist_mask, self.agent_type, self.pose, self.raster, self.agent_mask, self.plan,
                self.plan_mask)


MODEL_INPUT_NAMES = ("hist", "hist_mask", "agent_type", "pose", "raster", "agent_mask", "plan", "plan_mask")
MODEL_OUTPUT_NAMES = ("traj", "scale", "prob")


def collate(samples: list[Sample], future_steps: int | None = None) -> Batch:
    """Pad samples to the largest agent count of the batch."""
    b = len(samples)
    a = max(s.num_agents for s in samples)
    s0 = samples[0]
    tf = future_steps if future_steps is not None else (s0.future.shape[1] if s0.future is not None else 0)

    def pad(get, shape, dtype, fill=0):
        out = np.full((b, a, *shape), fill, dtype=dtype)
        for i, s in enumerate(samples):
            v = get(s)
            out[i, : len(v)] = v
        return torch.from_numpy(out)

    has_future = all(s.future is not None for s in samples)
    return Batch(
        hist=pad(lambda s: s.hist, s0.hist.shape[1:], np.float32),
        hist_mask=pad(lambda s: s.hist_mask, s0.hist_mask.shape[1:], bool),
        agent_type=pad(lambda s: s.agent_type, (), np.int64),
        pose=pad(lambda s: s.pose, (4,), np.float32),
        raster=pad(lambda s: s.raster, s0.raster.shape[1:], np.uint8),
        agent_mask=pad(lambda s: s.agent_mask, (), bool),
        target_mask=pad(lambda s: s.target_mask, (), bool),
        plan=torch.zeros(b, a, tf, 2),
        plan_mask=torch.zeros(b, a, dtype=torch.bool),
        future=pad(lambda s: s.future, (tf, 2), np.float32) if has_future else None,
        future_mask=pad(lambda s: s.future_mask, (tf,), bool) if has_future else None,
    )
