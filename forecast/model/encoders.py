"""Encoders from raw inputs to the latent world state (a token per agent plus scene context)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from forecast.model.batch import packed_rows, raster_mask
from forecast.model.config import ModelConfig

# The feature map ``RasterEncoder`` hands to ``forecast.model.map_lookup``: after two stride-2 layers.
MAP_STRIDE = 4


class RasterEncoder(nn.Module):
    """CNN over each agent's raster: [N, C, S, S] uint8 -> [N, D]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.raster_width
        self.net = nn.Sequential(
            nn.Conv2d(cfg.raster_channels, w // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, cfg.hidden, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

        # Set by ``forecast.training.speed.apply_model_options`` (trainer.channels_last): the input in
        # channels-last layout with its channels padded to a multiple of 8. Same function either way.
        self.channels_last = False

    def forward(self, raster: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, D], the second layer's feature map [N, raster_width, S / 4, S / 4], which
        ``forecast.model.map_lookup`` reads at points of the agent's frame)."""
        # conv(x / 255) with the 1/255 on the first layer's (small) weight instead of the (large) raster
        conv = self.net[0]
        weight = conv.weight * (1.0 / 255.0)
        if self.channels_last:
            x, weight = channels_last_input(raster, weight)
        else:
            x = raster.float()
        x = F.conv2d(x, weight, conv.bias, conv.stride, conv.padding)
        fmap = self.net[1:4](x)
        return self.net[4:](fmap), fmap


def channels_last_input(raster: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 rasters [N, C, S, S] -> (floats [N, C8, S, S] in channels-last memory, the first convolution's
    weight [D, C8, k, k]), C8 = C rounded up to a multiple of 8 with zero channels on both sides.

    cuDNN's tensor-core convolutions want NHWC with a channel count divisible by 8: in an H100 profile of a
    bf16 step (docs/measurements/train-fitprofile-full-b256-h100.txt) converting NCHW to NHWC took 11 % of the
    GPU time and the 9-channel first layer ran in a fallback kernel. One copy here does the layout, the
    padding and the cast (to the autocast type when autocast is on) instead.
    """
    n, c, s1, s2 = raster.shape
    c8 = -(-c // 8) * 8
    kind = raster.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else torch.float32
    x = torch.empty((n, c8, s1, s2), dtype=dtype, device=raster.device, memory_format=torch.channels_last)
    x[:, :c] = raster
    x[:, c:].zero_()  # a fill on the device (assigning 0 makes a host tensor first)
    return x, F.pad(weight, (0, 0, 0, 0, 0, c8 - c)).to(dtype).contiguous(memory_format=torch.channels_last)


class TrackEncoder(nn.Module):
    """GRU over each agent's history with an agent-type embedding: [N, T_h, F] -> [N, D]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inp = nn.Linear(cfg.history_features, cfg.hidden)
        self.type_emb = nn.Embedding(cfg.num_agent_types, cfg.hidden)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, batch_first=True)

    def forward(self, hist: torch.Tensor, agent_type: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(hist) + self.type_emb(agent_type)[:, None, :])
        _, h = self.gru(x)
        return h[-1]


class SceneEncoder(nn.Module):
    """Fuses track, raster and pose per agent, then agents attend to each other.

    Returns the latent world state: agent tokens [B, A, D] and a scene token [B, D], and with
    ``map_lookup`` or ``map_scoring`` each agent's raster feature map [B * A, raster_width, S / 4, S / 4]
    (else None).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden
        self.tracks = TrackEncoder(cfg)
        self.raster = RasterEncoder(cfg)
        self.pose = nn.Linear(4, d)
        self.fuse = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Linear(d, d))
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.interaction = nn.TransformerEncoder(layer, cfg.interaction_layers, enable_nested_tensor=False)
        self.with_map = cfg.map_lookup or cfg.map_scoring  # the rollout reads the raster's feature map

    def forward(self, hist, agent_type, pose, raster, agent_mask):
        b, a = agent_type.shape
        t_h, f = hist.shape[2], hist.shape[3]
        track = self.tracks(hist.reshape(b * a, t_h, f), agent_type.reshape(b * a)).reshape(b, a, -1)
        ras, fmap = self.raster_features(raster, agent_mask, agent_type)
        tokens = self.fuse(torch.cat([track, ras, self.pose(pose)], dim=-1))
        tokens = self.interaction(tokens, src_key_padding_mask=~agent_mask)
        m = agent_mask.unsqueeze(-1).float()
        scene = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
        return tokens, scene, fmap

    def raster_features(self, raster: torch.Tensor, agent_mask: torch.Tensor, agent_type: torch.Tensor):
        """([B, A, D], feature maps [B * A, W, S / 4, S / 4] or None) from padded ``[B, A, C, S, S]`` or packed
        ``[N, C, S, S]`` rasters (``forecast.model.batch``).

        Packed, the CNN sees the real agents only, traffic signals left out (``raster_mask``); a padding
        or signal slot gets the features of an empty raster, which is what it gets in the padded
        layout, so both layouts give the same tokens and maps.
        """
        b, a = agent_mask.shape
        if raster.dim() == 5:
            feats, fmap = self.raster(raster.reshape(b * a, *raster.shape[2:]))
            return feats.reshape(b, a, -1), fmap if self.with_map else None
        real, rows = packed_rows(raster_mask(agent_mask, agent_type))
        feats, fmap = self.raster(raster)  # [N, D], [N, W, S / 4, S / 4]
        empty, empty_map = self.raster(raster.new_zeros(1, *raster.shape[1:]))  # [1, D], [1, W, S / 4, S / 4]
        fmap = torch.where(real[:, None, None, None], fmap[rows], empty_map) if self.with_map else None
        return torch.where(real[:, None], feats[rows], empty).reshape(b, a, -1), fmap
