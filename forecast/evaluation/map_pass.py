"""What the evaluation needs from the maps, one map in memory at a time.

Argoverse 2 has a map per scenario: holding every map's shapely layers of a split (and their
drivable-area unions) made ``forecast evaluate`` grow by about 1 MB per scenario. :func:`map_pass`
groups the scored agents by map, reads each map once through the SceneSet's bounded cache and
keeps only per-agent results: the slice tags (:func:`forecast.evaluation.slices.tag_agents`) and
the off-road flags of every predictor and of the ground truth (``scene_metrics.offroad`` of the vehicles'
endpoints), value for value what holding every map at once gave.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from forecast import scene_metrics as SM
from forecast.data.types import AgentType
from forecast.evaluation import slices as S
from forecast.evaluation.aggregate import _drivable
from forecast.evaluation.results import AgentTable, Outputs


class LazyLayers:
    """``layers.get(map_id)``: a map's shapely layers read on demand (bounded cache), for the report."""

    def __init__(self, load: Callable[[str], dict]):
        self.load = load

    def get(self, map_id: str | None, default=None):
        return self.load(map_id) if map_id else default

    def __getitem__(self, map_id: str) -> dict:
        return self.load(map_id)


def map_pass(agents: AgentTable, outputs: dict[str, Outputs], load: Callable[[str], dict]
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """``(tags, offroad, offroad_gt)``: slice tags ``{family: [N]}``, off-road flags ``{predictor: [N]}``
    of the most likely endpoints and ``[N]`` of the true endpoints (1.0 off, 0.0 on, NaN for
    non-vehicles and agents without a drivable area). ``load(map_id)`` gives a map's layers."""
    n = len(agents)
    # the tags that need no map, and no_map in the two map families, for everyone
    tags = S.tag_agents(agents.origin, agents.speed, agents.agent_class, agents.source, np.full(n, "", object), {})
    tags["map_id"] = np.asarray([m if m else S.NO_MAP for m in agents.map_id], dtype=object)
    offroad = {name: np.full(n, np.nan) for name in outputs}
    offroad_gt = np.full(n, np.nan)
    map_id = np.asarray([m if m else "" for m in agents.map_id], dtype=object)
    keys, inverse = np.unique(map_id.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    vehicle = agents.agent_type == int(AgentType.VEHICLE)
    source = np.asarray(agents.source, dtype=object)
    for k, m in enumerate(keys):
        if not m:
            continue
        rows = order[bounds[k]:bounds[k + 1]]
        layers = load(m)
        for s in np.unique(source[rows]):
            sel = rows[source[rows] == s]
            for family, values in S.map_tags(agents.origin[sel].reshape(-1, 2), layers, str(s)).items():
                tags[family][sel] = values
        area = _drivable(layers)
        cars = rows[vehicle[rows]]
        if area is None or not len(cars):
            continue
        for name, out in outputs.items():
            offroad[name][cars] = SM.offroad(out.end_world[cars], area).astype(np.float64)
        offroad_gt[cars] = SM.offroad(agents.gt_end_world[cars], area).astype(np.float64)
    return tags, offroad, offroad_gt
