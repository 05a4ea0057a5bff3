"""Vehicle runtime: load a verified export bundle and predict from raw world-frame tracks.

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

__all__ = [
    "BundleIntegrityError",
    "EmptySceneError",
    "InputError",
    "InvalidTracksError",
    "MapError",
    "MapWarning",
    "OptionError",
    "PlanError",
    "Prediction",
    "Predictor",
    "TooManyAgentsError",
    "UnitMismatchError",
    "read_manifest",
    "verify_bundle",
]
