"""Scenario suites: a named, versioned list of (scenario, t0, agent) cases, each with an expectation.

A suite file (``configs/suites/<name>.yaml``)::

    name: quickstart
    version: 1
    description: ...
    cases:
      - id: follower-braking-leader-01
        scenario_id: sumo/...      # a scenario of the store
        t0: 39                     # the store's timestep index
        track_id: veh12            # the agent the expectation is about
        expect: slows_down         # see EXPECTATIONS
        params: {ratio: 0.9}       # optional, overrides the expectation's defaults
        why: "its leader veh7 brakes hard within 2 s"

Expectations are pure functions of one agent's prediction in its own frame at t0 (x along its
heading): ``traj [K, T, 2]`` metres, ``prob [K]``, its speed at t0 (m/s) and ``dt``. They judge the most
probable mode, the one a planner reads first. Each returns ``(passed, value, reason)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SUITES_DIR = Path("configs/suites")


@dataclass(frozen=True)
class Case:
    id: str
    scenario_id: str
    t0: int  # store timestep
    track_id: str
    expect: str  # a key of EXPECTATIONS
    params: dict = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    cases: list[Case]
    description: str = ""


def _most_likely(traj: np.ndarray, prob: np.ndarray) -> np.ndarray:
    return np.asarray(traj)[int(np.argmax(prob))]


def slows_down(traj: np.ndarray, prob: np.ndarray, speed: float, dt: float, ratio: float = 0.9) -> tuple[bool, float, str]:
    """Travel of the most probable mode over the horizon below ``ratio`` x what constant velocity covers."""
    path = _most_likely(traj, prob)
    cv = speed * dt * len(path)
    travel = float(np.hypot(*path[-1]))
    value = travel / cv if cv > 1e-6 else float("inf")
    return value < ratio, value, f"predicted travel {travel:.1f} m = {value:.2f} x constant velocity (needs < {ratio:g})"


def keeps_crossing(traj: np.ndarray, prob: np.ndarray, speed: float, dt: float, min_ratio: float = 0.5,
                   max_angle_deg: float = 45.0) -> tuple[bool, float, str]:
    """The most probable mode keeps going: at least ``min_ratio`` x constant velocity's travel, ending within
    ``max_angle_deg`` of the current heading (the +x axis of the agent frame)."""
    end = _most_likely(traj, prob)[-1]
    cv = speed * dt * len(traj[0])
    travel = float(np.hypot(*end))
    ratio = travel / cv if cv > 1e-6 else 0.0
    angle = float(np.degrees(abs(np.arctan2(end[1], end[0])))) if travel > 1e-6 else 180.0
    ok = ratio >= min_ratio and angle <= max_angle_deg
    return ok, ratio, (f"predicted travel {travel:.1f} m = {ratio:.2f} x constant velocity (needs >= {min_ratio:g}), "
                       f"{angle:.0f} deg off its heading (needs <= {max_angle_deg:g})")


EXPECTATIONS: dict[str, Callable[..., tuple[bool, float, str]]] = {
    "slows_down": slows_down,
    "keeps_crossing": keeps_crossing,
}


def check_case(case: Case, traj: np.ndarray, prob: np.ndarray, speed: float, dt: float) -> tuple[bool, float, str]:
    """Apply the case's expectation to the agent's prediction ``traj [K, T, 2]`` (agent frame), ``prob [K]``."""
    if case.expect not in EXPECTATIONS:
        raise ValueError(f"case {case.id}: unknown expectation {case.expect!r}; known: {', '.join(EXPECTATIONS)}")
    return EXPECTATIONS[case.expect](traj, prob, speed, dt, **case.params)


def suite_path(name_or_path: str | Path) -> Path:
    """A suite file: the path itself if it is a file, else ``configs/suites/<name>.yaml``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = SUITES_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise FileNotFoundError(f"no suite {name_or_path!r}: neither a file nor {cand}")


def load_suite(name_or_path: str | Path) -> Suite:
    from forecast.config import load_yaml

    path = suite_path(name_or_path)
    data = load_yaml(path)
    try:
        cases = [Case(**{**c, "t0": int(c["t0"]), "track_id": str(c["track_id"])}) for c in data.get("cases") or []]
        suite = Suite(str(data["name"]), int(data["version"]), cases, str(data.get("description", "")))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: a suite needs name, version and cases with id, scenario_id, t0, track_id, "
                         f"expect ({type(exc).__name__}: {exc})") from exc
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: case ids repeat")
    for c in cases:
        if c.expect not in EXPECTATIONS:
            raise ValueError(f"{path}: case {c.id}: unknown expectation {c.expect!r}; known: {', '.join(EXPECTATIONS)}")
    return suite


def suite_yaml(suite: Suite) -> str:
    import yaml

    data = {"name": suite.name, "version": suite.version, "description": suite.description,
            "cases": [{k: v for k, v in asdict(c).items() if v not in ({}, "")} for c in suite.cases]}
    return yaml.safe_dump(data, sort_keys=False, width=110)
