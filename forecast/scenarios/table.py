"""The tag table beside the store: ``<store>/tags/tags.parquet``, written once by ``forecast tag``.

One row per (scenario_id, track_id, t0) that carries at least one tag (an untagged agent-step has no
row), with a bool column per tag of :data:`forecast.scenarios.tags.TAGS`, the agent's ``agent_type``
label and ``split``. ``t0`` is the store's timestep index (at the scenario's own ``dt``). The file's
schema metadata holds ``forecast.tags`` (JSON): the tag settings, the store fingerprint (sha256 of its
scenarios table and manifests), the number of agent-steps looked at and the count per tag.

Idempotent: when the file exists with the same fingerprint and settings, :func:`tag_store` returns it
unchanged. Any Arrow tool reads it (``pyarrow.parquet.read_table(store/"tags/tags.parquet")``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forecast.data.atomic import write_parquet_atomic
from forecast.data.store import Store
from forecast.data.types import AgentType
from forecast.scenarios.tags import TAGS, TagConfig, motion, scene_tags

TAGS_FILE = "tags/tags.parquet"
META_KEY = b"forecast.tags"
TAGGER_VERSION = 2  # near miss needs a vehicle in the pair


def tags_path(store: Store | str | Path) -> Path:
    root = store.path if isinstance(store, Store) else Path(store)
    return root / TAGS_FILE


def store_fingerprint(store: Store) -> str:
    """sha256 over the scenarios table and the ingest manifests: changes when the store's content does."""
    h = hashlib.sha256()
    h.update(json.dumps(store.scenarios_table().to_pylist(), sort_keys=True, default=str).encode())
    h.update(json.dumps(store.manifests(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def map_masks(xy: np.ndarray, present: np.ndarray, layers: dict | None, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``in_junction`` and ``on_crosswalk`` ``[A, T]`` bool for positions ``xy [A, T, 2]`` on a map's layers."""
    import shapely

    from forecast.scenarios.map_context import in_junction, junction_method

    shape = present.shape
    junction, crosswalk = np.zeros(shape, bool), np.zeros(shape, bool)
    if not layers:
        return junction, crosswalk
    pts = xy[present]
    junction[present] = in_junction(pts, layers, junction_method(source))
    cw = [g for g in layers.get("crosswalk", []) if g is not None and not g.is_empty]
    if cw:
        u = shapely.union_all(cw)
        shapely.prepare(u)
        crosswalk[present] = shapely.contains_xy(u, pts[:, 0], pts[:, 1])
    return junction, crosswalk


def tag_scenario(scenario, layers: dict | None, cfg: TagConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tags ``{tag: [A, T] bool}`` of one store ``Scenario`` and its present mask ``[A, T]``."""
    m = motion(scenario.xy, scenario.present, scenario.agent_type, scenario.info.dt, scenario.heading)
    junction, crosswalk = map_masks(np.nan_to_num(scenario.xy), scenario.present, layers, scenario.info.source)
    return scene_tags(m, cfg, junction, crosswalk), scenario.present


def tag_store(store: Store | str | Path, cfg: TagConfig | None = None, splits: list[str] | None = None,
              out: Path | None = None, log=None, progress: bool = True) -> Path:
    """Tag every scenario (of ``splits``; all when None) and write the table; returns its path.
    ``log`` gets what happened; with ``progress`` also a line per 16 scenarios tagged."""
    cfg = cfg or TagConfig()
    log = log or (lambda msg: None)
    store = store if isinstance(store, Store) else Store(store)
    if not store.exists():
        raise FileNotFoundError(f"no store at {store.path}")
    path = Path(out) if out else tags_path(store)
    settings = {"config": asdict(cfg), "splits": sorted(splits) if splits else None, "version": TAGGER_VERSION,
                "fingerprint": store_fingerprint(store)}
    old = read_meta(path)
    if old is not None and all(old.get(k) == v for k, v in settings.items()):
        log(f"tags up to date: {path}")
        return path
    infos = [i for i in store.scenarios() if splits is None or i.split in splits]
    cols: dict[str, list] = {"scenario_id": [], "split": [], "track_id": [], "t0": [], "agent_type": [],
                             **{t: [] for t in TAGS}}
    counts = dict.fromkeys(TAGS, 0)
    looked = 0
    maps: dict[str, dict] = {}
    labels = np.array([t.label for t in AgentType], dtype=object)
    for k in range(0, len(infos), 16):  # a few scenarios per scan keeps memory flat
        for sc in store.load_scenarios(infos[k : k + 16]):
            layers = None
            if sc.info.map_id:
                if sc.info.map_id not in maps:
                    maps[sc.info.map_id] = store.load_map(sc.info.map_id)
                layers = maps[sc.info.map_id]
            tags, present = tag_scenario(sc, layers, cfg)
            looked += int(present.sum())
            any_tag = np.zeros(present.shape, bool)
            for t in TAGS:
                any_tag |= tags[t]
                counts[t] += int(tags[t].sum())
            a, t0 = np.nonzero(any_tag)
            cols["scenario_id"] += [sc.info.scenario_id] * len(a)
            cols["split"] += [sc.info.split] * len(a)
            cols["track_id"] += sc.track_ids[a].astype(str).tolist()
            cols["t0"].append(t0.astype(np.int32))
            cols["agent_type"] += labels[sc.agent_type[a].astype(int)].tolist()
            for t in TAGS:
                cols[t].append(tags[t][a, t0])
        if progress:
            log(f"tagged {min(k + 16, len(infos))}/{len(infos)} scenarios")
    table = pa.table({
        "scenario_id": pa.array(cols["scenario_id"], pa.string()), "split": pa.array(cols["split"], pa.string()),
        "track_id": pa.array(cols["track_id"], pa.string()),
        "t0": pa.array(np.concatenate(cols["t0"]) if cols["t0"] else np.zeros(0, np.int32), pa.int32()),
        "agent_type": pa.array(cols["agent_type"], pa.string()),
        **{t: pa.array(np.concatenate(cols[t]) if cols[t] else np.zeros(0, bool), pa.bool_()) for t in TAGS},
    })
    meta = {**settings, "num_scenarios": len(infos), "agent_steps": looked, "counts": counts}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    write_parquet_atomic(table, path)
    return path


def read_meta(path: Path) -> dict | None:
    """The ``forecast.tags`` metadata of a tag table, or None if there is no (readable) table."""
    if not Path(path).is_file():
        return None
    try:
        md = pq.read_schema(path).metadata or {}
        return json.loads(md[META_KEY]) if META_KEY in md else None
    except (OSError, ValueError, pa.ArrowInvalid):
        return None


def read_tags(path: Path) -> pa.Table:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no tag table at {path}: run `forecast tag --store STORE` first")
    return pq.read_table(path)


def tag_lookup(table: pa.Table, scenario_id: np.ndarray, track_id: np.ndarray, t0: np.ndarray) -> dict[str, np.ndarray]:
    """``{tag: [N] bool}`` for the rows (scenario_id, track_id, store t0) ``[N]``; False where the table has no row."""
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in ("scenario_id", "track_id", "t0", *TAGS)}
    row_of = {(s, k, int(t)): r for r, (s, k, t) in enumerate(zip(cols["scenario_id"], cols["track_id"], cols["t0"],
                                                                  strict=True))}
    hit = np.array([row_of.get((str(s), str(k), int(t)), -1) for s, k, t in zip(scenario_id, track_id, t0, strict=True)],
                   dtype=np.int64)
    found = hit >= 0
    out = {}
    for tag in TAGS:
        v = np.zeros(len(hit), dtype=bool)
        v[found] = np.asarray(cols[tag], dtype=bool)[hit[found]]
        out[tag] = v
    return out
