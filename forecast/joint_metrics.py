"""Joint (scene-level) metrics, as Argoverse 2's multi-agent task defines them (pure numpy).

Shapes and conventions as in :mod:`forecast.metrics`, whose input checks and per-mode errors this
module reuses.
"""

from __future__ import annotations

import numpy as np

from forecast.metrics import _check_inputs, _per_mode_errors

__all__ = ["joint_metrics", "summarise_joint"]

def joint_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    scene: np.ndarray,
    valid: np.ndarray | None = None,
    miss_threshold: float = 2.0,
) -> dict[str, np.ndarray]:
    """Scene-level metrics over modes shared by all agents of a scene (a *world* in AV2's terms).

    ``pred`` ``[N, K, T, 2]``: mode ``k`` of every agent of a scene is one joint future (the world
    model rolls the modes out jointly); ``scene`` ``[N]``: a scene id per agent. As in Argoverse 2's
    multi-agent task, per scene the *best world* is the mode with the lowest average FDE over the
    scene's agents; then ``avgMinFDE`` is that average, ``avgMinADE`` the average ADE of the same
    mode, and ``actorMR`` the share of the scene's agents whose FDE in it exceeds ``miss_threshold``
    (strict). Agents without valid steps are ignored; scenes without such agents are left out.

    Returns per scene (``S`` scenes, in ``np.unique(scene)`` order of the kept ones): ``scene``
    ``[S]``, ``avgMinADE`` / ``avgMinFDE`` / ``actorMR`` ``[S]`` float and ``n_agents`` ``[S]`` int.
    """
    pred, gt, valid = _check_inputs(pred, gt, valid)
    scene = np.asarray(scene)
    if scene.shape != (pred.shape[0],):
        raise ValueError(f"scene must have shape [N] = {(pred.shape[0],)}, got {scene.shape}")
    ade, fde, any_valid = _per_mode_errors(pred, gt, valid)
    ids, inverse = np.unique(scene[any_valid], return_inverse=True)
    ade, fde = ade[any_valid], fde[any_valid]
    s, k = len(ids), pred.shape[1]
    count = np.bincount(inverse, minlength=s).astype(np.float64)  # [S]
    sum_ade = np.zeros((s, k))
    sum_fde = np.zeros((s, k))
    np.add.at(sum_ade, inverse, ade)
    np.add.at(sum_fde, inverse, fde)
    avg_fde = sum_fde / count[:, None]
    best = np.argmin(avg_fde, axis=1)  # [S] ties -> lower index
    missed = (fde > miss_threshold).astype(np.float64)  # [N', K]
    miss_of_best = missed[np.arange(len(inverse)), best[inverse]]
    actor_mr = np.bincount(inverse, weights=miss_of_best, minlength=s) / count
    rows = np.arange(s)
    return {"scene": ids, "avgMinADE": sum_ade[rows, best] / count, "avgMinFDE": avg_fde[rows, best],
            "actorMR": actor_mr, "n_agents": count.astype(np.int64)}


def summarise_joint(joint: dict[str, np.ndarray]) -> dict[str, float | int | None]:
    """Means over scenes of avgMinADE / avgMinFDE (each scene weighs the same, as in AV2) and the
    actor miss rate over all actors (``sum missed / sum actors``); ``None`` without scenes."""
    n = int(len(joint["scene"]))
    if n == 0:
        return {"n_scenes": 0, "avgMinADE": None, "avgMinFDE": None, "actorMR": None}
    actors = joint["n_agents"].sum()
    return {"n_scenes": n, "avgMinADE": float(joint["avgMinADE"].mean()), "avgMinFDE": float(joint["avgMinFDE"].mean()),
            "actorMR": float((joint["actorMR"] * joint["n_agents"]).sum() / actors)}
