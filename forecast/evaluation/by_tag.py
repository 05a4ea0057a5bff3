"""Per-tag metrics: the scored agents joined to the tag table beside the store (``forecast tag``).

``by_tag`` in ``metrics.json`` maps each tag of :data:`forecast.scenarios.tags.TAGS` to a block with the
same metric names as ``by_class`` plus the miss rate of the 6 most probable modes at each horizon
(``MR@6_1s``, ``MR@6_2s``, ``MR@6_3s``: best endpoint at that horizon further than the miss threshold),
``n`` (agents) and ``rare`` (``n`` below the configured minimum: read its numbers as anecdotes).
"""

from __future__ import annotations

import numpy as np

from forecast import metrics as M
from forecast.evaluation.aggregate import _num, summarise
from forecast.evaluation.results import AgentTable
from forecast.features.dataset import SceneSet


def agent_keys(agents: AgentTable, scenes: SceneSet) -> tuple[np.ndarray, np.ndarray]:
    """``(track_id [N] str, store_t0 [N] int)`` of the scored agents: the tag table's key with ``scenario_id``.

    Samples are cut at the FeatureConfig's ``dt``; the store's steps may be finer (a whole multiple).
    """
    track = np.empty(len(agents), dtype=object)
    store_t0 = np.empty(len(agents), dtype=np.int64)
    for i, (k, r) in enumerate(zip(agents.sample, agents.row, strict=True)):
        idx = scenes.index[int(k)]
        info = scenes.infos[idx.scenario]
        tracks = scenes.tracks[idx.scenario]
        a = int(idx.agents[int(r)])
        track[i] = str(tracks.track_ids[a]) if tracks.track_ids is not None else str(a)
        store_t0[i] = int(agents.t0[i]) * int(round(scenes.cfg.dt / info.dt))
    return track, store_t0


def tag_blocks(per_agent: dict[str, np.ndarray], miss: dict[str, np.ndarray], masks: dict[str, np.ndarray],
               min_count: int) -> dict[str, dict]:
    """``{tag: block}``: :func:`summarise` over each tag's mask ``[N]`` plus the horizon miss rates and ``rare``."""
    out = {}
    for tag, mask in masks.items():
        blk = summarise(per_agent, mask)
        for key, v in miss.items():
            blk[key] = _num(M.aggregate(v, mask))
        blk["rare"] = bool(blk["n"] < min_count)
        out[tag] = blk
    return out
