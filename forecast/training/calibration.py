"""Temperature calibration of the mode probabilities on the validation split, one temperature per class.

After training, the (uncalibrated) logits of every scored validation agent are collected with the
index of its winning mode (closest endpoint, the training target); for each agent type the
temperature T minimising the negative log-likelihood of ``softmax(logits / T)`` is found on a
log-spaced grid (deterministic, no optimiser state) and written into ``WorldModel.temperature``,
so model.pt, the ONNX export and the runtime all use it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from forecast.model.batch import Batch
from forecast.model.world_model import WorldModel

GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))  # candidate temperatures
MIN_AGENTS = 20  # fewer validation agents of a type than this: keep T = 1


@torch.no_grad()
def collect_logits(model: WorldModel, batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits [N, K], winner [N], agent_type [N]) over the scored agents with a full future."""
    model.eval()
    logits, winners, types = [], [], []
    for batch in batches:
        traj, _, lg = model.forward_logits(*batch.model_inputs())
        scored = batch.target_mask & batch.future_mask.all(-1)
        fde = torch.linalg.vector_norm(traj[..., -1, :] - batch.future[:, :, None, -1, :], dim=-1)  # [B, A, K]
        logits.append(lg[scored].double().numpy())
        winners.append(fde.argmin(-1)[scored].numpy())
        types.append(batch.agent_type[scored].numpy())
    if not logits:
        return np.zeros((0, model.cfg.modes)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(winners), np.concatenate(types)


def nll(logits: np.ndarray, winner: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the winners under ``softmax(logits / temperature)``."""
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(winner)), winner].mean())


def fit_temperatures(logits: np.ndarray, winner: np.ndarray, agent_type: np.ndarray, num_types: int) -> dict:
    """Per type: the grid temperature with the lowest NLL. Returns {"temperature": [num_types], per-type report}."""
    temps = np.ones(num_types)
    report: dict = {}
    for t in range(num_types):
        sel = agent_type == t
        if sel.sum() < MIN_AGENTS:
            continue
        scores = [nll(logits[sel], winner[sel], float(c)) for c in GRID]
        best = int(np.argmin(scores))
        temps[t] = float(GRID[best])
        report[str(t)] = {"n": int(sel.sum()), "temperature": float(temps[t]), "nll_before": nll(logits[sel], winner[sel], 1.0),
                          "nll_after": float(scores[best])}
    return {"temperature": temps.tolist(), "by_type": report}


def calibrate(model: WorldModel, batches: Iterable[Batch]) -> dict:
    """Fit and set ``model.temperature`` from the validation ``batches``; returns the report."""
    logits, winner, agent_type = collect_logits(model, batches)
    out = fit_temperatures(logits, winner, agent_type, model.cfg.num_agent_types)
    model.temperature.copy_(torch.as_tensor(out["temperature"], dtype=model.temperature.dtype))
    out["n"] = int(len(winner))
    return out
