"""Vehicle runtime: load a verified export bundle and predict from raw world-frame tracks (``Predictor``)
or tick by tick from perception's detections (``SceneTracker``).

Imports no torch and no lightning (checked by the tests).
"""

from forecast.runtime.errors import (
    BundleIntegrityError,
    EmptySceneError,
    InputError,
    InvalidTracksError,
    MapError,
    MapWarning,
    OptionError,
    PlanError,
    TooManyAgentsError,
    UnitMismatchError,
)
from forecast.runtime.predictor import (
    Prediction,
    Predictor,
    read_manifest,
    verify_bundle,
)
from forecast.runtime.tracker import Detections, SceneTracker, TickError, TickStats

__all__ = [
    "BundleIntegrityError",
    "Detections",
    "EmptySceneError",
    "InputError",
    "InvalidTracksError",
    "MapError",
    "MapWarning",
    "OptionError",
    "PlanError",
    "Prediction",
    "Predictor",
    "SceneTracker",
    "TickError",
    "TickStats",
    "TooManyAgentsError",
    "UnitMismatchError",
    "read_manifest",
    "verify_bundle",
]
