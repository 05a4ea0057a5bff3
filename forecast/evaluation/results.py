"""What an evaluation produces: the scored-agent table, each predictor's outputs and the result.

Plain typed containers with no behaviour, so the loop (:mod:`~forecast.evaluation.collect`), the
aggregation (:mod:`~forecast.evaluation.aggregate`), the report and the driver all import them
from here and none of them imports another's module back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from forecast.data.types import AgentType

if TYPE_CHECKING:
    from forecast.features.dataset import SceneSet

BASELINES = ("constant_velocity", "ctrv")
CLASSES = ("vehicle", "pedestrian", "cyclist")
METRIC_NAMES = ("minADE@1", "minFDE@1", "minADE@6", "minFDE@6", "MR@6", "brier-minFDE@6")
# Half sizes (discs, metres) for the overlap check, by AgentType value.
OVERLAP_RADIUS = {AgentType.VEHICLE: 2.0, AgentType.PEDESTRIAN: 0.3, AgentType.CYCLIST: 0.8, AgentType.OTHER: 2.0}


@dataclass
class AgentTable:
    """The scored agents of the evaluation, ``N`` rows, shared by every predictor."""

    gt: np.ndarray  # [N, T, 2] float64, agent frame at t0
    valid: np.ndarray  # [N, T] bool
    agent_type: np.ndarray  # [N] int64, AgentType
    agent_class: np.ndarray  # [N] str label
    source: np.ndarray  # [N] str
    map_id: np.ndarray  # [N] str ("" without a map)
    scenario_id: np.ndarray  # [N] str
    t0: np.ndarray  # [N] int
    speed: np.ndarray  # [N] float64, m/s at t0
    origin: np.ndarray  # [N, 2] float64, world position at t0
    heading: np.ndarray  # [N] float64, world heading at t0
    gt_end_world: np.ndarray  # [N, 2] float64, world frame
    gt_overlap: np.ndarray  # [N] float 0/1, ground-truth futures overlap (reference)
    sample: np.ndarray  # [N] int, index into the SceneSet
    row: np.ndarray  # [N] int, the agent's row in that sample

    def __len__(self) -> int:
        return len(self.agent_type)


@dataclass
class Outputs:
    """One predictor's outputs on the rows of the AgentTable."""

    pred: np.ndarray  # [N, K, T, 2] float32, agent frame
    prob: np.ndarray  # [N, K] float32
    end_world: np.ndarray  # [N, 2] float64, most likely mode's endpoint, world frame
    overlap: np.ndarray  # [N] float 0/1


@dataclass
class EvalResult:
    metrics: dict  # what metrics.json holds
    agents: AgentTable
    outputs: dict[str, Outputs]  # by predictor name: the models and the baselines
    model_names: list[str]
    scenes: SceneSet
    out_dir: Path | None = None
    run_id: str | None = None
    per_agent: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # by predictor: metric -> [N]
    tags: dict[str, np.ndarray] = field(default_factory=dict)  # slice family -> tag [N]
    scenario_tags: dict[str, np.ndarray] = field(default_factory=dict)  # scenario tag -> bool [N] (tag table)
    track_id: np.ndarray | None = None  # [N] str, the agents' track ids
    store_t0: np.ndarray | None = None  # [N] int, t0 in the store's steps
    champion: str | None = None  # predictor name of --baseline
    regressions: list[int] = field(default_factory=list)  # rows, most regressed scene first
