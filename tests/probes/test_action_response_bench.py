"""bench/action_response.py's follower test: the geometry behind "followers carry under 4 % of the near error"."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.data.types import AgentType
from tests.conftest import bench_module


@pytest.fixture
def followers(monkeypatch):
    return bench_module(monkeypatch, "action_response").followers


def test_followers_are_behind_the_focal_agent_in_its_lane_and_heading_its_way(followers):
    v, p, c = int(AgentType.VEHICLE), int(AgentType.PEDESTRIAN), int(AgentType.CYCLIST)
    # focal vehicle at the origin heading +x; candidates around it
    origin = np.array([[0.0, 0.0],     # 0 focal
                       [-10.0, 0.5],   # 1 vehicle behind, same way: follower
                       [-8.0, 0.0],    # 2 cyclist behind, same way: follower
                       [10.0, 0.0],    # 3 ahead of the focal one: it leads, it does not follow
                       [-10.0, 4.0],   # 4 behind but in another lane (4 m aside)
                       [-10.0, 0.0],   # 5 behind, facing the other way (oncoming)
                       [-5.0, 0.0],    # 6 a pedestrian behind: never a follower
                       [-25.0, 0.0],   # 7 too far behind (over 20 m)
                       [-6.0, 0.0]])   # 8 heading unknown (NaN)
    heading = np.array([0.0, 0.1, -0.2, 0.0, 0.0, np.pi, 0.0, 0.0, np.nan])
    types = np.array([v, v, c, v, v, v, p, v, v])
    got = followers(origin, heading, types)
    assert got.tolist() == [False, True, True, False, False, False, False, False, False]


def test_a_pedestrian_or_headingless_focal_agent_has_no_followers(followers):
    origin = np.array([[0.0, 0.0], [-5.0, 0.0]])
    types = np.array([int(AgentType.PEDESTRIAN), int(AgentType.VEHICLE)])
    assert not followers(origin, np.zeros(2), types).any()
    types[0] = int(AgentType.VEHICLE)
    assert followers(origin, np.zeros(2), types).tolist() == [False, True]
    assert not followers(origin, np.array([np.nan, 0.0]), types).any()
