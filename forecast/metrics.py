"""Trajectory-forecasting metrics (pure numpy), following the Argoverse 2 motion-forecasting evaluation.

Conventions used throughout
---------------------------
``N`` agents, ``K`` predicted modes per agent, ``T`` future steps, coordinates in metres.

* ``pred``  ``[N, K, T, 2]`` float: predicted trajectories.
* ``gt``    ``[N, T, 2]`` float: ground-truth future.
* ``prob``  ``[N, K]`` float: mode probabilities; every row must be non-negative, finite and sum to 1
  (checked by :func:`validate_probabilities`; probabilities are never renormalised silently).
* ``valid`` ``[N, T]`` bool, optional: steps at which the ground truth exists. ``None`` means every step
  is valid. Errors are averaged over valid steps only and the *final* displacement error is taken at the
  last valid step of each agent. Values of ``pred``/``gt`` at invalid steps are ignored (they may be NaN);
  non-finite values at valid steps raise ``ValueError``.
  Agents without any valid step get NaN in every per-agent metric; :func:`aggregate` skips NaN.

Top-k selection (``k``): the ``k`` modes with the highest probability are kept (ties broken by the lower
mode index); ``k=None`` keeps all ``K`` modes and does not need ``prob``; ``k=1`` evaluates only the most
probable mode. Probabilities are *not* renormalised over the kept modes.

Relation to the AV2 reference (``av2.datasets.motion_forecasting.eval.metrics``): AV2's ``compute_ade`` /
``compute_fde`` return per-mode errors ``[K]`` for one agent, ``compute_is_missed_prediction`` flags
``fde > threshold`` (strict), and ``compute_brier_fde`` adds ``(1 - p)^2`` per mode. The AV2 challenge
then reports, per agent, the *best-endpoint* mode (minimal FDE): its FDE (minFDE), its ADE (the
challenge's "minADE"), whether it misses, and its brier-FDE. Here :func:`min_ade` is the common definition
(minimum over modes of ADE, i.e. ADE and FDE may come from different modes), and the AV2-challenge
quantity is :func:`ade_of_best_fde_mode`. Always ``min_ade <= ade_of_best_fde_mode``.

All functions are stateless; inputs are never modified.
"""

from __future__ import annotations

import numpy as np

from forecast.features.frames import norm2

__all__ = [
    "ade_of_best_fde_mode",
    "aggregate",
    "brier_min_fde",
    "calibration_curve",
    "displacement_errors",
    "expected_calibration_error",
    "least_risk_fde",
    "least_risk_mode",
    "min_ade",
    "min_fde",
    "miss_rate",
    "truncate_horizon",
    "validate_probabilities",
]


# --------------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------------


def validate_probabilities(prob: np.ndarray, atol: float = 1e-3) -> np.ndarray:
    """Check that ``prob`` ``[N, K]`` holds one probability distribution per row.

    A row is bad if any entry is non-finite (NaN/inf) or negative, or if the row does not sum to 1
    within ``atol``. Raises ``ValueError`` naming the first bad row; otherwise returns ``prob`` as a
    float64 array (unchanged values, no renormalisation).
    """
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"prob must have shape [N, K], got {p.shape}")
    nonfinite = ~np.isfinite(p).all(axis=1)
    negative = (np.where(np.isfinite(p), p, 0.0) < 0).any(axis=1)
    sums = np.where(np.isfinite(p), p, 0.0).sum(axis=1)
    unnormalised = np.abs(sums - 1.0) > atol
    bad = nonfinite | negative | unnormalised
    if bad.any():
        i = int(np.argmax(bad))
        if nonfinite[i]:
            why = "contains a non-finite value"
        elif negative[i]:
            why = "contains a negative value"
        else:
            why = f"sums to {sums[i]:.6g}, not 1 (atol={atol:g})"
        raise ValueError(f"invalid mode probabilities: row {i} {why}: {p[i].tolist()}")
    return p


def _as_pred(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 4 or pred.shape[-1] != 2:
        raise ValueError(f"pred must have shape [N, K, T, 2], got {pred.shape}")
    return pred


def _check_inputs(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert to arrays, check shapes, and return ``(pred, gt, valid)`` with ``valid`` filled in."""
    pred = _as_pred(pred)
    gt = np.asarray(gt, dtype=np.float64)
    n, _, t, _ = pred.shape
    if gt.shape != (n, t, 2):
        raise ValueError(f"gt must have shape [N, T, 2] = {(n, t, 2)}, got {gt.shape}")
    if valid is None:
        valid = np.ones((n, t), dtype=bool)
    else:
        valid = np.asarray(valid)
        if valid.dtype != bool:
            raise ValueError(f"valid must be a bool array, got dtype {valid.dtype}")
        if valid.shape != (n, t):
            raise ValueError(f"valid must have shape [N, T] = {(n, t)}, got {valid.shape}")
    # The whole array first: a boolean gather copies, and all finite is the common case.
    if not np.isfinite(gt).all() and not np.isfinite(gt[valid]).all():
        raise ValueError("gt has non-finite values at valid steps (mark them invalid in `valid`)")
    if not np.isfinite(pred).all() and not np.isfinite(pred.transpose(0, 2, 1, 3)[valid]).all():
        raise ValueError("pred has non-finite values at valid steps")
    return pred, gt, valid


def _check_prob(prob: np.ndarray, n: int, k_modes: int) -> np.ndarray:
    p = validate_probabilities(prob)
    if p.shape != (n, k_modes):
        raise ValueError(f"prob must have shape [N, K] = {(n, k_modes)}, got {p.shape}")
    return p


def _topk_mask(prob: np.ndarray | None, n: int, k_modes: int, k: int | None) -> np.ndarray:
    """``[N, K]`` bool: the modes that take part (top-k by probability, ties -> lower index)."""
    if k is None:
        return np.ones((n, k_modes), dtype=bool)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= k_modes:
        raise ValueError(f"k must be an int in [1, K={k_modes}] or None, got {k!r}")
    if prob is None:
        raise ValueError("k requires prob (top-k modes are chosen by probability)")
    order = np.argsort(-prob, axis=1, kind="stable")[:, :k]
    mask = np.zeros((n, k_modes), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def _last_valid_index(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last valid step per agent ``[N]`` (0 where none) and ``any_valid`` ``[N]``."""
    t = valid.shape[1]
    any_valid = valid.any(axis=1)
    last = t - 1 - np.argmax(valid[:, ::-1], axis=1)
    return np.where(any_valid, last, 0), any_valid


def _per_mode_errors(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ade [N, K]``, ``fde [N, K]`` (NaN for agents without valid steps) and ``any_valid [N]``."""
    return _errors_to_ade_fde(norm2(pred - gt[:, None]), valid)


def _errors_to_ade_fde(err: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_per_mode_errors`` from the displacements ``err [N, K, T]``."""
    v = valid[:, None, :]
    count = valid.sum(axis=1)  # [N]
    total = np.where(v, err, 0.0).sum(axis=-1)  # [N, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        ade = total / count[:, None]
    last, any_valid = _last_valid_index(valid)
    fde = np.take_along_axis(err, last[:, None, None], axis=-1)[..., 0]  # [N, K]
    ade = np.where(any_valid[:, None], ade, np.nan)
    fde = np.where(any_valid[:, None], fde, np.nan)
    return ade, fde, any_valid


def _best_mode(err: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Index ``[N]`` of the kept mode with the smallest error ``err [N, K]`` (FDE or ADE; ties -> lower index)."""
    masked = np.where(mask, np.nan_to_num(err, nan=np.inf), np.inf)
    return np.argmin(masked, axis=1)


def _prepare(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None,
    k: int | None,
    valid: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Shared front end: returns ``ade [N,K]``, ``fde [N,K]``, ``mask [N,K]``, ``prob``, ``any_valid``."""
    pred, gt, valid = _check_inputs(pred, gt, valid)
    n, k_modes = pred.shape[:2]
    p = None if prob is None else _check_prob(prob, n, k_modes)
    mask = _topk_mask(p, n, k_modes, k)
    ade, fde, any_valid = _per_mode_errors(pred, gt, valid)
    return ade, fde, mask, p, any_valid


def _pick(values: np.ndarray, idx: np.ndarray, any_valid: np.ndarray) -> np.ndarray:
    out = np.take_along_axis(values, idx[:, None], axis=1)[:, 0]
    return np.where(any_valid, out, np.nan)


# --------------------------------------------------------------------------------------------------
# displacement metrics
# --------------------------------------------------------------------------------------------------


def displacement_errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance between every predicted point and the ground truth.

    ``err[n, k, t] = || pred[n, k, t] - gt[n, t] ||_2``, shape ``[N, K, T]``, in metres.
    Steps where ``valid`` is False are set to NaN.
    """
    pred, gt, valid = _check_inputs(pred, gt, valid)
    err = norm2(pred - gt[:, None])
    return np.where(valid[:, None, :], err, np.nan)


def min_ade(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None = None,
    k: int | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """minADE ``[N]``: minimum over the top-k modes of the average displacement error.

    ``ADE[n, k] = mean_{t valid} err[n, k, t]`` and ``minADE[n] = min_{k in top-k} ADE[n, k]``.
    This is the common definition: the mode minimising ADE may differ from the one minimising FDE.
    The AV2-challenge "minADE" (ADE of the best-*endpoint* mode) is :func:`ade_of_best_fde_mode`.
    NaN for agents without valid steps.
    """
    ade, _, mask, _, any_valid = _prepare(pred, gt, prob, k, valid)
    best = _best_mode(ade, mask)
    return _pick(ade, best, any_valid)


def min_fde(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None = None,
    k: int | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """minFDE ``[N]``: minimum over the top-k modes of the final displacement error.

    ``FDE[n, k] = err[n, k, t_last]`` with ``t_last`` the agent's last valid step (the last step when
    ``valid`` is None); ``minFDE[n] = min_{k in top-k} FDE[n, k]`` (identical in AV2).
    NaN for agents without valid steps.
    """
    _, fde, mask, _, any_valid = _prepare(pred, gt, prob, k, valid)
    return _pick(fde, _best_mode(fde, mask), any_valid)


def ade_of_best_fde_mode(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None = None,
    k: int | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """AV2-challenge minADE ``[N]``: the ADE of the top-k mode with the smallest FDE.

    ``b[n] = argmin_{k in top-k} FDE[n, k]`` (ties -> lower index), result ``ADE[n, b[n]]``.
    Differs from :func:`min_ade` (min over modes of ADE) when the best-ADE and best-endpoint modes
    differ; always ``>= min_ade``. NaN for agents without valid steps.
    """
    ade, fde, mask, _, any_valid = _prepare(pred, gt, prob, k, valid)
    return _pick(ade, _best_mode(fde, mask), any_valid)


def miss_rate(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None = None,
    k: int | None = None,
    threshold: float = 2.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-agent miss indicator ``[N]`` (float 0.0/1.0; average it with :func:`aggregate`).

    An agent is missed when the endpoint error of its best top-k mode is *strictly* greater than
    ``threshold`` metres: ``minFDE[n] > threshold`` (as AV2's ``fde > miss_threshold_m``); an error
    exactly equal to the threshold is not a miss. NaN for agents without valid steps.
    """
    fde_best = min_fde(pred, gt, prob=prob, k=k, valid=valid)
    return np.where(np.isnan(fde_best), np.nan, (fde_best > threshold).astype(np.float64))


def brier_min_fde(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray,
    k: int | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """brier-minFDE ``[N]``: ``FDE[n, b] + (1 - prob[n, b])^2`` with ``b`` the best-endpoint top-k mode.

    Same as AV2's per-mode ``compute_brier_fde`` evaluated at the minimal-FDE mode. The probability
    is used as given (not renormalised over the top-k modes). NaN for agents without valid steps.
    """
    if prob is None:
        raise ValueError("brier_min_fde requires prob")
    _, fde, mask, p, any_valid = _prepare(pred, gt, prob, k, valid)
    assert p is not None
    best = _best_mode(fde, mask)
    p_best = np.take_along_axis(p, best[:, None], axis=1)[:, 0]
    return _pick(fde, best, any_valid) + (1.0 - p_best) ** 2


def least_risk_mode(pred: np.ndarray, prob: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The mode of least expected endpoint error under the predicted distribution ``[N]`` (int).

    ``argmin_k sum_j prob[n, j] * || end[n, k] - end[n, j] ||`` with ``end`` the endpoints at the
    agent's last valid step (the last step when ``valid`` is None): the minimum-Bayes-risk single
    future for a consumer that reads one. The most likely mode can lie apart from where the mass is:
    two near modes of 0.3 each beat a lone one of 0.4. Ties -> lower index. Needs no ground truth:
    ``valid`` only says where each agent's endpoint is.
    """
    pred = _as_pred(pred)
    n, k_modes, t = pred.shape[:3]
    p = _check_prob(prob, n, k_modes)
    last = np.full(n, t - 1) if valid is None else _last_valid_index(np.asarray(valid, dtype=bool))[0]
    ends = np.take_along_axis(pred, last[:, None, None, None], axis=2)[:, :, 0]  # [N, K, 2]
    pairwise = norm2(ends[:, :, None] - ends[:, None])  # [N, K, K]
    return np.argmin((pairwise * p[:, None, :]).sum(-1), axis=1)


def least_risk_fde(pred: np.ndarray, gt: np.ndarray, prob: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """FDE ``[N]`` of :func:`least_risk_mode`'s mode (NaN for agents without valid steps)."""
    pred, gt, valid = _check_inputs(pred, gt, valid)
    _, fde, any_valid = _per_mode_errors(pred, gt, valid)
    return _pick(fde, least_risk_mode(pred, prob, valid), any_valid)


def _check_steps(steps: object, t: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= t:
        raise ValueError(f"steps must be an int in [1, T={t}], got {steps!r}")


def truncate_horizon(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None, steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Keep the first ``steps`` future steps: ``(pred[:, :, :steps], gt[:, :steps], valid[:, :steps])``.

    Metrics at a shorter horizon are ``metric(*truncate_horizon(...))``, e.g. at 10 Hz the 1 s / 2 s /
    3 s numbers use ``steps`` = 10 / 20 / 30. ``valid`` may be None (stays None). Returns views.
    """
    pred, gt, valid_full = _check_inputs(pred, gt, valid)
    _check_steps(steps, pred.shape[2])
    return pred[:, :, :steps], gt[:, :steps], None if valid is None else valid_full[:, :steps]


def min_ade_fde_at_horizons(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None,
    steps: np.ndarray,
    k: int | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """minADE and minFDE ``[S, N]`` with the future cut at each of ``steps`` ``[S]``: row s equals
    ``min_ade`` / ``min_fde`` of ``truncate_horizon(pred, gt, valid, steps[s])``, from one computation
    of the displacements (a horizon curve of 30 points costs one metric call, not 60)."""
    pred, gt, valid = _check_inputs(pred, gt, valid)
    n, k_modes, t = pred.shape[:3]
    mask = _topk_mask(None if prob is None else _check_prob(prob, n, k_modes), n, k_modes, k)
    err = norm2(pred - gt[:, None])  # [N, K, T]
    ade_out, fde_out = np.empty((len(steps), n)), np.empty((len(steps), n))
    for i, s in enumerate(steps):
        _check_steps(s, t)
        ade, fde, any_valid = _errors_to_ade_fde(err[:, :, :s], valid[:, :s])
        ade_out[i] = _pick(ade, _best_mode(ade, mask), any_valid)
        fde_out[i] = _pick(fde, _best_mode(fde, mask), any_valid)
    return ade_out, fde_out


# --------------------------------------------------------------------------------------------------
# calibration of mode probabilities
# --------------------------------------------------------------------------------------------------


def calibration_curve(
    prob: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    bins: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reliability curve of the mode probabilities.

    For each agent the mode with the smallest FDE (over all K modes, ties -> lower index) is the
    "correct" one. Every (agent, mode) pair contributes its probability ``p`` and the outcome
    ``1[mode is the best]`` to bin ``min(floor(p * bins + 1e-9), bins - 1)`` of ``bins`` equal-width
    bins on [0, 1] (the 1e-9 absorbs float rounding at bin edges). Agents without valid steps are skipped.

    Returns ``(bin_centres [bins], mean_prob [bins], freq [bins], counts [bins])``; ``mean_prob`` and
    ``freq`` are NaN for empty bins, ``counts`` is int.
    """
    _check_bins(bins)
    p, best, any_valid = calibration_pairs(prob, pred, gt, valid)
    return binned_calibration(p[any_valid], best[any_valid], bins)


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")


def calibration_pairs(
    prob: np.ndarray, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per agent, what :func:`calibration_curve` bins: ``p [N, K]`` float64, ``best [N]`` (the mode with
    the smallest FDE) and ``any_valid [N]``. A function of each row alone, so it can run in chunks."""
    pred, gt, valid = _check_inputs(pred, gt, valid)
    n, k_modes = pred.shape[:2]
    p = _check_prob(prob, n, k_modes)
    _, fde, any_valid = _per_mode_errors(pred, gt, valid)
    best = _best_mode(fde, np.ones_like(p, dtype=bool))
    return p, best, any_valid


def binned_calibration(
    p: np.ndarray, best: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`calibration_curve` from the pairs of the agents that count (``p [M, K]``, ``best [M]``)."""
    _check_bins(bins)
    correct = np.zeros(p.shape, dtype=np.float64)
    np.put_along_axis(correct, np.asarray(best, dtype=np.int64)[:, None], 1.0, axis=1)
    p_flat = p.ravel()
    c_flat = correct.ravel()
    # +1e-9 so a probability within rounding error of an edge (e.g. 1 - 0.8 = 0.19999999999999996)
    # lands in the bin that starts at that edge
    idx = np.clip(np.floor(p_flat * bins + 1e-9).astype(np.int64), 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p_flat, minlength=bins)
    sum_c = np.bincount(idx, weights=c_flat, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(counts > 0, sum_p / counts, np.nan)
        freq = np.where(counts > 0, sum_c / counts, np.nan)
    centres = (np.arange(bins) + 0.5) / bins
    return centres, mean_prob, freq, counts


def calibration_error(mean_prob: np.ndarray, freq: np.ndarray, counts: np.ndarray) -> float:
    """ECE from a reliability curve (:func:`calibration_curve`'s last three arrays); NaN when empty."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    nonempty = counts > 0
    return float(np.sum(counts[nonempty] / total * np.abs(mean_prob[nonempty] - freq[nonempty])))


def expected_calibration_error(
    prob: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    bins: int = 10,
) -> float:
    """Expected calibration error of the mode probabilities.

    ``ECE = sum_b (counts_b / total) * | mean_prob_b - freq_b |`` over non-empty bins of
    :func:`calibration_curve`. 0 for perfectly calibrated probabilities; NaN if no agent has a
    valid step.
    """
    _, mean_prob, freq, counts = calibration_curve(prob, pred, gt, valid=valid, bins=bins)
    return calibration_error(mean_prob, freq, counts)


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------


def aggregate(values: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean of per-agent ``values`` ``[N]`` over ``mask`` (bool ``[N]``, default all), skipping NaN.

    NaN entries (agents without valid steps) are left out; returns NaN when nothing remains.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must have shape [N], got {v.shape}")
    keep = ~np.isnan(v)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool or m.shape != v.shape:
            raise ValueError(f"mask must be a bool array of shape {v.shape}, got {m.dtype} {m.shape}")
        keep &= m
    if not keep.any():
        return float("nan")
    return float(v[keep].mean())
