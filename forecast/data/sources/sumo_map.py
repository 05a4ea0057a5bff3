"""SUMO network (``.net.xml``) -> map feature rows (lanes, centerlines, sidewalks, crossings, ...)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import shapely
from shapely.geometry import LineString, Polygon

from forecast.data.schema import MAP_SCHEMA

# Lanes that allow any of these carry vehicles or bicycles and form the drivable area.
_ROAD_CLASSES = {"passenger", "bus", "truck", "delivery", "bicycle", "motorcycle", "taxi"}


def net_to_map_table(net_path: Path, map_id: str) -> pa.Table:
    """Read a SUMO network with sumolib and return ``MAP_SCHEMA`` rows.

    Layers: ``lane`` (lane polygons: shape buffered by half the width, flat caps),
    ``lane_centerline`` (lane shapes), ``sidewalk`` (pedestrian-only lanes of normal edges),
    ``crosswalk`` (crossing edges), ``walking_area`` (walking-area edges, whose shape is the
    area's outline), ``drivable_area`` (union of road lanes, internal lanes and junction shapes).
    """
    import sumolib

    net = sumolib.net.readNet(str(net_path), withInternal=True, withPedestrianConnections=True)
    rows: list[dict] = []
    road_polys = []

    def add(fid: str, layer: str, geom, speed=None, allowed=None) -> None:
        if geom is None or geom.is_empty:
            return
        rows.append(
            {
                "map_id": map_id,
                "feature_id": fid,
                "layer": layer,
                "geometry": shapely.to_wkb(geom),
                "speed_limit": speed,
                "allowed": allowed,
            }
        )

    for edge in net.getEdges(withInternal=True):
        function = edge.getFunction()
        for lane in edge.getLanes():
            shape = lane.getShape()
            if len(shape) < 2:
                continue
            allowed = set(lane.getPermissions())
            allowed_text = " ".join(sorted(allowed & (_ROAD_CLASSES | {"pedestrian"})))
            width = float(lane.getWidth())
            line = LineString(shape)
            poly = line.buffer(width / 2.0, cap_style="flat")
            lid = lane.getID()
            if function == "crossing":
                add(lid, "crosswalk", poly, allowed="pedestrian")
            elif function == "walkingarea":
                outline = Polygon(shape) if len(shape) >= 3 else poly
                add(lid, "walking_area", outline.buffer(0), allowed="pedestrian")
            elif allowed == {"pedestrian"} or allowed <= {"pedestrian", "wheelchair"}:
                if function == "":
                    add(lid, "sidewalk", poly, speed=lane.getSpeed(), allowed="pedestrian")
            elif allowed & _ROAD_CLASSES:
                road_polys.append(poly)
                if function == "":
                    add(lid, "lane", poly, speed=lane.getSpeed(), allowed=allowed_text)
                    add(lid, "lane_centerline", line, speed=lane.getSpeed(), allowed=allowed_text)
                else:  # internal lanes: paths through junctions
                    add(lid, "lane_centerline", line, speed=lane.getSpeed(), allowed=allowed_text)
    for node in net.getNodes():
        shape = node.getShape()
        if len(shape) >= 3:
            road_polys.append(Polygon(shape).buffer(0))
    if road_polys:
        drivable = shapely.union_all(road_polys)
        parts = list(getattr(drivable, "geoms", [drivable]))
        for i, part in enumerate(parts):
            add(f"drivable_{i}", "drivable_area", part)
    return pa.Table.from_pylist(rows, schema=MAP_SCHEMA)
