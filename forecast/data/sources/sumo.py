"""SUMO adapter: FCD Parquet + ``.net.xml`` of one simulation run -> canonical rows and map.

A run directory (written by ``forecast simulate``) holds ``fcd.parquet``, ``<name>.net.xml``
and ``run.json`` (split, network name, seed, vType classes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forecast.data.ingest import ParsedUnit, Unit
from forecast.data.schema import AgentType
from forecast.data.validate import Quarantine, RawRows, dictionary_code

FCD_COLUMNS = {
    "timestep_time": pa.float64(),
    "vehicle_id": pa.string(),
    "vehicle_x": pa.float64(),
    "vehicle_y": pa.float64(),
    "vehicle_angle": pa.float64(),
    "vehicle_type": pa.string(),
    "vehicle_speed": pa.float64(),
}
SUMO_DT = 0.1

# SUMO vehicle classes -> our classes (SUMO's own vClass names).
VCLASS_TO_TYPE = {
    "passenger": AgentType.VEHICLE,
    "private": AgentType.VEHICLE,
    "taxi": AgentType.VEHICLE,
    "bus": AgentType.VEHICLE,
    "coach": AgentType.VEHICLE,
    "delivery": AgentType.VEHICLE,
    "truck": AgentType.VEHICLE,
    "trailer": AgentType.VEHICLE,
    "emergency": AgentType.VEHICLE,
    "evehicle": AgentType.VEHICLE,
    "motorcycle": AgentType.CYCLIST,
    "moped": AgentType.CYCLIST,
    "bicycle": AgentType.CYCLIST,
    "scooter": AgentType.CYCLIST,
    "pedestrian": AgentType.PEDESTRIAN,
    "wheelchair": AgentType.PEDESTRIAN,
    "tram": AgentType.OTHER,
    "rail_urban": AgentType.OTHER,
}
# SUMO's built-in type ids and their classes, used when run.json does not list a type.
DEFAULT_VTYPES = {
    "DEFAULT_VEHTYPE": "passenger",
    "DEFAULT_PEDTYPE": "pedestrian",
    "DEFAULT_BIKETYPE": "bicycle",
    "DEFAULT_TAXITYPE": "taxi",
    "DEFAULT_RAILTYPE": "rail_urban",
    "DEFAULT_CONTAINERTYPE": "container",
}


def sumo_angle_to_heading(angle_deg: np.ndarray) -> np.ndarray:
    """SUMO angle (degrees clockwise from north) -> heading (radians CCW from +x) in (-pi, pi].

    North (0 deg) -> pi/2; east (90 deg) -> 0; south (180 deg) -> -pi/2; west (270 deg) -> pi.
    """
    h = np.deg2rad(90.0 - np.asarray(angle_deg, dtype=np.float64))
    return np.pi - np.mod(np.pi - h, 2 * np.pi)


class SumoAdapter:
    name = "sumo"

    def __init__(self, scenario_length_s: float = 10.0):
        self.window_steps = int(round(scenario_length_s / SUMO_DT))

    def discover(self, root: Path, split: str | None) -> list[Unit]:
        units = []
        for fcd in sorted(Path(root).rglob("fcd.parquet")):
            if any(part.startswith(".") for part in fcd.relative_to(root).parts):
                continue  # a simulation still being written (or killed) lives in a hidden folder
            run_dir = fcd.parent
            meta = _read_meta(run_dir)
            nets = sorted(run_dir.glob("*.net.xml"))
            run_split = split or meta.get("split") or run_dir.parent.name
            name = meta.get("network", run_dir.name)
            key = f"sumo/{run_split}/{name}/seed{meta.get('seed', 0)}"
            files = (fcd, *nets) + ((run_dir / "run.json",) if (run_dir / "run.json").exists() else ())
            units.append(Unit(key=key, source="sumo", split=run_split, files=files))
        return units

    def parse(self, unit: Unit) -> ParsedUnit:
        fcd = unit.files[0]
        run_dir = fcd.parent
        meta = _read_meta(run_dir)
        name = meta.get("network", run_dir.name)
        map_id = f"sumo:{name}"
        base = ParsedUnit(
            unit=unit,
            source_file=str(fcd),
            dt=SUMO_DT,
            rows=None,
            rows_read=0,
            file_quarantine=Quarantine.empty("sumo", str(fcd)),
            scenario_prefix=f"sumo:{name}:s{meta.get('seed', 0)}",
            window_steps=self.window_steps,
            map_id=map_id,
        )
        nets = [p for p in unit.files if p.name.endswith(".net.xml")]
        if nets:
            from forecast.data.sources.sumo_map import net_to_map_table

            try:
                base.maps = {map_id: net_to_map_table(nets[0], map_id)}
            except Exception as exc:  # a broken map must not lose the tracks
                base.map_id = None
                base.file_quarantine = Quarantine.whole_file("sumo", str(nets[0]), "net", f"unreadable network: {exc}")
        else:
            base.map_id = None
        try:
            table = pq.read_table(fcd)
        except Exception as exc:
            base.file_quarantine = Quarantine.whole_file("sumo", str(fcd), "file", f"unreadable Parquet: {exc}")
            return base
        base.rows_read = table.num_rows
        problem = _check_columns(table)
        if problem:
            column, why = problem
            base.file_quarantine = Quarantine.whole_file("sumo", str(fcd), column, why, rows=table.num_rows)
            return base
        base.rows = fcd_to_rows(table, meta.get("vtypes", {}))
        return base


def fcd_to_rows(table: pa.Table, vtypes: dict[str, str]) -> RawRows:
    """FCD table -> RawRows; vectorised (Arrow dictionary encoding, numpy arithmetic)."""
    cols = {c: table.column(c).cast(t) for c, t in FCD_COLUMNS.items()}
    track_code, track_names = dictionary_code(cols["vehicle_id"])
    type_code, type_names = dictionary_code(cols["vehicle_type"])
    classes = {**DEFAULT_VTYPES, **vtypes}
    type_map = np.array([VCLASS_TO_TYPE.get(classes.get(t, ""), -1) for t in type_names], dtype=np.int8)
    speed = cols["vehicle_speed"].to_numpy()
    heading = sumo_angle_to_heading(cols["vehicle_angle"].to_numpy())
    time = cols["timestep_time"].to_numpy()
    return RawRows(
        track_code=track_code,
        track_names=track_names,
        type_code=type_code,
        type_names=type_names,
        type_map=type_map,
        time=time,
        x=cols["vehicle_x"].to_numpy(),
        y=cols["vehicle_y"].to_numpy(),
        heading=heading,
        vx=speed * np.cos(heading),
        vy=speed * np.sin(heading),
        observed=np.ones(table.num_rows, dtype=bool),
        speed=speed,
    )


def _check_columns(table: pa.Table) -> tuple[str, str] | None:
    for column, typ in FCD_COLUMNS.items():
        if column not in table.column_names:
            return column, f"missing column {column!r}"
        have = table.schema.field(column).type
        if not (have == typ or (pa.types.is_floating(typ) and (pa.types.is_floating(have) or pa.types.is_integer(have)))
                or (pa.types.is_string(typ) and (pa.types.is_string(have) or pa.types.is_large_string(have)))):
            return column, f"column {column!r} has type {have}, expected {typ}"
    return None


def _read_meta(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}
