"""Training configuration: parsed once from configs/train/*.yaml (plus overrides) into these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from forecast.features.config import HIST_FEATURES, FeatureConfig
from forecast.model.config import ModelConfig


@dataclass
class DataConfig:
    store: str = "runs/demo/store"
    train_split: str = "train"
    val_split: str = "val"
    source: str | None = None  # only this source (sumo | av2 | eth_ucy)
    scenario_prefix: str | None = None  # only scenarios whose id starts so (e.g. "eth_ucy:eth:")
    t0_stride: int = 10  # steps between sample times in training scenarios
    val_t0_stride: int = 10
    max_train_samples: int | None = None  # a seeded random subset, for quick runs
    max_val_samples: int | None = None
    batch_size: int = 8
    num_workers: int = 0
    pack_rasters: bool = True  # loader batches carry the real agents' rasters only (forecast.model.batch)
    # Shared-memory segments each loader worker reuses for its batches' rasters (forecast.training.raster_pool):
    # the DataLoader's prefetch (2 per worker), the batch the step reads, the one Lightning fetches ahead, the
    # one being pinned, a spare. 0: a fresh segment per batch (no shared memory held between batches).
    shared_slots: int = 6
    # > 1: batches of similar agent count, sorted within pools of this many batches (forecast.training.sampler);
    # training batches drawn by interaction_sampling (its own weighted draw) are not grouped
    group_batches: int = 0
    plan_probability: float = 0.3  # share of training scenes with a teacher-forced plan for one agent
    interaction_sampling: float = 0.0  # boost of samples where agents are close and moving (0: uniform)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 10
    grad_clip: float = 1.0
    warmup_steps: int = 50
    cls_weight: float = 1.0
    scene_wta_weight: float = 0.0  # share of the regression on the scene's shared winning mode (joint futures)
    marginal_mode_weight: float = 0.0  # mode 0 also regressed on every agent: the conditional median future
    cls_soft_tau: float = 0.0  # > 0: soft mode targets softmax(-FDE / tau), tau = this x CV travel + 0.1 m
    near_plan_weight: float = 1.0  # extra loss weight of agents near a teacher-forced plan (their response)
    near_plan_radius: float = 20.0  # metres: "near" a planned agent
    plan_follower_bonus: float = 0.0  # > 0: plans go preferably to agents with a scored vehicle following them
    # Linear LR scaling: when set, lr applies to this many scenes per optimiser step and is scaled by
    # batch_size * world_size / lr_reference_batch_size (larger per-GPU batches keep their dynamics).
    lr_reference_batch_size: int | None = None


@dataclass
class TrainerConfig:
    """Lightning Trainer settings: scale out with devices/strategy/num_nodes (DDP), no home-made engine."""

    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"  # "bf16-mixed" on GPUs
    max_steps: int = -1
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    log_every_n_steps: int = 10
    deterministic: bool = True
    torch_threads: int | None = None  # intra-op threads on CPU (None: torch's default)
    # Speed options (forecast.training.speed); all off by default.
    agent_buckets: list[int] | None = None  # pad each batch's agent axis up to one of these sizes (on the device)
    compile: bool = False  # torch.compile the model's forward (use with agent_buckets: one graph per bucket)
    compile_mode: str | None = None  # torch.compile mode: None (default), "reduce-overhead" (CUDA graphs), ...
    compile_backend: str = "inductor"
    compile_dynamic: bool = False  # one graph with symbolic agent counts instead of one per bucket
    # "regions": the encoder, one latent step (compiled once, replayed at every step) and the scorer; "model":
    # the whole forward, its rollout unrolled (about twice the compilation per agent bucket; docs/measurements.md)
    compile_scope: str = "regions"
    channels_last: bool = False  # convolutions in channels-last memory format, the raster input padded to 8 channels
    pin_memory: bool | None = None  # pinned batches, non-blocking copies; None: on when training on a GPU


@dataclass
class MlflowConfig:
    experiment: str = "forecast"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    run_name: str | None = None


@dataclass
class TrainConfig:
    seed: int = 0
    out_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def resolved(self) -> TrainConfig:
        """Tie the model's input and output sizes to the sample builder's."""
        self.model.future_steps = self.features.future_steps
        self.model.dt = self.features.dt
        self.model.raster_channels = len(self.features.raster.channels)
        raster = self.features.raster
        self.model.raster_size, self.model.raster_resolution, self.model.raster_ahead = raster.size, raster.resolution, raster.ahead
        self.model.history_features = len(HIST_FEATURES)
        return self
