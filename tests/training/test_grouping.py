"""Batches of similar agent count (``data.group_batches``): the same samples, fewer padded agent slots."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.training.datamodule import ForecastDataModule
from forecast.training.sampler import BlockShuffleSampler, group_by_agents
from tests.conftest import tiny_train_config


def _slots(order: np.ndarray, agents: np.ndarray, batch: int) -> int:
    """Agent slots of the batches the DataLoader cuts from ``order`` (each padded to its largest scene)."""
    return sum(len(order[i : i + batch]) * agents[order[i : i + batch]].max() for i in range(0, len(order), batch))


def test_grouping_permutes_within_pools_into_sorted_batches():
    rng = np.random.default_rng(0)
    agents = rng.integers(1, 40, 203)
    order = rng.permutation(203)
    grouped = group_by_agents(order, agents, batch_size=8, pool_batches=4, rng=np.random.default_rng(1))
    pool = 32
    for s in range(0, 203, pool):  # only samples of the same pool of consecutive samples are exchanged
        assert sorted(grouped[s : s + pool]) == sorted(order[s : s + pool])
        batches = [grouped[i : i + 8] for i in range(s, min(s + pool, 203), 8)]
        ranges = sorted((agents[b].min(), agents[b].max()) for b in batches)
        assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))  # disjoint count ranges
    assert len(grouped) == 203 and len(set(grouped.tolist())) == 203
    # the short batch (203 = 25 x 8 + 3) of the last pool stays last, so the DataLoader cuts exactly these
    # batches: the last pool's 11 samples are one full batch, then the 3 with most agents
    assert set(grouped[-3:]) <= set(order[192:]) and agents[grouped[-3:]].min() >= agents[grouped[192:200]].max()
    assert _slots(grouped, agents, 8) < 0.8 * _slots(order, agents, 8)


def test_grouped_sampler_is_seeded_and_split_across_ranks():
    scenario_of = np.repeat(np.arange(40), 5)
    agents = np.random.default_rng(2).integers(1, 30, 200)
    kw = {"seed": 3, "block": 4, "agents": agents, "batch_size": 4, "group_batches": 5}
    order = list(BlockShuffleSampler(scenario_of, **kw))
    assert order == list(BlockShuffleSampler(scenario_of, **kw)) and sorted(order) == list(range(200))
    plain = list(BlockShuffleSampler(scenario_of, seed=3, block=4))
    assert order != plain and _slots(np.array(order), agents, 4) < _slots(np.array(plain), agents, 4)
    ranks = [list(BlockShuffleSampler(scenario_of[:199], num_replicas=3, rank=r, **{**kw, "agents": agents[:199]}))
             for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and set().union(*map(set, ranks)) == set(range(199))
    with pytest.raises(ValueError, match="agent count of every sample"):
        BlockShuffleSampler(scenario_of, group_batches=4)
    with pytest.raises(ValueError, match="group_batches >= 0"):
        BlockShuffleSampler(scenario_of, agents=agents, group_batches=-1)


def test_data_module_groups_its_batches(sumo_store, tmp_path):
    def slots(group: int) -> tuple[int, int]:
        cfg = tiny_train_config(sumo_store.path, tmp_path, **{"data.max_train_samples": 48,
                                                              "data.group_batches": group}).resolved()
        dm = ForecastDataModule(cfg)
        dm.setup()
        batches = list(dm.train_dataloader())
        return sum(b.agent_mask.numel() for b in batches), sum(int(b.agent_mask.sum()) for b in batches)

    (plain, real), (grouped, real_grouped) = slots(0), slots(12)
    assert real == real_grouped  # the same agents
    assert grouped < plain, (grouped, plain)
