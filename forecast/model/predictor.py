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

    @torch.no_grad()
    def predict_batch(self, samples: list[Sample], plans: list[np.ndarray | None] | None = None,
                      plan_masks: list[np.ndarray | None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``predict`` of each sample in one forward pass: [(traj [A_i, K, T_f, 2], prob [A_i, K])].

        plans / plan_masks: per sample, as ``predict``'s ``plan`` [A_i, T_f, 2] and ``plan_mask`` [A_i]
        (None for a sample without a plan).

        The samples are padded to the largest; the padding changes the shapes of the matrix products,
        not what the real agents see, so each result equals ``predict``'s up to float rounding (~1e-5 m).
        The rasters go packed (the real agents' only): the CNN does not run on padding. On the demo's
        model a batch of 16 took 0.36 of the time of 16 single calls (the model's many small operations
        cost per call, not per agent)."""
        batch = collate(samples, self.features.future_steps, pack_rasters=True)
        if plans is not None:
            masks = plan_masks if plan_masks is not None else [None] * len(samples)
            if len(plans) != len(samples) or len(masks) != len(samples):
                raise ValueError(f"{len(samples)} samples need as many plans and plan masks, got {len(plans)} and "
                                 f"{len(masks)}")
            for i, (plan, mask) in enumerate(zip(plans, masks, strict=True)):
                if plan is None:
                    continue
                if mask is None:
                    raise ValueError(f"sample {i} has a plan but no plan_mask")
                n = samples[i].num_agents
                batch.plan[i, :n] = torch.as_tensor(plan, dtype=torch.float32)
                batch.plan_mask[i, :n] = torch.as_tensor(mask, dtype=torch.bool)
        traj, _, prob = self.model(*batch.to(self.device).model_inputs())
        traj, prob = traj.cpu().numpy(), prob.cpu().numpy()
        return [(traj[i, : s.num_agents], prob[i, : s.num_agents]) for i, s in enumerate(samples)]
