"""The exported-weights file ``model.pt``: state dict plus the configs needed to rebuild and feed the model.

Only tensors and plain Python values are stored, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from forecast.config import from_dict, to_dict
from forecast.features.config import FeatureConfig
from forecast.model.config import ModelConfig
from forecast.model.world_model import WorldModel


@dataclass
class LoadedModel:
    model: WorldModel
    features: FeatureConfig
    meta: dict  # run_id, version, metrics, train config


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: what ``model.pt`` carries so
    that a damaged file is refused at load. torch's zip format checks no checksum of tensor data, so 64
    zeroed bytes inside a weight loaded, evaluated and exported without a word."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):  # a module's extra state
            h.update(f"{name}|{t!r}|".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_model(path: Path, model: WorldModel, features: FeatureConfig, meta: dict) -> None:
    from forecast.data.atomic import atomic_write

    state = model.state_dict()
    payload = {"state_dict": state, "model_config": to_dict(model.cfg), "feature_config": to_dict(features),
               "meta": meta, "weights_sha256": weights_sha256(state)}
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_model(path: str | Path, map_location: str = "cpu") -> LoadedModel:
    """Load ``model.pt`` onto ``map_location`` (never unpickles arbitrary objects: ``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # checked on the CPU, then moved
        if not isinstance(payload, dict):
            raise TypeError(f"holds a {type(payload).__name__}, not a dict")
        missing = [k for k in ("feature_config", "model_config", "state_dict") if k not in payload]
        if missing:
            raise KeyError(f"no {missing} (a bare state dict or another program's checkpoint?)")
        recorded = payload.get("weights_sha256")  # absent in files written before it was added: not checked
        if recorded is not None and weights_sha256(payload["state_dict"]) != recorded:
            raise ValueError("its weights do not match the sha256 written with them: the file is damaged "
                             "(a partial copy, a bad disk or an edit); copy it again from where it was trained")
        features = from_dict(FeatureConfig, payload["feature_config"])
        cfg = from_dict(ModelConfig, payload["model_config"])
        model = WorldModel(cfg, pose_scale=features.scene_scale)
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # torch.load raises anything from EOFError to RuntimeError on a damaged file
        raise ModelFileError(f"cannot load model {path}: not a readable forecast model.pt ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else 'no details'})") from exc
    if cfg.raster_channels != len(features.raster.channels):
        raise ModelFileError(f"model {path} was trained on {cfg.raster_channels}-channel rasters; this version of "
                             f"forecast builds {len(features.raster.channels)} ({', '.join(features.raster.channels)}): "
                             "retrain it (a model from before the traffic-signal channel has 8)")
    raster = features.raster
    if (cfg.map_lookup or cfg.map_scoring) and (cfg.raster_size, cfg.raster_resolution, cfg.raster_ahead) != (
            raster.size, raster.resolution, raster.ahead):
        raise ModelFileError(f"model {path} reads its raster at points ({cfg.raster_size} px, {cfg.raster_resolution} "
                             f"m/px, {cfg.raster_ahead} m ahead) on rasters of another geometry ({raster.size} px, "
                             f"{raster.resolution} m/px, {raster.ahead} m ahead): its model_config was edited")
    # load_state_dict copies into the CPU parameters the model was built with, whatever device the tensors
    # were loaded to: a model asked for on "cuda" stayed on the CPU beside inputs on the GPU
    model.to(map_location).eval()
    return LoadedModel(model, features, payload.get("meta", {}))


class ModelFileError(ValueError):
    """``model.pt`` is damaged, truncated, not a checkpoint, or holds something other than a forecast model."""
