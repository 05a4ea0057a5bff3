"""The runtime tests' shared Predictor over the tiny exported bundle (``exported`` in tests/conftest.py)."""

from __future__ import annotations

import pytest

from forecast.runtime import Predictor


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported / "bundle")
