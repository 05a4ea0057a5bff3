"""The canonical store and its ingestion: ``forecast.data.Store(path)`` is the typed read API.

Names are resolved lazily so that light users (the vehicle runtime imports only the schema)
do not pull in pyarrow.
"""

from __future__ import annotations

__all__ = ["AgentType", "Scenario", "ScenarioInfo", "Store"]


def __getattr__(name: str):
    if name == "Store":
        from forecast.data.store import Store

        return Store
    if name in ("Scenario", "ScenarioInfo"):
        from forecast.data import scenario

        return getattr(scenario, name)
    if name == "AgentType":
        from forecast.data.schema import AgentType

        return AgentType
    raise AttributeError(f"module 'forecast.data' has no attribute {name!r}")
