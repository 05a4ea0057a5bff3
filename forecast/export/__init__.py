"""Export to the vehicle: ``model.pt`` -> ONNX bundle (``bundle.json`` + hashes), parity checks, MLflow registry.

Imports torch lazily: ``import forecast.export`` stays cheap for the CLI.
"""

from __future__ import annotations

__all__ = ["export_bundle", "register_bundle"]


def __getattr__(name: str):
    if name in __all__:
        from forecast.export import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'forecast.export' has no attribute {name!r}")
