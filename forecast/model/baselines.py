"""Physics baselines behind the same predictor interface as the learned model.

Both read only the history (agent frame at t0) and return one mode with probability 1.
"""

from __future__ import annotations

import numpy as np
import torch

from forecast.features.sample import Sample


def constant_velocity(hist: np.ndarray | torch.Tensor, future_steps: int, dt: float) -> np.ndarray | torch.Tensor:
    """hist [..., T_h, F] (x, y, vx, vy, ...) -> positions [..., T_f, 2] moving at the t0 velocity.

    numpy in float64; a torch tensor stays on its device, in its dtype (the training's validation
    yardstick: no copy to the host, no sync on a GPU)."""
    if isinstance(hist, torch.Tensor):
        v = hist[..., -1, None, 2:4]
        t = torch.arange(1, future_steps + 1, device=hist.device, dtype=hist.dtype)[:, None] * dt
    else:
        v = hist[..., -1, None, 2:4].astype(np.float64)
        t = np.arange(1, future_steps + 1)[:, None] * dt
    return hist[..., -1, None, 0:2] + v * t


def ctrv(hist: np.ndarray, hist_mask: np.ndarray, future_steps: int, dt: float, window: int = 5) -> np.ndarray:
    """Constant turn rate and velocity: the heading change over the last ``window`` observed steps.

    hist [A, T_h, F], hist_mask [A, T_h]. Returns [A, T_f, 2] in the agent frame (heading 0 at t0).
    """
    a = hist.shape[0]
    speed = np.hypot(hist[:, -1, 2], hist[:, -1, 3])
    dh = np.arctan2(hist[:, :, 5], hist[:, :, 4])  # heading relative to t0
    yaw_rate = np.zeros(a)
    for i in range(a):
        idx = np.flatnonzero(hist_mask[i])[-window:]
        if len(idx) >= 2:
            yaw_rate[i] = (dh[i, idx[-1]] - dh[i, idx[0]]) / ((idx[-1] - idx[0]) * dt)
    yaw_rate = np.where(speed > 0.5, np.clip(yaw_rate, -1.5, 1.5), 0.0)
    t = np.arange(1, future_steps + 1) * dt
    theta = yaw_rate[:, None] * t[None, :]  # [A, T_f]
    vel = np.stack([np.cos(theta), np.sin(theta)], -1) * speed[:, None, None]
    return hist[:, -1, None, 0:2] + np.cumsum(vel * dt, axis=1)


class BaselinePredictor:
    """``predict(sample) -> (traj [A, K=1, T_f, 2], prob [A, 1])`` in the agent frame."""

    def __init__(self, name: str, future_steps: int, dt: float):
        if name not in ("constant_velocity", "ctrv"):
            raise ValueError(f"unknown baseline {name!r}; known: constant_velocity, ctrv")
        self.name, self.future_steps, self.dt = name, future_steps, dt

    def predict(self, sample: Sample, plan: np.ndarray | None = None,
                plan_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        del plan, plan_mask  # physics baselines ignore actions
        if self.name == "constant_velocity":
            traj = constant_velocity(sample.hist, self.future_steps, self.dt)
        else:
            traj = ctrv(sample.hist, sample.hist_mask, self.future_steps, self.dt)
        return traj[:, None].astype(np.float32), np.ones((len(traj), 1), np.float32)
