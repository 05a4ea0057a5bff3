"""Settings of the sample builder; they travel inside the exported bundle."""

from __future__ import annotations

from dataclasses import dataclass, field

MAP_CHANNELS = ("drivable_area", "lane", "lane_centerline", "crosswalk", "sidewalk")
MOTION_CHANNELS = ("vehicle", "pedestrian", "cyclist")
# Closed traffic-signal approaches present at t0, each a bar across its stop line (AgentType.TRAFFIC_SIGNAL).
SIGNAL_CHANNELS = ("traffic_signal",)
# Per-step agent features of the history, in the agent's own frame at t0.
HIST_FEATURES = ("x", "y", "vx", "vy", "cos_dh", "sin_dh", "valid")


@dataclass
class RasterConfig:
    """Bird's-eye raster around each agent, rotated so that the agent heads along +x (up the image)."""

    size: int = 64  # pixels per side
    resolution: float = 0.5  # metres per pixel
    ahead: float = 8.0  # metres the raster centre lies ahead of the agent (see more of where it goes)

    @property
    def channels(self) -> tuple[str, ...]:
        return MAP_CHANNELS + MOTION_CHANNELS + SIGNAL_CHANNELS


@dataclass
class FeatureConfig:
    dt: float = 0.1  # seconds per step of the samples; sources with another dt are resampled
    history_steps: int = 20  # steps up to and including t0
    future_steps: int = 30  # steps after t0 to predict
    max_agents: int = 32  # agents per training sample (targets and context)
    min_history_steps: int = 5  # observed history steps a target needs
    neighbour_radius: float = 60.0  # metres: context agents further than this from the focal agent are dropped
    scene_scale: float = 50.0  # metres: scale of scene-frame poses fed to the model
    raster: RasterConfig = field(default_factory=RasterConfig)

    @property
    def history_s(self) -> float:
        return self.history_steps * self.dt

    @property
    def horizon_s(self) -> float:
        return self.future_steps * self.dt
