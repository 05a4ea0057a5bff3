"""ETH/UCY benchmark windows and scoring: the scored windows of a split, the constant-velocity baselines
(one rollout, and an untrained fan of 20 chosen on val windows), the model's predictions and best-of-k
ADE/FDE. Pure functions over arrays plus the shared sample builder (``SceneSet``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.features.frames import to_world
from forecast.metrics import min_ade, min_fde

SOURCE = "eth_ucy"


@dataclass
class FanConfig:
    """Candidate fans of constant-velocity rollouts; every pairing of a speed set and a heading set with
    ``len(speeds) * len(headings) == 20`` modes is a candidate, chosen per scene on its val windows."""

    speed_sets: list[list[float]] = field(default_factory=lambda: [[0.6, 0.85, 1.0, 1.15], [0.5, 0.8, 1.0, 1.2],
                                                                   [0.7, 0.9, 1.0, 1.1]])
    heading_sets_deg: list[list[float]] = field(default_factory=lambda: [[-20.0, -10.0, 0.0, 10.0, 20.0],
                                                                         [-30.0, -15.0, 0.0, 15.0, 30.0],
                                                                         [-12.0, -6.0, 0.0, 6.0, 12.0]])

    def candidates(self) -> list[tuple[list[float], list[float]]]:
        out = [(sp, hd) for sp in self.speed_sets for hd in self.heading_sets_deg if len(sp) * len(hd) == 20]
        if not out:
            raise ValueError("benchmark config: fan has no speed/heading pairing with 20 modes")
        return out

@dataclass
class Windows:
    """The scored windows of a split: one pedestrian at one t0 with all T_h + T_f steps present.

    World frame, metres. ``sample``/``slot`` locate the window's agent in ``SceneSet.sample``.
    """

    scenario_id: np.ndarray  # [N] str
    t0: np.ndarray  # [N] int
    track_id: np.ndarray  # [N] str
    hist: np.ndarray  # [N, T_h, 2] float64, t0 - T_h + 1 .. t0
    future: np.ndarray  # [N, T_f, 2] float64, t0 + 1 .. t0 + T_f
    sample: np.ndarray  # [N] int, index into the SceneSet
    slot: np.ndarray  # [N] int, the agent's position in that sample

    def __len__(self) -> int:
        return len(self.t0)

    def per_file(self) -> dict[str, int]:
        names, counts = np.unique(self.scenario_id, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def scored_scenes(store, scene: str, features: FeatureConfig, t0_stride: int = 1, split: str = "test") -> SceneSet:
    infos = select_scenarios(store, split, SOURCE, f"{SOURCE}:{scene}:")
    if not infos:
        raise ValueError(f"no {split} scenarios of scene {scene!r} in store {store.path}")
    return SceneSet(store, infos, features, t0_stride, full_future=True)


def collect_windows(scenes: SceneSet) -> Windows:
    """Every scored (pedestrian, t0) of ``scenes``, checked to be present on all 20 steps."""
    th, tf = scenes.cfg.history_steps, scenes.cfg.future_steps
    sid, t0s, tids, hist, fut, samp, slot = [], [], [], [], [], [], []
    for k, idx in enumerate(scenes.index):
        tr = scenes.tracks[idx.scenario]
        lo, hi = idx.t0 - th + 1, idx.t0 + tf + 1
        for s in np.flatnonzero(idx.scored):
            a = int(idx.agents[s])
            if lo < 0 or hi > tr.num_steps or not tr.present[a, lo:hi].all():
                raise AssertionError(f"window {scenes.infos[idx.scenario].scenario_id} t0={idx.t0} agent {a}: "
                                     f"not present on all {th + tf} steps")
            sid.append(scenes.infos[idx.scenario].scenario_id)
            t0s.append(idx.t0)
            tids.append(str(tr.track_ids[a]) if tr.track_ids is not None else str(a))
            hist.append(tr.xy[a, lo : idx.t0 + 1])
            fut.append(tr.xy[a, idx.t0 + 1 : hi])
            samp.append(k)
            slot.append(s)
    n = len(t0s)
    return Windows(
        scenario_id=np.array(sid, dtype=object),
        t0=np.array(t0s, np.int64),
        track_id=np.array(tids, dtype=object),
        hist=np.array(hist, np.float64).reshape(n, th, 2),
        future=np.array(fut, np.float64).reshape(n, tf, 2),
        sample=np.array(samp, np.int64),
        slot=np.array(slot, np.int64),
    )


def constant_velocity_world(hist: np.ndarray, future_steps: int) -> np.ndarray:
    """The last observed step extrapolated: hist [N, T_h, 2] -> one mode [N, 1, T_f, 2] (world, metres)."""
    last = hist[:, -1]
    step = hist[:, -1] - hist[:, -2]
    k = np.arange(1, future_steps + 1, dtype=np.float64)
    return (last[:, None, :] + step[:, None, :] * k[None, :, None])[:, None]


def constant_velocity_fan(hist: np.ndarray, future_steps: int, speeds: list[float], headings_deg: list[float]) -> np.ndarray:
    """The last observed step extrapolated at every speed factor x heading offset (untrained coverage).

    hist [N, T_h, 2] -> [N, len(speeds) * len(headings), T_f, 2] world metres; the step is rotated
    about the last position by each heading offset and scaled by each speed factor.
    """
    step = hist[:, -1] - hist[:, -2]  # [N, 2]
    out = []
    for f in speeds:
        for deg in headings_deg:
            c, sn = math.cos(math.radians(deg)), math.sin(math.radians(deg))
            rot = np.stack([c * step[:, 0] - sn * step[:, 1], sn * step[:, 0] + c * step[:, 1]], -1) * f
            k = np.arange(1, future_steps + 1, dtype=np.float64)
            out.append(hist[:, -1, None, :] + rot[:, None, :] * k[None, :, None])
    return np.stack(out, axis=1)


def choose_fan(windows: Windows, future_steps: int, fan: FanConfig) -> tuple[dict, list[dict]]:
    """The fan candidate with the lowest best-of-20 ADE + FDE on ``windows`` (validation windows)."""
    scored = []
    for speeds, headings in fan.candidates():
        r = score(constant_velocity_fan(windows.hist, future_steps, speeds, headings), windows.future)
        scored.append({"speeds": speeds, "headings_deg": headings, **r})
    best = min(scored, key=lambda r: r["ADE"] + r["FDE"])
    return best, scored


def predict_windows(model, scenes: SceneSet, windows: Windows, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The model's K modes for every window, in world metres: (traj [N, K, T_f, 2], prob [N, K])."""
    import torch

    from forecast.model.batch import collate

    tf = scenes.cfg.future_steps
    order = np.unique(windows.sample)
    traj_out: np.ndarray | None = None
    prob_out: np.ndarray | None = None
    by_sample: dict[int, list[int]] = {}
    for w, k in enumerate(windows.sample):
        by_sample.setdefault(int(k), []).append(w)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            samples = [scenes.sample(int(k)) for k in chunk]
            traj, _, prob = model(*collate(samples, tf).model_inputs())
            traj, prob = traj.double().numpy(), prob.double().numpy()
            if traj_out is None:
                traj_out = np.zeros((len(windows), traj.shape[2], tf, 2))
                prob_out = np.zeros((len(windows), traj.shape[2]))
            for i, (k, s) in enumerate(zip(chunk, samples, strict=True)):
                for w in by_sample[int(k)]:
                    a = int(windows.slot[w])
                    if not s.target_mask[a]:
                        raise AssertionError(f"window {w}: agent slot {a} of sample {k} is not a scored target")
                    traj_out[w] = to_world(traj[i, a][None], s.origin[a][None], np.array([s.heading[a]]))[0]
                    prob_out[w] = prob[i, a]
    if traj_out is None:
        raise ValueError("no windows to predict")
    return traj_out, prob_out


def score(pred: np.ndarray, gt: np.ndarray, prob: np.ndarray | None = None, k: int | None = None) -> dict[str, float]:
    """Mean ADE / FDE over windows with ``forecast.metrics`` (min over the modes kept by ``k``)."""
    return {"ADE": float(np.mean(min_ade(pred, gt, prob=prob, k=k))),
            "FDE": float(np.mean(min_fde(pred, gt, prob=prob, k=k)))}
