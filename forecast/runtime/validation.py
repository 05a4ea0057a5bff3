"""Checks of everything that enters the runtime: the bundle manifest, tracks, t0, plans, maps, options.

Pure functions that raise the typed errors of :mod:`forecast.runtime.errors` and name the field (and
the agent, step, layer or geometry) at fault. The predictor and any other runtime entry point (a
streaming tracker, a service) call these, so a given bad input gets the same error everywhere.
No torch here (the car imports this).
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from forecast.features.raster import LAYER_TO_CHANNEL
from forecast.features.tracks import AgentTracks
from forecast.runtime.errors import (
    BundleIntegrityError,
    EmptySceneError,
    InvalidTracksError,
    MapError,
    MapWarning,
    OptionError,
    PlanError,
    UnitMismatchError,
)

MAX_TRACK_ID_CHARS = 256  # an id longer than this is a parsing error, not a name


def is_int(value: object) -> bool:
    """True for Python and numpy integers; False for bool (``True`` is not a step index)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


# --- the bundle manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSpec:
    """What ``bundle.json["sample"]`` tells the runtime, checked."""

    feature_config: dict
    future_steps: int
    modes: int
    agent_types: dict[str, int]
    max_agents: int
    input_names: list[str]
    models: dict[str, str]


def _field(d: dict, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise BundleIntegrityError(f"{where}: the field {key!r} is missing")
    return d[key]


def _positive_int(value, where: str) -> int:
    if not is_int(value) or value <= 0:
        raise BundleIntegrityError(f"{where} must be a positive integer, got {value!r}")
    return int(value)


def check_manifest(manifest: dict, path: str = "bundle.json") -> SampleSpec:
    """The fields of a bundle manifest the runtime relies on, with their types; BundleIntegrityError if not."""
    sample = _field(manifest, "sample", path)
    if not isinstance(sample, dict):
        raise BundleIntegrityError(f"{path}: 'sample' must be a mapping, got {type(sample).__name__}")
    features = _field(sample, "feature_config", f"{path} sample")
    if not isinstance(features, dict):
        raise BundleIntegrityError(f"{path}: sample.feature_config must be a mapping")
    types = _field(sample, "agent_types", f"{path} sample")
    if not isinstance(types, dict) or not types or not all(isinstance(k, str) and is_int(v) for k, v in types.items()):
        raise BundleIntegrityError(f"{path}: sample.agent_types must map type names to integer codes, got {types!r}")
    inputs = _field(manifest, "inputs", path)
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in inputs):
        raise BundleIntegrityError(f"{path}: 'inputs' must be a list of {{name: ...}} entries")
    models = _field(manifest, "models", path)
    if not isinstance(models, dict) or not models or not all(isinstance(v, str) for v in models.values()):
        raise BundleIntegrityError(f"{path}: 'models' must map variants to file names, got {models!r}")
    return SampleSpec(
        feature_config=features,
        future_steps=_positive_int(_field(sample, "future_steps", f"{path} sample"), f"{path}: sample.future_steps"),
        modes=_positive_int(_field(sample, "modes", f"{path} sample"), f"{path}: sample.modes"),
        agent_types={k: int(v) for k, v in types.items()},
        max_agents=_positive_int(_field(manifest, "max_agents", path), f"{path}: max_agents"),
        input_names=[i["name"] for i in inputs],
        models=dict(models),
    )


# --- options ---------------------------------------------------------------------------------------


def check_variant(variant: object, models: dict[str, str], bundle: str) -> str:
    if not isinstance(variant, str) or variant not in models:
        raise OptionError(f"variant {variant!r}: bundle {bundle} has {sorted(models)}")
    return variant


def check_threads(threads: object) -> int | None:
    if threads is None:
        return None
    if not is_int(threads) or threads < 0:
        raise OptionError(f"threads must be a non-negative integer or None, got {threads!r}")
    return int(threads)


def check_t0(t0: object, num_steps: int) -> int:
    """``t0`` as a step index of the tracks: an integer (not a bool, not a float) in ``[0, num_steps)``."""
    if not is_int(t0) or not 0 <= int(t0) < num_steps:
        raise OptionError(f"t0 must be an integer step index in [0, {num_steps}), got {t0!r} ({type(t0).__name__})")
    return int(t0)


# --- tracks ----------------------------------------------------------------------------------------


def check_dt(dt: object) -> float:
    """Seconds per step: a finite positive real number."""
    if isinstance(dt, bool | np.bool_) or not isinstance(dt, numbers.Real) or not math.isfinite(float(dt)) or dt <= 0:
        raise UnitMismatchError(f"tracks.dt must be a finite positive number of seconds per step, got {dt!r}")
    return float(dt)


def check_tracks(tracks: object, agent_types: dict[str, int]) -> None:
    """Every check of the input tracks, each with its own error class; the message names the field.

    tracks: AgentTracks with xy [A, T, 2] float metres, heading [A, T] float (NaN = unknown),
    present [A, T] bool, agent_type [A] integer codes of ``agent_types``, dt seconds, track_ids [A] or None.
    """
    if not isinstance(tracks, AgentTracks):
        raise InvalidTracksError(f"expected forecast.features.tracks.AgentTracks, got {type(tracks).__name__}")
    xy = np.asarray(tracks.xy)
    if xy.ndim != 3 or xy.shape[-1] != 2:
        raise InvalidTracksError(f"xy must have shape [A, T, 2] (metres), got {xy.shape}")
    if xy.shape[0] == 0 or xy.shape[1] == 0:
        raise EmptySceneError(f"empty scene: tracks have shape {xy.shape} (no agents or no steps)")
    if xy.dtype.kind != "f":
        raise InvalidTracksError(f"xy must be floating-point metres, got dtype {xy.dtype} "
                                 "(integer positions usually mean a unit or parsing error)")
    a, t = xy.shape[:2]
    codes = np.asarray(tracks.agent_type)
    if codes.shape != (a,):
        raise InvalidTracksError(f"agent_type must have shape [A]=({a},), got {codes.shape}")
    heading, present = np.asarray(tracks.heading), np.asarray(tracks.present)
    if heading.shape != (a, t) or present.shape != (a, t):
        raise InvalidTracksError(f"heading and present must have shape [A, T]={(a, t)}, got "
                                 f"{heading.shape} and {present.shape}")
    if present.dtype != np.bool_:
        raise InvalidTracksError(f"present must be bool, got dtype {present.dtype}")
    if heading.dtype.kind != "f":
        raise InvalidTracksError(f"heading must be floating-point radians (NaN = unknown), got dtype {heading.dtype}")
    if codes.dtype.kind not in "iu":
        raise InvalidTracksError(f"agent_type must be integer AgentType codes {agent_types}, got dtype {codes.dtype}")
    unknown = sorted(set(np.unique(codes).tolist()) - set(agent_types.values()))
    if unknown:
        raise InvalidTracksError(f"unknown agent type code(s) {unknown}; this bundle knows {agent_types}")
    check_dt(tracks.dt)
    ids = check_track_ids(tracks.track_ids, a)
    bad = present & ~np.isfinite(xy).all(-1)
    if bad.any():
        i, step = np.argwhere(bad)[0]
        raise InvalidTracksError(f"xy: NaN or infinite position for agent {ids[i] if ids is not None else i} "
                                 f"(row {i}) at step {step}, marked present")
    bad = present & np.isinf(heading)
    if bad.any():
        i, step = np.argwhere(bad)[0]
        raise InvalidTracksError(f"heading: infinite for agent row {i} at step {step} (use NaN for unknown)")


def check_track_ids(track_ids: object, num_agents: int) -> np.ndarray | None:
    """None, or ``[A]`` unique non-empty strings of at most MAX_TRACK_ID_CHARS characters."""
    if track_ids is None:
        return None
    ids = np.asarray(track_ids)
    if ids.shape != (num_agents,):
        raise InvalidTracksError(f"track_ids must have shape [A]=({num_agents},), got {ids.shape}")
    if ids.dtype.kind not in "UO" or not all(isinstance(x, str) for x in ids.tolist()):
        raise InvalidTracksError(f"track_ids must be strings, got dtype {ids.dtype}")
    for i, x in enumerate(ids.tolist()):
        if not x or len(x) > MAX_TRACK_ID_CHARS or "\x00" in x:
            raise InvalidTracksError(f"track_ids[{i}] must be a non-empty string of at most {MAX_TRACK_ID_CHARS} "
                                     f"characters without NUL, got {x[:40]!r}{'...' if len(x) > 40 else ''}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InvalidTracksError(f"track_ids must be unique; repeated: {uniq[counts > 1][:5].tolist()}")
    return ids


def check_tracks_dt(tracks: AgentTracks, want: float, t0: int) -> tuple[AgentTracks, int]:
    """Tracks at the bundle's ``want`` seconds per step, keeping step ``t0``: whole-multiple downsampling only."""
    dt = check_dt(tracks.dt)
    if abs(dt - want) <= 1e-9 * max(1.0, want):
        return tracks, t0
    ratio = want / dt
    n = int(round(ratio))
    if n < 2 or abs(ratio - n) > 1e-6:
        hint = " (dt is seconds per step; was it given in milliseconds?)" if dt >= 1.0 else ""
        raise UnitMismatchError(f"tracks have dt={dt:g} s but the bundle expects dt={want:g} s, and "
                                f"{dt:g} s cannot be downsampled to it by a whole factor{hint}")
    off = t0 % n
    sub = AgentTracks(tracks.xy[:, off::n], tracks.heading[:, off::n], tracks.present[:, off::n],
                      tracks.agent_type, want, tracks.track_ids)
    return sub, (t0 - off) // n


# --- plans -----------------------------------------------------------------------------------------


def check_plan(plan: object, plan_agent: object, future_steps: int, dt: float, tracks: AgentTracks) -> tuple[np.ndarray, int]:
    """(plan ``[T_f, 2]`` float64 world metres, the planning agent's row in ``tracks``)."""
    if plan is None or plan_agent is None:
        raise PlanError("a plan needs both plan ([T_f, 2] world-frame metres) and plan_agent")
    arr = np.asarray(plan)
    if arr.dtype.kind != "f":
        raise PlanError(f"plan must be floating-point metres, got dtype {arr.dtype}")
    if arr.shape != (future_steps, 2):
        raise PlanError(f"plan must have shape ({future_steps}, 2) (T_f steps of dt={dt:g} s "
                        f"after t0, world x/y in metres), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise PlanError("plan has NaN or infinite values")
    if isinstance(plan_agent, str):
        ids = tracks.track_ids
        hits = np.flatnonzero(np.asarray(ids) == plan_agent) if ids is not None else np.array([], int)
        if len(hits) == 0:
            raise PlanError(f"plan_agent {plain(plan_agent)!r} is not a track id of the scene")
        return arr.astype(np.float64), int(hits[0])
    if not is_int(plan_agent) or not 0 <= int(plan_agent) < tracks.num_agents:
        raise PlanError(f"plan_agent must be a track id (str) or a row index in [0, {tracks.num_agents}), "
                        f"got {plan_agent!r} ({type(plan_agent).__name__})")
    return arr.astype(np.float64), int(plan_agent)


def plain(x: object) -> object:
    """A numpy scalar as the Python value it holds, for messages: track 'a', not np.str_('a')."""
    return x.item() if isinstance(x, np.generic) else x


# --- maps ------------------------------------------------------------------------------------------


def check_map_layers(layers: object) -> dict:
    """``{layer: [shapely geometry, ...]}`` with finite coordinates; invalid polygons repaired.

    Raises MapError naming the layer and index of a geometry that is not a shapely geometry or has a
    NaN or infinite coordinate. A self-intersecting (invalid) polygon is replaced by
    ``shapely.make_valid`` of it with a MapWarning naming it, as the drawing would be undefined.
    Returns the layers (a new dict when something was repaired).
    """
    import shapely

    if not isinstance(layers, dict):
        raise MapError(f"map_layers must be a dict of layer name -> list of shapely geometries, got "
                       f"{type(layers).__name__}")
    out: dict = {}
    for name, geoms in layers.items():
        if not isinstance(name, str):
            raise MapError(f"map layer names must be strings, got {name!r}")
        if name not in LAYER_TO_CHANNEL:  # a misspelt layer would silently drop its lanes or area from the rasters
            close = difflib.get_close_matches(name, list(LAYER_TO_CHANNEL), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MapError(f"map layer {name!r} is not a layer the model draws{hint}; known layers: "
                           f"{', '.join(LAYER_TO_CHANNEL)}")
        if isinstance(geoms, shapely.Geometry) or not isinstance(geoms, list | tuple):
            raise MapError(f"map layer {name!r} must be a list of shapely geometries, got {type(geoms).__name__}")
        fixed = list(geoms)
        for i, g in enumerate(geoms):
            if not isinstance(g, shapely.Geometry):
                raise MapError(f"map layer {name!r}[{i}] is not a shapely geometry ({type(g).__name__})")
            coords = shapely.get_coordinates(g)
            if not np.isfinite(coords).all():
                raise MapError(f"map layer {name!r}[{i}] ({g.geom_type}) has a NaN or infinite coordinate")
            if not g.is_valid:
                reason = shapely.is_valid_reason(g)
                fixed[i] = shapely.make_valid(g)
                warnings.warn(f"map layer {name!r}[{i}] ({g.geom_type}) is invalid ({reason}); drawn as "
                              f"shapely.make_valid of it", MapWarning, stacklevel=3)
        out[name] = fixed
    return out
