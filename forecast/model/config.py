"""Architecture settings; sizes live in configs/train/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from forecast.data.types import AgentType
from forecast.features.config import RasterConfig


@dataclass
class ModelConfig:
    hidden: int = 64  # width D of every token
    modes: int = 6  # K futures per agent
    heads: int = 4  # attention heads
    interaction_layers: int = 2  # agent-agent attention layers in the encoder
    raster_channels: int = len(RasterConfig().channels)  # C of the per-agent raster (map, motion, signals)
    raster_width: int = 32  # widest CNN layer
    history_features: int = 7  # F of the history
    future_steps: int = 30  # T_f output steps
    rollout_stride: int = 5  # output steps decoded per latent step (future_steps must be a multiple)
    num_agent_types: int = len(AgentType)  # type embedding rows (5 with traffic signals)
    dropout: float = 0.0
    min_scale: float = 0.01  # metres: floor of the Laplace scale
    dt: float = 0.1  # seconds per rollout step (tied to the features' dt)
    edge_hidden: int | None = None  # width of the rollout's edge MLP (None: 2 x heads + 16, the first layout)
    class_modes: bool = False  # each agent type has its own K mode embeddings (False: K shared by all types)
    # Every latent step reads the raster CNN's feature map where the agent is about to be
    # (``forecast.model.map_lookup``); False: the pooled raster only.
    map_lookup: bool = False
    map_scoring: bool = False  # the scorer reads that feature map at the end of each latent step of a mode
    # The raster's geometry (tied to the features' by ``TrainConfig.resolved``): where a point of the
    # agent's frame falls on its raster.
    raster_size: int = RasterConfig().size
    raster_resolution: float = RasterConfig().resolution
    raster_ahead: float = RasterConfig().ahead
