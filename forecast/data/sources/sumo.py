"""SUMO adapter: FCD Parquet + ``.net.xml`` of one simulation run -> canonical rows and map.

A run directory (written by ``forecast simulate``) holds ``fcd.parquet``, ``<name>.net.xml``
and ``run.json`` (split, network name, seed, vType classes and lengths).

SUMO reports a vehicle's position at the centre of its FRONT bumper; the store holds the
vehicle's centre, half its length back along the path the front has driven
(``sumo_centre``). Persons are reported at their centre and kept there, as are the stationary
traffic-signal objects the simulator adds (class ``traffic_signal``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forecast.data.ingest import ParsedUnit, Unit
from forecast.data.schema import MAX_SPEED, AgentType
from forecast.data.sources.sumo_centre import centre_from_front
from forecast.data.validate import Quarantine, RawRows, dictionary_code
from forecast.sim.signals import SIGNAL_VCLASS

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
# A one-step move may exceed the reported speed x 0.1 s by this much (lateral motion of a lane
# change, the turn of a vehicle's centre about its front); more is a jump, not motion.
JUMP_TOLERANCE_M = 1.0

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
    SIGNAL_VCLASS: AgentType.TRAFFIC_SIGNAL,  # a closed traffic-signal approach (forecast.sim.signals)
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


# SUMO's default vehicle length (m) per vClass: SUMO 1.28's values, read with
# traci.vehicletype.getLength (a test checks them against the installed SUMO). A vType
# without a vClass is a passenger car, as in SUMO.
DEFAULT_LENGTH = {
    "passenger": 5.0, "private": 5.0, "taxi": 5.0, "evehicle": 5.0, "bus": 12.0, "coach": 14.0,
    "delivery": 6.5, "truck": 7.1, "trailer": 16.5, "emergency": 6.5, "motorcycle": 2.2, "moped": 2.1,
    "bicycle": 1.6, "scooter": 1.2, "pedestrian": 0.215, "wheelchair": 1.2, "tram": 22.0, "rail_urban": 109.5,
}
# Classes SUMO reports at their centre (persons); every other class at its front bumper.
CENTRE_REFERENCED = {"pedestrian", "wheelchair", SIGNAL_VCLASS}


def sumo_angle_to_heading(angle_deg: np.ndarray) -> np.ndarray:
    """SUMO angle (degrees clockwise from north) -> heading (radians CCW from +x) in (-pi, pi].

    North (0 deg) -> pi/2; east (90 deg) -> 0; south (180 deg) -> -pi/2; west (270 deg) -> pi.
    """
    h = np.deg2rad(90.0 - np.asarray(angle_deg, dtype=np.float64))
    return np.pi - np.mod(np.pi - h, 2 * np.pi)


class SumoAdapter:
    name = "sumo"

    def __init__(self, scenario_length_s: float = 10.0):
        steps = scenario_length_s / SUMO_DT
        if not (math.isfinite(steps) and steps >= 1 and abs(steps - round(steps)) < 1e-6):
            raise ValueError(f"scenario length must be a positive multiple of the {SUMO_DT:g} s SUMO step, "
                             f"got {scenario_length_s!r} s")
        self.window_steps = int(round(steps))

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
                # beside, not in, file_quarantine: that one is the FCD file's, and a broken FCD
                # file must not overwrite this record
                base.other_quarantines.append(
                    Quarantine.whole_file("sumo", str(nets[0]), "net", f"unreadable network: {exc}"))
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
        rows = fcd_to_rows(table, meta.get("vtypes", {}), meta.get("vtype_lengths", {}))
        base.rows = rows
        return base


def vtype_half_lengths(type_names: np.ndarray, vtypes: dict[str, str], lengths: dict[str, float]) -> np.ndarray:
    """[V] metres from the reported point back to the centre, per vType: half the length.

    The length is the vType's own (``lengths``, from the demand files), else SUMO's default
    for its vClass; 0 for persons (reported at their centre) and for unknown vTypes.
    """
    classes = {**DEFAULT_VTYPES, **vtypes}
    out = np.zeros(len(type_names))
    for i, name in enumerate(type_names):
        vclass = classes.get(name)
        if vclass is None or vclass in CENTRE_REFERENCED:
            continue
        out[i] = float(lengths.get(name, DEFAULT_LENGTH.get(vclass, DEFAULT_LENGTH["passenger"]))) / 2.0
    return out


def fcd_to_rows(table: pa.Table, vtypes: dict[str, str], lengths: dict[str, float] | None = None) -> RawRows:
    """FCD table -> RawRows at each agent's centre; vectorised (Arrow dictionary encoding, numpy).

    ``vtypes`` maps vType ids to vClasses and ``lengths`` vType ids to lengths (m) where the
    demand declares them. Vehicles and bicycles move from their front bumper to their centre,
    half their length back along the path driven (behind a track's first row: along its heading).
    """
    cols = {c: table.column(c).cast(t) for c, t in FCD_COLUMNS.items()}
    track_code, track_names = dictionary_code(cols["vehicle_id"])
    type_code, type_names = dictionary_code(cols["vehicle_type"])
    classes = {**DEFAULT_VTYPES, **vtypes}
    type_map = np.array([VCLASS_TO_TYPE.get(classes.get(t, ""), -1) for t in type_names], dtype=np.int8)
    speed = cols["vehicle_speed"].to_numpy()
    heading = sumo_angle_to_heading(cols["vehicle_angle"].to_numpy())
    time = cols["timestep_time"].to_numpy()
    half = vtype_half_lengths(type_names, vtypes, lengths or {})[type_code]  # [N] metres
    x, y = cols["vehicle_x"].to_numpy(), cols["vehicle_y"].to_numpy()
    # Codes ranked by name, so that the centres do not depend on the order of the file's rows.
    by_name = np.empty(len(track_names), np.int64)
    by_name[sorted(range(len(track_names)), key=lambda i: str(track_names[i]))] = np.arange(len(track_names))
    limit = np.array([MAX_SPEED[AgentType(t)] if t >= 0 else np.inf for t in type_map])[type_code]
    # persons (half 0) stay; glitches and teleports are kept out of the paths
    x, y = centre_from_front(by_name[track_code], time, x, y, heading, half, speed, limit, JUMP_TOLERANCE_M)
    return RawRows(
        track_code=track_code,
        track_names=track_names,
        type_code=type_code,
        type_names=type_names,
        type_map=type_map,
        time=time,
        x=x,
        y=y,
        heading=heading,
        vx=speed * np.cos(heading),
        vy=speed * np.sin(heading),
        observed=np.ones(table.num_rows, dtype=bool),
        speed=speed,
        jump_tolerance_m=JUMP_TOLERANCE_M,
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


# run.json fields the adapter reads, with their JSON types (anything else in the file is ignored).
_META_FIELDS = {"network": str, "split": str, "seed": int, "vtypes": dict, "vtype_lengths": dict}


def _read_meta(run_dir: Path) -> dict:
    """The run's ``run.json`` (``{}`` if there is none); a malformed file raises ValueError naming it."""
    path = run_dir / "run.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key, typ in _META_FIELDS.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            raise ValueError(f"{path}: field {key!r} must be {typ.__name__}, got {value!r:.80}")
    for key, value in meta.get("vtypes", {}).items():
        if not isinstance(value, str):
            raise ValueError(f"{path}: field 'vtypes.{key}' must be a vClass name, got {value!r:.80}")
    for key, value in meta.get("vtype_lengths", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e3:
            raise ValueError(f"{path}: field 'vtype_lengths.{key}' must be a length in metres, got {value!r:.80}")
    return meta
