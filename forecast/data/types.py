"""Agent classes, shared by the store, the model and the vehicle runtime (numpy only: no pyarrow)."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class AgentType(IntEnum):
    """Agent classes shared by the store, the model (embedding index) and the exported bundle."""

    VEHICLE = 0
    PEDESTRIAN = 1
    CYCLIST = 2
    OTHER = 3
    # A closed traffic-signal approach: a stationary stop wall at its stop line (forecast.sim.signals).
    # Context only, and not a physical object: no collisions, overlaps or near misses with it.
    TRAFFIC_SIGNAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> AgentType:
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown agent type {label!r}; expected one of {[t.label for t in cls]}") from None


AGENT_TYPE_LABELS = tuple(t.label for t in AgentType)
# Classes that are forecasting targets; OTHER is context only.
TARGET_TYPES = (AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.CYCLIST)

# Speeds above these (m/s) are physically implausible for the class and are quarantined.
MAX_SPEED = {
    AgentType.VEHICLE: 70.0,
    AgentType.PEDESTRIAN: 12.0,
    AgentType.CYCLIST: 25.0,
    AgentType.OTHER: 70.0,
    AgentType.TRAFFIC_SIGNAL: 0.5,  # it never moves
}
# Classes that are physical objects (collisions, overlaps, near misses are about these).
PHYSICAL_TYPES = (AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.CYCLIST, AgentType.OTHER)
# IS_PHYSICAL[codes]: whether each type code is one of them ([len(AgentType)] bool, read-only; index it with an array of codes).
IS_PHYSICAL = np.array([t in PHYSICAL_TYPES for t in AgentType])
IS_PHYSICAL.flags.writeable = False
