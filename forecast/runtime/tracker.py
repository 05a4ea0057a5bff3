"""Streaming runtime: the car calls ``SceneTracker.update`` once per tick with what perception tracked.

Each track's recent history lives in fixed-size ring buffers (one row per track slot, one column
per step of the bundle's history window), so a tick costs the same however long the drive has
been. ``predict`` hands the window to the batch ``Predictor`` (the training code's sample builder
and the verified onnxruntime graph), so replaying a stored scenario tick by tick gives exactly the
batch predictions. No torch here.

Tracks that appear get a slot; tracks that miss ticks keep their slot, their missing steps stay
missing (never interpolated); a track unseen for a whole history window is forgotten; an id that
comes back as another agent type, or from a position it could not have reached, starts a new track
(perception stacks reuse ids).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from forecast.features.tracks import AgentTracks
from forecast.runtime.errors import EmptySceneError, InputError, InvalidTracksError, TooManyAgentsError
from forecast.runtime.predictor import Prediction, Predictor
from forecast.runtime.validation import plain


class TickError(InputError):
    """A tick that cannot be applied: steps going backwards, duplicate track ids, bad detection arrays."""


@dataclass(frozen=True)
class Detections:
    """One tick of perception output, N tracked agents, world frame.

    heading and velocity are optional (NaN where unknown): heading is taken from velocity when only
    velocity is given and the agent moves faster than ``SceneTracker.heading_min_speed``; with
    neither, the sample builder takes it from the observed motion.
    """

    track_id: np.ndarray  # [N] str or int, perception's track ids
    agent_type: np.ndarray  # [N] int, AgentType codes
    xy: np.ndarray  # [N, 2] float, metres, world frame
    heading: np.ndarray | None = None  # [N] float, radians CCW from +x, NaN = unknown
    velocity: np.ndarray | None = None  # [N, 2] float, m/s, world frame, NaN = unknown

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.array([], dtype=str), np.zeros(0, np.int64), np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.track_id)


@dataclass(frozen=True)
class TickStats:
    """What one update did (for logs and tests)."""

    step: int
    agents: int  # detected this tick
    new: int  # tracks that started this tick (including restarted ids)
    restarted: int  # ids that came back as another agent (type change or impossible jump)
    forgotten: int  # tracks dropped for being unseen a whole history window


class SceneTracker:
    """Per-tick scene state for the predictor of a bundle.

    ``update(detections, step=None)`` applies one tick (``step`` defaults to the previous step plus
    one; pass it to say that ticks were skipped). ``predict(...)`` forecasts every agent detected in
    the latest tick, in the order of that tick's detections (the first one defines the scene frame:
    put the ego vehicle first). ``capacity`` bounds the tracks remembered at once.
    """

    def __init__(self, predictor: Predictor, capacity: int | None = None, max_speed: float = 70.0,
                 heading_min_speed: float = 0.3):
        self.predictor = predictor
        self.dt = predictor.features.dt
        self.window = predictor.features.history_steps
        self.capacity = int(capacity or 2 * predictor.max_agents)
        self.max_speed = float(max_speed)  # m/s: a faster apparent jump means the id now names another agent
        self.heading_min_speed = float(heading_min_speed)
        h, c = self.window, self.capacity
        self._xy = np.full((c, h, 2), np.nan)
        self._heading = np.full((c, h), np.nan)
        self._present = np.zeros((c, h), bool)
        self._type = np.zeros(c, np.int64)
        self._last_seen = np.full(c, np.iinfo(np.int64).min // 2)
        self._last_xy = np.zeros((c, 2))
        self._ids: list[object] = [None] * c
        self._occupied = np.zeros(c, bool)
        self._slot_of: dict[object, int] = {}
        self._free = list(range(c - 1, -1, -1))  # a stack: lowest slot first
        self._known_types = np.array(sorted(predictor.agent_types.values()))
        self.step: int | None = None
        self._current = np.zeros(0, np.int64)  # slots detected in the latest tick, in detection order

    # -- state --

    @property
    def num_tracks(self) -> int:
        """Tracks remembered (seen within the last history window)."""
        return len(self._slot_of)

    @property
    def current_ids(self) -> list:
        """Track ids detected in the latest tick, in detection order."""
        return [self._ids[s] for s in self._current]

    def reset(self) -> None:
        """Forget everything (a new drive, a relocalised map)."""
        self.__init__(self.predictor, self.capacity, self.max_speed, self.heading_min_speed)

    def update(self, detections: Detections, step: int | None = None) -> TickStats:
        """Apply one tick of detections (see ``Detections``). ``step`` counts ticks of the bundle's dt."""
        step = self._next_step(step)
        ids, types, xy, heading = self._check(detections)  # nothing changes before the tick is known good
        h = self.window
        # Columns of the ticks from the previous step (exclusive) to this one: their old contents
        # fall out of the window; a skipped tick leaves its column missing.
        first = step - h + 1 if self.step is None else max(self.step + 1, step - h + 1)
        cols = np.arange(first, step + 1) % h
        self._present[:, cols] = False
        self._xy[:, cols] = np.nan
        self._heading[:, cols] = np.nan
        forgotten = self._forget(step)

        slot_of = self._slot_of
        slots = np.fromiter((slot_of.get(tid, -1) for tid in ids), np.int64, len(ids))
        known = slots >= 0
        restarted = 0
        if known.any():
            old = slots[known]
            gap = (step - self._last_seen[old]) * self.dt
            jump = np.hypot(*(xy[known] - self._last_xy[old]).T)
            reused = (self._type[old] != types[known]) | (jump > self.max_speed * gap + 1e-9)
            if reused.any():
                self._clear(old[reused])
                restarted = int(reused.sum())
            self._last_seen[old] = step  # seen now: never evicted to make room below
        new = np.flatnonzero(~known)
        for i in new.tolist():
            slots[i] = self._allocate(ids[i], step)
        col = step % h
        self._xy[slots, col] = xy
        self._heading[slots, col] = heading
        self._present[slots, col] = True
        self._type[slots] = types
        self._last_seen[slots] = step
        self._last_xy[slots] = xy
        self._current = slots
        self.step = step
        return TickStats(step, len(ids), len(new) + restarted, restarted, forgotten)

    def tracks(self) -> tuple[AgentTracks, int]:
        """The history window of the agents detected in the latest tick, in detection order.

        Returns (tracks ``[A, T_h]`` at the bundle's dt, world frame, oldest step first; t0 = T_h - 1).
        """
        if self.step is None:
            raise EmptySceneError("no tick yet: call update() first")
        h = self.window
        order = (np.arange(self.step - h + 1, self.step + 1)) % h
        s = self._current
        ids = np.array([str(self._ids[k]) for k in s], dtype=str)
        tracks = AgentTracks(self._xy[s][:, order], self._heading[s][:, order], self._present[s][:, order],
                             self._type[s].copy(), self.dt, ids)
        return tracks, h - 1

    def predict(self, map_layers: dict | None = None, map_id: str | None = None, plan: np.ndarray | None = None,
                plan_agent: str | int | None = None) -> Prediction:
        """Forecast every agent of the latest tick (see ``Predictor.predict``; ``plan_agent`` is a track id).

        The prediction's ``t0`` is the tracker's step and ``agent_index`` the rows of ``tracks()``.
        """
        tracks, t0 = self.tracks()
        if len(self._current) == 0:
            raise EmptySceneError(f"no agent detected at step {self.step}")
        if plan_agent is not None and not isinstance(plan_agent, str):
            plan_agent = str(plan_agent)
        pred = self.predictor.predict(tracks, t0, map_layers=map_layers, plan=plan, plan_agent=plan_agent,
                                      map_id=map_id)
        return dataclasses.replace(pred, t0=int(self.step))

    # -- internals --

    def _next_step(self, step: int | None) -> int:
        if step is None:
            return 0 if self.step is None else self.step + 1
        if not isinstance(step, int | np.integer):
            raise TickError(f"step must be an integer tick count, got {step!r}")
        if self.step is not None and step <= self.step:
            raise TickError(f"step {step} is not after the previous step {self.step} (ticks must move forward)")
        return int(step)

    def _check(self, d: Detections) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(d, Detections):
            raise TickError(f"expected forecast.runtime.tracker.Detections, got {type(d).__name__}")
        n = len(d.track_id)
        xy = np.asarray(d.xy)
        if xy.shape != (n, 2) or xy.dtype.kind != "f":
            raise InvalidTracksError(f"xy must be float metres of shape ({n}, 2), got {xy.dtype} {xy.shape}")
        if not np.isfinite(xy).all():
            bad = int(np.flatnonzero(~np.isfinite(xy).all(1))[0])
            raise InvalidTracksError(f"NaN or infinite position for track {plain(d.track_id[bad])!r} (row {bad})")
        types = np.asarray(d.agent_type)
        if types.shape != (n,) or types.dtype.kind not in "iu":
            raise InvalidTracksError(f"agent_type must be integer AgentType codes of shape ({n},), got "
                                     f"{types.dtype} {types.shape}")
        unknown = np.setdiff1d(types, self._known_types)
        if len(unknown):
            raise InvalidTracksError(f"unknown agent type code(s) {unknown.tolist()}; this bundle knows "
                                     f"{self.predictor.agent_types}")
        heading = np.full(n, np.nan) if d.heading is None else np.asarray(d.heading, dtype=np.float64)
        if heading.shape != (n,):
            raise InvalidTracksError(f"heading must have shape ({n},), got {heading.shape}")
        if d.velocity is not None:
            v = np.asarray(d.velocity, dtype=np.float64)
            if v.shape != (n, 2):
                raise InvalidTracksError(f"velocity must have shape ({n}, 2), got {v.shape}")
            speed = np.hypot(v[:, 0], v[:, 1])
            from_v = np.where(speed > self.heading_min_speed, np.arctan2(v[:, 1], v[:, 0]), np.nan)
            heading = np.where(np.isfinite(heading), heading, from_v)
        ids = d.track_id.tolist() if isinstance(d.track_id, np.ndarray) else list(d.track_id)
        if len(set(ids)) != n:
            dup = sorted({str(t) for t in ids if ids.count(t) > 1})
            raise TickError(f"duplicate track id(s) in one tick: {dup}")
        if n > min(self.predictor.max_agents, self.capacity):
            raise TooManyAgentsError(f"{n} agents detected in one tick; this tracker holds at most "
                                     f"{min(self.predictor.max_agents, self.capacity)} (bundle max_agents "
                                     f"{self.predictor.max_agents}, capacity {self.capacity})")
        return ids, types.astype(np.int64), xy.astype(np.float64), heading

    def _forget(self, step: int) -> int:
        """Free the slots of tracks unseen for a whole history window."""
        gone = np.flatnonzero(self._occupied & (self._last_seen <= step - self.window))
        for s in gone.tolist():
            self._release(s)
        return len(gone)

    def _allocate(self, tid, step: int) -> int:
        if not self._free:
            # Full: evict the track seen longest ago (never one seen in this tick: those have
            # last_seen == step, and a tick holds at most ``capacity`` agents).
            candidates = np.flatnonzero(self._occupied & (self._last_seen < step))
            self._release(int(candidates[np.argmin(self._last_seen[candidates])]))
        s = self._free.pop()
        self._ids[s] = tid
        self._occupied[s] = True
        self._last_seen[s] = step
        self._slot_of[tid] = s
        self._clear(np.array([s]))
        return s

    def _clear(self, slots: np.ndarray) -> None:
        self._xy[slots] = np.nan
        self._heading[slots] = np.nan
        self._present[slots] = False

    def _release(self, s: int) -> None:
        del self._slot_of[self._ids[s]]
        self._ids[s] = None
        self._occupied[s] = False
        self._clear(np.array([s]))
        self._free.append(s)
