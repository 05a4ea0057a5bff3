"""Runtime faults: bad tracks, t0, plans, maps and options, and damaged bundles.

Every error the runtime raises must be an InputError or a BundleIntegrityError (anything else
counts as a traceback) and name the field at fault.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np

from tests.faults.harness import OK, WRONG, Case, Env, Result, expect_ok, expect_raise


def _predictor(env: Env):
    from forecast.runtime import Predictor

    if "predictor" not in env.shared:
        env.shared["predictor"] = Predictor(env.bundle)
    return env.shared["predictor"]


def _scene(env: Env, agents: int = 5, seed: int = 3):
    from forecast.export.onnx_export import synthetic_tracks

    return synthetic_tracks(agents, _predictor(env).features, seed=seed)


def _layers():
    from forecast.export.onnx_export import synthetic_map_layers

    return synthetic_map_layers()


def _change(tracks, **kw):
    from forecast.features.tracks import AgentTracks

    fields = dict(xy=tracks.xy, heading=tracks.heading, present=tracks.present, agent_type=tracks.agent_type,
                  dt=tracks.dt, track_ids=tracks.track_ids)
    return AgentTracks(**(fields | kw))


def _errors():
    from forecast.runtime import BundleIntegrityError, InputError

    return InputError, BundleIntegrityError


# --- tracks ------------------------------------------------------------------------------------------

def _nan_at(tr, t0, value):
    xy = tr.xy.copy()
    xy[1, t0] = value
    return _change(tr, xy=xy)


TRACK_FAULTS: dict[str, tuple] = {
    # name: (make(tracks, t0) -> tracks, words the message must contain)
    "xy_nan_present": (lambda tr, t0: _nan_at(tr, t0, np.nan), ("xy", "NaN")),
    "xy_inf_present": (lambda tr, t0: _nan_at(tr, t0, np.inf), ("xy",)),
    "xy_neg_inf_present": (lambda tr, t0: _nan_at(tr, t0, -np.inf), ("xy",)),
    "xy_int_dtype": (lambda tr, t0: _change(tr, xy=np.zeros(tr.xy.shape, np.int64)), ("xy", "int64")),
    "xy_object_dtype": (lambda tr, t0: _change(tr, xy=tr.xy.astype(object)), ("xy",)),
    "xy_str_dtype": (lambda tr, t0: _change(tr, xy=tr.xy.astype(str)), ("xy",)),
    "xy_2d": (lambda tr, t0: _change(tr, xy=tr.xy[:, :, 0]), ("xy", "shape")),
    "xy_three_coords": (lambda tr, t0: _change(tr, xy=np.concatenate([tr.xy, tr.xy[..., :1]], -1)), ("xy", "shape")),
    "xy_4d": (lambda tr, t0: _change(tr, xy=tr.xy[None]), ("xy", "shape")),
    "no_agents": (lambda tr, t0: _change(tr, xy=tr.xy[:0], heading=tr.heading[:0], present=tr.present[:0],
                                         agent_type=tr.agent_type[:0], track_ids=tr.track_ids[:0]), ("empty",)),
    "no_steps": (lambda tr, t0: _change(tr, xy=tr.xy[:, :0], heading=tr.heading[:, :0], present=tr.present[:, :0]),
                 ("empty",)),
    "heading_short": (lambda tr, t0: _change(tr, heading=tr.heading[:, :-1]), ("heading",)),
    "heading_int": (lambda tr, t0: _change(tr, heading=np.zeros(tr.heading.shape, np.int64)), ("heading",)),
    "heading_inf": (lambda tr, t0: _change(tr, heading=np.full(tr.heading.shape, np.inf)), ("heading",)),
    "heading_str": (lambda tr, t0: _change(tr, heading=tr.heading.astype(str)), ("heading",)),
    "present_int": (lambda tr, t0: _change(tr, present=tr.present.astype(np.int64)), ("present",)),
    "present_float": (lambda tr, t0: _change(tr, present=tr.present.astype(float)), ("present",)),
    "present_short": (lambda tr, t0: _change(tr, present=tr.present[:-1]), ("present",)),
    "present_none_at_t0": (lambda tr, t0: _change(tr, present=np.where(np.arange(tr.num_steps) == t0, False,
                                                                         tr.present)), ("t0",)),
    "agent_type_unknown": (lambda tr, t0: _change(tr, agent_type=np.full(tr.num_agents, 9)), ("agent type",)),
    "agent_type_negative": (lambda tr, t0: _change(tr, agent_type=np.full(tr.num_agents, -1)), ("agent type",)),
    "agent_type_str": (lambda tr, t0: _change(tr, agent_type=np.array(["car"] * tr.num_agents)), ("agent_type",)),
    "agent_type_float": (lambda tr, t0: _change(tr, agent_type=tr.agent_type.astype(float)), ("agent_type",)),
    "agent_type_short": (lambda tr, t0: _change(tr, agent_type=tr.agent_type[:-1]), ("agent_type",)),
    "agent_type_2d": (lambda tr, t0: _change(tr, agent_type=tr.agent_type[:, None]), ("agent_type",)),
    "dt_nan": (lambda tr, t0: _change(tr, dt=float("nan")), ("dt",)),
    "dt_inf": (lambda tr, t0: _change(tr, dt=float("inf")), ("dt",)),
    "dt_zero": (lambda tr, t0: _change(tr, dt=0.0), ("dt",)),
    "dt_negative": (lambda tr, t0: _change(tr, dt=-0.1), ("dt",)),
    "dt_milliseconds": (lambda tr, t0: _change(tr, dt=100.0), ("dt", "milliseconds")),
    "dt_not_multiple": (lambda tr, t0: _change(tr, dt=0.07), ("dt",)),
    "dt_coarser": (lambda tr, t0: _change(tr, dt=0.2), ("dt",)),
    "dt_str": (lambda tr, t0: _change(tr, dt="0.1"), ("dt",)),
    "dt_bool": (lambda tr, t0: _change(tr, dt=True), ("dt",)),
    "dt_none": (lambda tr, t0: _change(tr, dt=None), ("dt",)),
    "track_ids_short": (lambda tr, t0: _change(tr, track_ids=tr.track_ids[:-1]), ("track_ids",)),
    "track_ids_long": (lambda tr, t0: _change(tr, track_ids=np.append(tr.track_ids, "x")), ("track_ids",)),
    "track_ids_duplicate": (lambda tr, t0: _change(tr, track_ids=np.array(["a"] * tr.num_agents)), ("track_ids",)),
    "track_ids_int": (lambda tr, t0: _change(tr, track_ids=np.arange(tr.num_agents)), ("track_ids",)),
    "track_ids_empty_string": (lambda tr, t0: _change(tr, track_ids=np.array([""] + list(tr.track_ids[1:]))),
                               ("track_ids",)),
    "track_ids_nul": (lambda tr, t0: _change(tr, track_ids=np.array(["a\x00b"] + list(tr.track_ids[1:]), object)),
                      ("track_ids",)),
    "track_ids_huge": (lambda tr, t0: _change(tr, track_ids=np.array(["x" * 100_000] + list(tr.track_ids[1:]),
                                                                     object)), ("track_ids",)),
    "track_ids_none_entry": (lambda tr, t0: _change(tr, track_ids=np.array([None] + list(tr.track_ids[1:]),
                                                                           object)), ("track_ids",)),
    "not_tracks_dict": (lambda tr, t0: {"xy": tr.xy}, ("AgentTracks",)),
    "not_tracks_none": (lambda tr, t0: None, ("AgentTracks",)),
}


def _track_case(name: str, make, mentions) -> Case:
    def run(env: Env) -> Result:
        p = _predictor(env)
        tracks, t0 = _scene(env)
        return expect_raise(lambda: p.predict(make(tracks, t0), t0, None), _errors(), *mentions)

    return Case("runtime", f"tracks/{name}", run, needs=("bundle",))


# --- t0, plans, options ---------------------------------------------------------------------------------

T0_FAULTS = {"bool_true": True, "bool_false": False, "float": 3.0, "float_frac": 3.5, "str": "3", "negative": -1,
             "too_large": 10_000, "equal_len": None, "none": None, "nan": float("nan"), "list": [3],
             "np_float": np.float64(3.0), "np_bool": np.bool_(True)}


def _t0_case(name: str, value) -> Case:
    def run(env: Env) -> Result:
        p = _predictor(env)
        tracks, _ = _scene(env)
        t0 = tracks.num_steps if name == "equal_len" else value
        return expect_raise(lambda: p.predict(tracks, t0), _errors(), "t0")

    return Case("runtime", f"t0/{name}", run, needs=("bundle",))


PLAN_AGENT_FAULTS = {"float": 1.7, "float_whole": 2.0, "bool": True, "negative": -1, "too_large": 99, "list": [1],
                     "unknown_id": "nobody", "none_with_plan": None, "np_float": np.float32(1.0)}


def _plan_agent_case(name: str, value) -> Case:
    def run(env: Env) -> Result:
        p = _predictor(env)
        tracks, t0 = _scene(env, 4, 6)
        plan = np.zeros((p.future_steps, 2))
        return expect_raise(lambda: p.predict(tracks, t0, plan=plan, plan_agent=value), _errors(), "plan")

    return Case("runtime", f"plan_agent/{name}", run, needs=("bundle",))


PLAN_FAULTS = {
    "short": lambda n: np.zeros((n - 1, 2)), "long": lambda n: np.zeros((n + 1, 2)), "3d": lambda n: np.zeros((n, 3)),
    "nan": lambda n: np.full((n, 2), np.nan), "inf": lambda n: np.full((n, 2), np.inf),
    "int": lambda n: np.zeros((n, 2), np.int64), "str": lambda n: np.zeros((n, 2)).astype(str),
    "batch_dim": lambda n: np.zeros((1, n, 2)), "flat": lambda n: np.zeros(2 * n), "scalar": lambda n: 0.0,
}


def _plan_case(name: str, make) -> Case:
    def run(env: Env) -> Result:
        p = _predictor(env)
        tracks, t0 = _scene(env, 4, 6)
        return expect_raise(lambda: p.predict(tracks, t0, plan=make(p.future_steps), plan_agent=0), _errors(), "plan")

    return Case("runtime", f"plan/{name}", run, needs=("bundle",))


def _plan_without_agent(env: Env) -> Result:
    p = _predictor(env)
    tracks, t0 = _scene(env, 4, 6)
    return expect_raise(lambda: p.predict(tracks, t0, plan=np.zeros((p.future_steps, 2))), _errors(), "plan_agent")


def _plan_agent_absent_at_t0(env: Env) -> Result:
    p = _predictor(env)
    tracks, t0 = _scene(env, 4, 6)
    present = tracks.present.copy()
    present[2, t0] = False
    return expect_raise(lambda: p.predict(_change(tracks, present=present), t0, plan=np.zeros((p.future_steps, 2)),
                                          plan_agent=2), _errors(), "plan_agent", "t0")


# --- maps -------------------------------------------------------------------------------------------------

def _map_faults():
    import shapely

    return {
        "polygon_inf": ({"crosswalk": [shapely.Polygon([(0, 0), (np.inf, 0), (10, 10)])]}, "crosswalk"),
        "polygon_nan": ({"crosswalk": [shapely.Polygon([(0, 0), (np.nan, 0), (10, 10), (0, 10)])]}, "crosswalk"),
        "line_huge": ({"lane": [shapely.LineString([(0, 0), (1e308 * 10, 5)])]}, "lane"),
        "point_nan": ({"lane": [shapely.Point(np.nan, 1)]}, "lane"),
        "layer_not_list": ({"lane": shapely.LineString([(0, 0), (1, 1)])}, "lane"),
        "layer_none": ({"lane": None}, "lane"),
        "geometry_none": ({"lane": [None]}, "lane"),
        "geometry_str": ({"lane": ["LINESTRING (0 0, 1 1)"]}, "lane"),
        "geometry_array": ({"lane": [np.zeros((3, 2))]}, "lane"),
        "layer_name_int": ({1: [shapely.box(0, 0, 1, 1)]}, "name"),
        "not_a_dict": ([shapely.box(0, 0, 1, 1)], "map_layers"),
        "unknown_layer": ({"building": [shapely.box(0, 0, 10, 10)]}, "building"),
        "misspelt_layer": ({"drivable_aera": [shapely.box(0, 0, 10, 10)]}, "drivable_area"),
        "empty": ({}, "drawable"),
        "too_large": ({"drivable_area": [shapely.box(-1e7, -1e7, 1e7, 1e7)]}, "too large"),
    }


def _map_case(name: str) -> Case:
    def run(env: Env) -> Result:
        p = _predictor(env)
        tracks, t0 = _scene(env, 3, 5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # shapely on NaN coordinates
            layers, mention = _map_faults()[name]
            return expect_raise(lambda: p.predict(tracks, t0, layers), _errors(), mention)

    return Case("runtime", f"map/{name}", run, needs=("bundle",))


def _map_self_intersecting(env: Env) -> Result:
    import shapely

    from forecast.runtime import MapWarning

    p = _predictor(env)
    tracks, t0 = _scene(env, 3, 5)
    layers = _layers() | {"crosswalk": [shapely.Polygon([(-20, -20), (20, 20), (20, -20), (-20, 20)])]}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = expect_ok(lambda: p.predict(tracks, t0, layers))
    if res.kind != OK:
        return res
    if not any(issubclass(w.category, MapWarning) and "crosswalk" in str(w.message) for w in seen):
        return Result(WRONG, "a self-intersecting polygon was drawn without a word")
    return Result(OK, "repaired with shapely.make_valid and a MapWarning naming it")


def _map_id_unhashable(env: Env) -> Result:
    p = _predictor(env)
    tracks, t0 = _scene(env, 3, 5)
    return expect_raise(lambda: p.predict(tracks, t0, _layers(), map_id=["town"]), _errors(), "map_id")


def _map_id_unknown(env: Env) -> Result:
    p = _predictor(env)
    tracks, t0 = _scene(env, 3, 5)
    return expect_raise(lambda: p.predict(tracks, t0, None, map_id="never-seen"), _errors(), "never-seen")


def _too_many_agents(env: Env) -> Result:
    from forecast.export.onnx_export import synthetic_tracks

    p = _predictor(env)
    tracks, t0 = synthetic_tracks(p.max_agents + 1, p.features, seed=4)
    return expect_raise(lambda: p.predict(tracks, t0), _errors(), "at most")


def _absent_agents_ignored(env: Env) -> Result:
    """Agents absent at t0 are not predicted, and the others keep their rows (nothing lost)."""
    p = _predictor(env)
    tracks, t0 = _scene(env, 6, 8)
    present = tracks.present.copy()
    present[[1, 4], t0] = False
    pred_ = p.predict(_change(tracks, present=present), t0)
    ids = pred_.track_ids.tolist()
    want = [str(i) for i in np.asarray(tracks.track_ids)[[0, 2, 3, 5]]]
    return Result(OK) if ids == want else Result(WRONG, f"predicted {ids}, expected {want}")


def _gap_in_history(env: Env) -> Result:
    """Missing history frames stay missing: the prediction still comes, for every agent present at t0."""
    p = _predictor(env)
    tracks, t0 = _scene(env, 5, 9)
    present = tracks.present.copy()
    present[:, max(0, t0 - 4): t0 - 1] = False
    xy = np.where(present[..., None], tracks.xy, np.nan)  # and NaN where absent: must be ignored
    return expect_ok(lambda: p.predict(_change(tracks, present=present, xy=xy), t0),
                     lambda r: None if r.num_agents == 5 and np.isfinite(r.traj_world).all() else "agents or NaN lost")


# --- bundles ------------------------------------------------------------------------------------------------

def _bundle_case(name: str, damage, mention: str, owner: str = "reliab") -> Case:
    def run(env: Env) -> Result:
        from forecast.runtime import Predictor

        bundle = env.copy(env.bundle, "bundle")
        manifest = json.loads((bundle / "bundle.json").read_text())
        damage(bundle, manifest)
        return expect_raise(lambda: Predictor(bundle), _errors(), mention)

    return Case("runtime", f"bundle/{name}", run, owner=owner, needs=("bundle",))


def _save(bundle, manifest):
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def _without(*keys):
    def damage(bundle, manifest):
        node = manifest
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
        _save(bundle, manifest)
    return damage


def _set(value, *keys):
    def damage(bundle, manifest):
        node = manifest
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        _save(bundle, manifest)
    return damage


def _flip(which: str):
    def damage(bundle, manifest):
        name = manifest["models"]["fp32"] if which == "model" else which
        path = bundle / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


def _rehash(content: bytes):
    """Every ONNX file replaced by ``content`` and re-hashed in bundle.json: only loading can tell."""
    def damage(bundle, manifest):
        for name in manifest["files"]:
            if name.endswith(".onnx"):
                (bundle / name).write_bytes(content)
                manifest["files"][name] = hashlib.sha256(content).hexdigest()
        _save(bundle, manifest)
    return damage


def _delete(which):
    def damage(bundle, manifest):
        (bundle / (manifest["models"]["fp32"] if which == "model" else which)).unlink()
    return damage


def _text(text):
    def damage(bundle, manifest):
        (bundle / "bundle.json").write_text(text)
    return damage


def _bundle_cases() -> list[Case]:
    out = [
        _bundle_case("model_byte_flipped", _flip("model"), "sha256"),
        _bundle_case("model_deleted", _delete("model"), "missing"),
        _bundle_case("manifest_deleted", _delete("bundle.json"), "bundle.json"),
        _bundle_case("manifest_not_json", _text("{not json"), "bundle.json"),
        _bundle_case("manifest_empty", _text(""), "bundle.json"),
        _bundle_case("manifest_list", _text("[1, 2]"), "bundle.json"),
        _bundle_case("manifest_binary", lambda b, m: (b / "bundle.json").write_bytes(b"\xff\xfe\x00"), "bundle.json"),
        _bundle_case("onnx_rehashed_junk", _rehash(b"\x08\x07" + b"not a graph" * 50), "onnxruntime cannot load"),
        _bundle_case("onnx_rehashed_empty", _rehash(b""), "onnxruntime cannot load"),
        _bundle_case("format_other", _set("other-format", "format"), "forecast-bundle"),
        _bundle_case("format_version_2", _set(2, "format_version"), "version"),
        _bundle_case("files_empty", _set({}, "files"), "hash"),
        _bundle_case("files_path_escape", _set({"../secret.onnx": "0" * 64}, "files"), "../secret.onnx"),
        _bundle_case("files_absolute", _set({"/etc/passwd": "0" * 64}, "files"), "/etc/passwd"),
        _bundle_case("model_not_hashed", lambda b, m: _set("other.onnx", "models", "fp32")(b, m), "other.onnx"),
        _bundle_case("models_empty", _set({}, "models"), "models"),
        _bundle_case("inputs_renamed", lambda b, m: (m["inputs"][0].update(name="x"), _save(b, m)), "inputs"),
        _bundle_case("inputs_not_list", _set("hist", "inputs"), "inputs"),
        _bundle_case("max_agents_zero", _set(0, "max_agents"), "max_agents"),
        _bundle_case("max_agents_str", _set("256", "max_agents"), "max_agents"),
        _bundle_case("max_agents_missing", _without("max_agents"), "max_agents"),
        _bundle_case("feature_config_bad_key", _set({"nope": 1}, "sample", "feature_config"), "feature_config"),
        _bundle_case("feature_config_bad_type", _set("fast", "sample", "feature_config"), "feature_config"),
    ]
    for key in ("sample",):
        out.append(_bundle_case(f"without_{key}", _without(key), key))
    for key in ("feature_config", "future_steps", "modes", "agent_types"):
        out.append(_bundle_case(f"sample_without_{key}", _without("sample", key), key))
    for key, value in (("future_steps", "ten"), ("future_steps", -3), ("modes", 0), ("modes", 2.5),
                       ("agent_types", ["vehicle"]), ("agent_types", {"vehicle": "0"})):
        out.append(_bundle_case(f"sample_{key}_{value!s:.8}", _set(value, "sample", key), key))
    return out


def _option_cases() -> list[Case]:
    def predictor_with(**kw):
        def run(env: Env) -> Result:
            from forecast.runtime import Predictor

            return expect_raise(lambda: Predictor(env.bundle, **kw), _errors(), next(iter(kw)))
        return run

    def missing_dir(env: Env) -> Result:
        from forecast.runtime import Predictor

        return expect_raise(lambda: Predictor(env.tmp / "nope"), _errors(), "nope")

    return [Case("runtime", "option/variant_unknown", predictor_with(variant="fp64"), needs=("bundle",)),
            Case("runtime", "option/variant_none", predictor_with(variant=None), needs=("bundle",)),
            Case("runtime", "option/threads_str", predictor_with(threads="four"), needs=("bundle",)),
            Case("runtime", "option/threads_negative", predictor_with(threads=-2), needs=("bundle",)),
            Case("runtime", "option/bundle_missing", missing_dir)]


def cases() -> list[Case]:
    out = [_track_case(n, m, w) for n, (m, w) in TRACK_FAULTS.items()]
    out += [_t0_case(n, v) for n, v in T0_FAULTS.items()]
    out += [_plan_agent_case(n, v) for n, v in PLAN_AGENT_FAULTS.items()]
    out += [_plan_case(n, m) for n, m in PLAN_FAULTS.items()]
    out += [Case("runtime", "plan/without_agent", _plan_without_agent, needs=("bundle",)),
            Case("runtime", "plan/agent_absent_at_t0", _plan_agent_absent_at_t0, needs=("bundle",))]
    out += [_map_case(n) for n in ("polygon_inf", "polygon_nan", "line_huge", "point_nan", "layer_not_list",
                                   "layer_none", "geometry_none", "geometry_str", "geometry_array", "layer_name_int",
                                   "not_a_dict", "unknown_layer", "misspelt_layer", "empty",
                                   "too_large")]
    out += [Case("runtime", "map/self_intersecting", _map_self_intersecting, needs=("bundle",)),
            Case("runtime", "map/id_unhashable", _map_id_unhashable, needs=("bundle",)),
            Case("runtime", "map/id_unknown", _map_id_unknown, needs=("bundle",)),
            Case("runtime", "scene/too_many_agents", _too_many_agents, needs=("bundle",)),
            Case("runtime", "scene/absent_agents_ignored", _absent_agents_ignored, needs=("bundle",)),
            Case("runtime", "scene/gap_in_history", _gap_in_history, needs=("bundle",))]
    out += _bundle_cases() + _option_cases()
    return out
