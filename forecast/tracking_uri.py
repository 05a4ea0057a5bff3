"""Where MLflow runs and registered models live, resolved the same way by every command."""

from __future__ import annotations

import os

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str | None) -> str:
    """Explicit config, else $MLFLOW_TRACKING_URI (a team's server), else a local SQLite store here."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
