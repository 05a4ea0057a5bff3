"""Raw agent tracks in world coordinates: the input of the sample builder, in training and in the car."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast.data.types import AgentType
from forecast.features.frames import wrap_angle


@dataclass(frozen=True)
class AgentTracks:
    """A scene's agents over time, world frame, padded ``[A, T]``.

    Missing observations have ``present`` False (their values are ignored). Heading may be
    NaN where unknown; it is then taken from the motion observed so far.
    """

    xy: np.ndarray  # [A, T, 2] float64, metres
    heading: np.ndarray  # [A, T] float64, radians CCW from +x, NaN = unknown
    present: np.ndarray  # [A, T] bool
    agent_type: np.ndarray  # [A] int64, AgentType
    dt: float  # seconds per step
    track_ids: np.ndarray | None = None  # [A] str

    @property
    def num_agents(self) -> int:
        return self.xy.shape[0]

    @property
    def num_steps(self) -> int:
        return self.xy.shape[1]

    @classmethod
    def from_scenario(cls, scenario) -> AgentTracks:
        """From a ``forecast.data.Scenario`` (store rows)."""
        return cls(
            xy=scenario.xy,
            heading=scenario.heading,
            present=scenario.present,
            agent_type=scenario.agent_type.astype(np.int64),
            dt=scenario.info.dt,
            track_ids=scenario.track_ids,
        )

    def resample(self, dt: float) -> AgentTracks:
        """Every n-th step when ``dt`` is a whole multiple of ours; no interpolation (it would hide gaps)."""
        n = resample_step(self.dt, dt)
        if n == 1:
            return self
        return AgentTracks(self.xy[:, ::n], self.heading[:, ::n], self.present[:, ::n], self.agent_type, dt,
                           self.track_ids)


def resample_step(from_dt: float, to_dt: float) -> int:
    """Every how many steps tracks at ``from_dt`` seconds are read to be at ``to_dt`` (a whole number)."""
    ratio = to_dt / from_dt
    n = int(round(ratio))
    if abs(ratio - n) > 1e-6 or n < 1:
        raise ValueError(
            f"cannot resample tracks at dt={from_dt:g} s to dt={to_dt:g} s: only whole-multiple downsampling is supported"
        )
    return n


def causal_velocity(xy: np.ndarray, present: np.ndarray, dt: float, max_gap: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Backward-difference velocity from past and present only: v_t = (p_t - p_s) / ((t - s) dt).

    s is the latest observed step before t, at most ``max_gap`` steps back, so a dropped frame
    does not erase the velocity (and nothing is filled from the future). xy: [A, T, 2];
    present: [A, T]. Returns (velocity [A, T, 2] m/s, known [A, T] bool).
    """
    a, t = present.shape
    steps = np.arange(t)[None, :]
    last_seen = np.where(present, steps, -1)
    np.maximum.accumulate(last_seen, axis=1, out=last_seen)
    prev = np.full((a, t), -1)
    prev[:, 1:] = last_seen[:, :-1]  # latest observed step strictly before t
    known = present & (prev >= 0) & (steps - prev <= max_gap)
    prev_xy = np.take_along_axis(xy, np.maximum(prev, 0)[..., None], axis=1)
    gap = np.maximum(steps - prev, 1)[..., None] * dt
    v = np.where(known[..., None], np.nan_to_num((xy - prev_xy) / gap), 0.0)
    return v, known


def causal_heading(heading: np.ndarray, velocity: np.ndarray, known_v: np.ndarray, present: np.ndarray,
                   min_speed: float = 0.3) -> np.ndarray:
    """Heading at every step from information at or before it.

    The source heading where given; else the direction of motion when moving faster than
    ``min_speed`` m/s; else the last heading known so far; else 0. heading: [A, T]; velocity
    [A, T, 2]. Returns [A, T] radians.
    """
    speed = np.hypot(velocity[..., 0], velocity[..., 1])
    from_motion = np.arctan2(velocity[..., 1], velocity[..., 0])
    h = np.where(np.isfinite(heading) & present, heading, np.where(known_v & (speed > min_speed), from_motion, np.nan))
    # forward fill along time (past -> present only)
    a, t = h.shape
    idx = np.where(np.isfinite(h), np.arange(t)[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(np.nan_to_num(h), np.maximum(idx, 0), axis=1)
    return wrap_angle(np.where(idx >= 0, filled, 0.0))


def check_tracks(tracks: AgentTracks) -> None:
    """Raise ValueError with a clear message for input the sample builder cannot trust."""
    a = tracks.num_agents
    if a == 0:
        raise ValueError("empty scene: no agents")
    if tracks.xy.ndim != 3 or tracks.xy.shape[2] != 2:
        raise ValueError(f"xy must have shape [A, T, 2], got {tracks.xy.shape}")
    if tracks.xy.dtype.kind != "f":
        raise ValueError(f"xy must be floating point metres, got dtype {tracks.xy.dtype}")
    if tracks.present.shape != tracks.xy.shape[:2]:
        raise ValueError(f"present must have shape {tracks.xy.shape[:2]}, got {tracks.present.shape}")
    bad = tracks.present & ~np.isfinite(tracks.xy).all(-1)
    if bad.any():
        i, t = np.argwhere(bad)[0]
        tid = tracks.track_ids[i] if tracks.track_ids is not None else i
        raise ValueError(f"NaN or infinite position for agent {tid} at step {t} (marked present)")
    known = {int(t) for t in AgentType}
    unknown = sorted(set(np.unique(tracks.agent_type).tolist()) - known)
    if unknown:
        raise ValueError(f"unknown agent type code(s) {unknown}; known: { {t.label: int(t) for t in AgentType} }")
    if tracks.dt <= 0:
        raise ValueError(f"dt must be positive seconds, got {tracks.dt}")
