"""Exponential moving average of the weights (Lightning's ``WeightAveraging`` with torch's EMA).

Validation, the best checkpoint and ``model.pt`` see the averaged weights; the optimiser keeps
stepping the raw ones (a resumed run restores both from ``last.ckpt``).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_avg_fn


class EMA(WeightAveraging):
    """``decay`` per optimiser step (0.995: the last ~200 steps count most); updated after every step."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1), got {decay}")
        super().__init__(use_buffers=True, avg_fn=get_ema_avg_fn(decay))
        self.decay = decay
