"""Vehicle runtime: load a verified export bundle and predict from raw world-frame tracks.

Imports no torch and no lightning (checked by the tests).
"""

from forecast.runtime.predictor import (
    BundleIntegrityError,
    EmptySceneError,
    InputError,
    InvalidTracksError,
    MapError,
    PlanError,
    Prediction,
    Predictor,
    TooManyAgentsError,
    UnitMismatchError,
    read_manifest,
    verify_bundle,
)

__all__ = [
    "BundleIntegrityError",
    "EmptySceneError",
    "InputError",
    "InvalidTracksError",
    "MapError",
    "PlanError",
    "Prediction",
    "Predictor",
    "TooManyAgentsError",
    "UnitMismatchError",
    "read_manifest",
    "verify_bundle",
]
