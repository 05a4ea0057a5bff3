"""Traffic signals as stationary objects: where a signalised approach is closed, a stop wall stands.

SUMO's traffic lights decide much of what its vehicles, cyclists and pedestrians do next (a car
30 m before a red light stops; a queue starts when it turns green), and nothing in the agents'
past says when a light changes. The simulator therefore writes each closed approach as an object
of its own: one per road approach (an incoming edge of a signalised junction) and one per
signalised crossing, standing at the stop line (the ends of the approach's lanes) or at the
crossing's middle, heading the way its traffic goes, present in every step in which all the
approach's links show red or yellow. It is the "virtual stop wall" of planners; the vehicle
runtime passes a closed signal the same way, as a ``traffic_signal`` detection at the stop line.

The objects go into the FCD table with their own vType (``SIGNAL_VTYPE``), so the store, the
sample builder, the model and the runtime read them as context agents of class ``traffic_signal``
(never a target, never in a collision or overlap count), with no raster channel of their own.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

SIGNAL_VTYPE = "traffic_signal"
SIGNAL_VCLASS = "traffic_signal"  # the class run.json gives the vType; the adapter maps it to AgentType.TRAFFIC_SIGNAL
TLS_ADDITIONAL = '<additional>\n    <timedEvent type="SaveTLSSwitchStates" dest="tls.xml"/>\n</additional>\n'
STOP_STATES = frozenset("rRyYu")  # red, yellow, red-yellow: traffic on the link must stop (or is about to)


@dataclass(frozen=True)
class Approach:
    """One group of signalised links whose closing makes one stop wall."""

    object_id: str  # "tls:<edge or crossing id>"
    tls_id: str
    links: tuple[int, ...]  # indices into the traffic light's state string
    x: float
    y: float
    heading: float  # radians CCW from +x: the direction its traffic goes


def approaches(net_path: Path) -> list[Approach]:
    """The signalised approaches of a network: one per incoming road edge, one per crossing."""
    import sumolib

    net = sumolib.net.readNet(str(net_path), withInternal=True, withPedestrianConnections=True)
    groups: dict[tuple[str, str], dict] = {}
    for tls in net.getTrafficLights():
        for in_lane, out_lane, link in tls.getConnections():
            crossing = out_lane.getEdge().getFunction() == "crossing"
            if not crossing and in_lane.getEdge().getFunction() != "":
                continue  # a link from inside the junction: no approach of its own
            lane = out_lane if crossing else in_lane
            key = lane.getID() if crossing else lane.getEdge().getID()
            g = groups.setdefault((tls.getID(), key), {"links": set(), "lanes": {}, "crossing": crossing})
            g["links"].add(int(link))
            g["lanes"][lane.getID()] = lane
    out = []
    for (tls_id, key), g in sorted(groups.items()):
        shapes = [np.asarray(lane.getShape(), float) for _, lane in sorted(g["lanes"].items())]
        shapes = [s for s in shapes if len(s) >= 2]
        if not shapes:
            continue
        if g["crossing"]:
            s = shapes[0]
            x, y = (s[0] + s[-1]) / 2.0
            d = s[-1] - s[0]
        else:  # the stop line: the lanes' ends, heading along their last segments
            ends = np.stack([s[-1] for s in shapes])
            x, y = ends.mean(0)
            d = np.sum([(s[-1] - s[-2]) / max(np.hypot(*(s[-1] - s[-2])), 1e-9) for s in shapes], axis=0)
        out.append(Approach(f"tls:{key}", tls_id, tuple(sorted(g["links"])), float(x), float(y),
                            float(math.atan2(d[1], d[0]))))
    return out


def read_switches(path: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``tls.xml`` of SaveTLSSwitchStates -> per traffic light (switch times [S] s, states [S])."""
    per: dict[str, tuple[list[float], list[str]]] = {}
    for _, el in ET.iterparse(path):
        if el.tag == "tlsState":
            times, states = per.setdefault(el.get("id"), ([], []))
            times.append(float(el.get("time")))
            states.append(el.get("state"))
            el.clear()
    out = {}
    for tls_id, (times, states) in per.items():
        order = np.argsort(np.asarray(times), kind="stable")
        out[tls_id] = (np.asarray(times)[order], [states[i] for i in order])
    return out


def closed_mask(approach: Approach, switch_times: np.ndarray, states: list[str], times: np.ndarray) -> np.ndarray:
    """[T] bool: the approach is closed (every link red or yellow) at each of ``times`` [T] s.

    Before the first switch the state is unknown and the approach counts as open.
    """
    closed = np.array([all(s[i] in STOP_STATES for i in approach.links if i < len(s)) for s in states])
    k = np.searchsorted(switch_times, times + 1e-6, side="right") - 1  # the last switch at or before t
    return np.where(k >= 0, closed[np.maximum(k, 0)], False)


def signal_rows(approach_list: list[Approach], switches: dict[str, tuple[np.ndarray, list[str]]],
                times: np.ndarray, schema: pa.Schema) -> pa.Table:
    """FCD-shaped rows of the closed approaches at ``times`` [T] (the FCD's own time steps).

    ``schema`` is the FCD table's: columns it has beyond the ones written here are null.
    """
    cols: dict[str, list[np.ndarray]] = {"timestep_time": [], "vehicle_id": [], "vehicle_x": [], "vehicle_y": [],
                                         "vehicle_angle": []}
    for a in approach_list:
        if a.tls_id not in switches:
            continue
        at = times[closed_mask(a, *switches[a.tls_id], times)]
        n = len(at)
        cols["timestep_time"].append(at)
        cols["vehicle_id"].append(np.full(n, a.object_id, object))
        cols["vehicle_x"].append(np.full(n, a.x))
        cols["vehicle_y"].append(np.full(n, a.y))
        # SUMO's angle: degrees clockwise from north
        cols["vehicle_angle"].append(np.full(n, (90.0 - math.degrees(a.heading)) % 360.0))
    flat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    n = len(flat["timestep_time"])
    data = {"vehicle_type": np.full(n, SIGNAL_VTYPE, object), "vehicle_speed": np.zeros(n), **flat}
    arrays = [pa.array(data[f.name], f.type) if f.name in data else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
