"""Every bad input to the runtime ends in an InputError or BundleIntegrityError that names the field."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest
import shapely

from forecast.export.onnx_export import synthetic_map_layers, synthetic_tracks
from forecast.features.tracks import AgentTracks
from forecast.runtime import (
    BundleIntegrityError,
    InputError,
    InvalidTracksError,
    MapError,
    MapWarning,
    OptionError,
    PlanError,
    Predictor,
    UnitMismatchError,
)
from tests.conftest import tiny_features_and_model

FEATURES, _ = tiny_features_and_model()



def _copy_bundle(exported, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", dst)
    return dst, json.loads((dst / "bundle.json").read_text())


def test_manifest_without_sample_is_an_integrity_error(exported, tmp_path):
    bundle, manifest = _copy_bundle(exported, tmp_path)
    del manifest["sample"]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="'sample' is missing"):
        Predictor(bundle)


@pytest.mark.parametrize("key, value, match", [("modes", "six", "sample.modes"), ("future_steps", -1, "future_steps"),
                                               ("agent_types", [], "agent_types")])
def test_manifest_field_of_the_wrong_type(exported, tmp_path, key, value, match):
    bundle, manifest = _copy_bundle(exported, tmp_path)
    manifest["sample"][key] = value
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match=match):
        Predictor(bundle)


def test_hashed_but_invalid_onnx_is_an_integrity_error(exported, tmp_path):
    bundle, manifest = _copy_bundle(exported, tmp_path)
    name = manifest["models"]["fp32"]
    junk = b"not an onnx graph" * 10
    (bundle / name).write_bytes(junk)
    manifest["files"][name] = hashlib.sha256(junk).hexdigest()  # hashes match: only loading can tell
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match=f"{name}: onnxruntime cannot load it"):
        Predictor(bundle, optimized=False)  # the plain graph (by default the runtime loads its .ort.onnx)


def test_bad_options(exported):
    with pytest.raises(OptionError, match="variant 'fp64'"):
        Predictor(exported / "bundle", variant="fp64")
    with pytest.raises(OptionError, match="threads"):
        Predictor(exported / "bundle", threads="four")


def _change(tracks, **kw):
    fields = dict(xy=tracks.xy, heading=tracks.heading, present=tracks.present, agent_type=tracks.agent_type,
                  dt=tracks.dt, track_ids=tracks.track_ids)
    return AgentTracks(**(fields | kw))


@pytest.mark.parametrize("make, error, match", [
    (lambda tr: _change(tr, dt=float("nan")), UnitMismatchError, "dt must be a finite positive"),
    (lambda tr: _change(tr, dt=float("inf")), UnitMismatchError, "dt must be a finite positive"),
    (lambda tr: _change(tr, dt=True), UnitMismatchError, "dt must be"),
    (lambda tr: _change(tr, track_ids=tr.track_ids[:-1]), InvalidTracksError, r"track_ids must have shape \[A\]"),
    (lambda tr: _change(tr, track_ids=np.array(["a"] * tr.num_agents)), InvalidTracksError, "unique"),
    (lambda tr: _change(tr, track_ids=np.arange(tr.num_agents)), InvalidTracksError, "track_ids must be strings"),
    (lambda tr: _change(tr, heading=tr.heading.astype(object)), InvalidTracksError, "heading must be floating"),
    (lambda tr: _change(tr, present=tr.present.astype(np.int8)), InvalidTracksError, "present must be bool"),
    (lambda tr: _change(tr, heading=np.full_like(tr.heading, np.inf)), InvalidTracksError, "heading: infinite"),
])
def test_bad_tracks(predictor, make, error, match):
    tracks, t0 = synthetic_tracks(5, FEATURES, seed=3)
    with pytest.raises(error, match=match):
        predictor.predict(make(tracks), t0)


@pytest.mark.parametrize("t0", [True, 3.0, "3", -1, 10_000, None])
def test_t0_must_be_an_integer_step(predictor, t0):
    tracks, _ = synthetic_tracks(3, FEATURES, seed=1)
    with pytest.raises(OptionError, match="t0 must be an integer step index"):
        predictor.predict(tracks, t0)


@pytest.mark.parametrize("agent", [1.7, True, -1, 99, np.float64(2.0)])
def test_plan_agent_must_be_an_id_or_row(predictor, agent):
    tracks, t0 = synthetic_tracks(4, FEATURES, seed=6)
    with pytest.raises(PlanError, match="plan_agent must be a track id"):
        predictor.predict(tracks, t0, plan=np.zeros((FEATURES.future_steps, 2)), plan_agent=agent)


@pytest.mark.parametrize("bad", [
    shapely.Polygon([(0, 0), (np.inf, 0), (10, 10)]),
    shapely.Polygon([(0, 0), (np.nan, 0), (10, 10), (0, 10)]),
    shapely.LineString([(0, 0), (1e308 * 10, 5)]),
])
def test_non_finite_map_coordinates_are_refused(predictor, bad):
    tracks, t0 = synthetic_tracks(3, FEATURES, seed=5)
    layers = synthetic_map_layers() | {"crosswalk": [bad]}
    with pytest.raises(MapError, match=r"map layer 'crosswalk'\[0\] .* NaN or infinite"):
        predictor.predict(tracks, t0, layers)


def test_self_intersecting_polygon_is_repaired_with_a_warning(predictor):
    tracks, t0 = synthetic_tracks(3, FEATURES, seed=5)
    bowtie = shapely.Polygon([(-20, -20), (20, 20), (20, -20), (-20, 20)])
    layers = synthetic_map_layers() | {"crosswalk": [bowtie]}
    with pytest.warns(MapWarning, match=r"'crosswalk'\[0\] \(Polygon\) is invalid \(Self-intersection"):
        pred = predictor.predict(tracks, t0, layers)
    assert np.isfinite(pred.traj_world).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictor.predict(tracks, t0, synthetic_map_layers())  # valid maps say nothing


@pytest.mark.parametrize("layers, match", [({"lane": shapely.LineString([(0, 0), (1, 1)])}, "must be a list"),
                                           ({"lane": [None]}, "not a shapely geometry"),
                                           ({1: []}, "names must be strings"),
                                           # a typo silently dropped the drivable area from every raster
                                           ({"drivable_aera": [shapely.box(0, 0, 9, 9)]},
                                            r"'drivable_aera' is not a layer .*did you mean 'drivable_area'")])
def test_malformed_map_layers(predictor, layers, match):
    tracks, t0 = synthetic_tracks(3, FEATURES, seed=5)
    with pytest.raises(MapError, match=match):
        predictor.predict(tracks, t0, layers)


def test_every_runtime_error_is_typed():
    """Every exception class defined anywhere in forecast.runtime is an InputError or a BundleIntegrityError."""
    import importlib
    import pkgutil

    import forecast.runtime

    classes = []
    for info in pkgutil.iter_modules(forecast.runtime.__path__, "forecast.runtime."):
        module = importlib.import_module(info.name)
        classes += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Exception)
                    and not issubclass(v, Warning) and v.__module__ == info.name]
    assert len(classes) >= 9
    untyped = [c.__qualname__ for c in classes if not issubclass(c, InputError | BundleIntegrityError)]
    assert not untyped
    assert all(issubclass(c, ValueError) for c in classes)
