"""Slice tags of evaluated agents (pure functions): what kind of situation each scored agent is in.

Every family of tags partitions the evaluated agents, so the ``n`` of a family's slices sum to the
number of agents. Families:

* ``source``: the data source (``sumo``, ``av2``, ``eth_ucy``).
* ``map_id``: the map of the scenario (``no_map`` where the scenario has none).
* ``class``: the agent class (``vehicle``, ``pedestrian``, ``cyclist``).
* ``speed``: speed at t0 in m/s, buckets ``0-0.5``, ``0.5-3``, ``3-8``, ``8+`` (lower edge inclusive).
* ``near_crosswalk``: ``yes`` if the agent's position at t0 is within 5 m of a ``crosswalk`` feature.
* ``in_junction``: ``yes`` if the agent's position at t0 is inside a junction. SUMO maps: inside the
  ``drivable_area`` but not inside any ``lane`` polygon (SUMO's lanes are the normal edges' lanes; the
  junction shapes and internal lanes are only part of the drivable area). AV2 maps have no junction
  layer: a point covered by two or more ``lane`` polygons (lanes overlapping where paths cross or
  merge) is taken as a junction proxy.

Agents whose scenario has no map get ``no_map`` in the two map families.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from forecast.scenarios.map_context import in_junction, junction_method, near_layer

SPEED_EDGES = (0.5, 3.0, 8.0)  # m/s
SPEED_LABELS = ("0-0.5", "0.5-3", "3-8", "8+")
CROSSWALK_RADIUS = 5.0  # metres
NO_MAP = "no_map"
FAMILIES = ("source", "map_id", "class", "speed", "near_crosswalk", "in_junction")


def speed_bucket(speed: np.ndarray) -> np.ndarray:
    """Speed at t0 ``[N]`` (m/s) -> bucket label ``[N]`` (``0-0.5``, ``0.5-3``, ``3-8``, ``8+``)."""
    s = np.asarray(speed, dtype=np.float64)
    idx = np.searchsorted(np.asarray(SPEED_EDGES), s, side="right")
    return np.asarray(SPEED_LABELS, dtype=object)[idx]


def _yes_no(flags: np.ndarray) -> np.ndarray:
    return np.where(flags, "yes", "no").astype(object)


def map_tags(points: np.ndarray, layers: dict | None, source: str) -> dict[str, np.ndarray]:
    """``near_crosswalk`` and ``in_junction`` tags (``yes``/``no``/``no_map``) of points ``[N, 2]`` on one map."""
    n = len(points)
    if layers is None:
        none = np.full(n, NO_MAP, dtype=object)
        return {"near_crosswalk": none, "in_junction": none.copy()}
    return {
        "near_crosswalk": _yes_no(near_layer(points, layers.get("crosswalk"), CROSSWALK_RADIUS)),
        "in_junction": _yes_no(in_junction(points, layers, junction_method(source))),
    }


def tag_agents(
    position: np.ndarray,
    speed: np.ndarray,
    agent_class: np.ndarray,
    source: np.ndarray,
    map_id: np.ndarray,
    map_layers: dict[str, dict | None],
) -> dict[str, np.ndarray]:
    """Every slice family's tag ``[N]`` (object arrays of str) for agents at world ``position`` ``[N, 2]``.

    ``agent_class``, ``source`` and ``map_id`` are ``[N]`` strings (``map_id`` empty or ``no_map`` when
    there is no map); ``map_layers`` maps a map id to its shapely layers (``Store.load_map``).
    """
    position = np.asarray(position, dtype=np.float64).reshape(-1, 2)
    n = len(position)
    map_id = np.asarray([m if m else NO_MAP for m in map_id], dtype=object)
    tags = {
        "source": np.asarray(source, dtype=object),
        "map_id": map_id,
        "class": np.asarray(agent_class, dtype=object),
        "speed": speed_bucket(speed),
        "near_crosswalk": np.full(n, NO_MAP, dtype=object),
        "in_junction": np.full(n, NO_MAP, dtype=object),
    }
    src = np.asarray(source, dtype=object)
    for m in np.unique(map_id):
        if m == NO_MAP:
            continue
        for s in np.unique(src[map_id == m]):
            sel = (map_id == m) & (src == s)
            for family, values in map_tags(position[sel], map_layers.get(m), str(s)).items():
                tags[family][sel] = values
    return tags


class FamilyMasks(Mapping):
    """``{value: bool mask [N]}`` of one family, each mask made when asked: a family with a value per
    map (AV2: a map per scenario) would otherwise hold maps x N bools."""

    def __init__(self, values: np.ndarray, keys: list):
        self._keys = [str(v) for v in keys]
        codes = {str(v): i for i, v in enumerate(keys)}
        self._code = np.array([codes[str(v)] for v in values.tolist()], dtype=np.int64)  # [N]
        self._index = codes

    def __getitem__(self, value: str) -> np.ndarray:
        return self._code == self._index[value]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def slice_masks(tags: dict[str, np.ndarray]) -> dict[str, FamilyMasks]:
    """``{family: {value: bool mask [N]}}``; within a family the masks partition the agents.

    Values are ordered: speed buckets low to high, ``yes``/``no``/``no_map``, else sorted.
    """
    order = {"speed": list(SPEED_LABELS), "near_crosswalk": ["yes", "no", NO_MAP], "in_junction": ["yes", "no", NO_MAP]}
    out: dict[str, FamilyMasks] = {}
    for family, values in tags.items():
        present = set(values.tolist())
        keys = [v for v in order.get(family, []) if v in present] + sorted(present - set(order.get(family, [])))
        out[family] = FamilyMasks(values, keys)
    return out
