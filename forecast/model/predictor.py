"""The learned model behind the predictor interface shared with the baselines and the ONNX runtime.

``predict(sample, plan=None) -> (traj [A, K, T_f, 2], prob [A, K])``, agent frame at t0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from forecast.features.sample import Sample
from forecast.model.batch import collate
from forecast.model.checkpoint import load_model


class TorchPredictor:
    def __init__(self, model_path: str | Path, device: str = "cpu"):
        loaded = load_model(model_path, device)
        self.model, self.features, self.meta = loaded.model, loaded.features, loaded.meta
        self.device = device
        self.name = Path(model_path).stem if Path(model_path).stem != "model" else Path(model_path).parent.name

    @torch.no_grad()
    def predict(self, sample: Sample, plan: np.ndarray | None = None, plan_mask: np.ndarray | None = None):
        batch = collate([sample], self.features.future_steps)
        if plan is not None:
            batch.plan[0] = torch.as_tensor(plan, dtype=torch.float32)
            batch.plan_mask[0] = torch.as_tensor(plan_mask, dtype=torch.bool)
        traj, _, prob = self.model(*batch.to(self.device).model_inputs())
        return traj[0].cpu().numpy(), prob[0].cpu().numpy()
