"""Traffic signals as stop walls: the state timeline, the FCD rows, and that SUMO's traffic obeys them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forecast.data.schema import AgentType
from forecast.sim.signals import SIGNAL_VTYPE, Approach, approaches, closed_mask, signal_rows


def _approach(links=(0, 1)) -> Approach:
    return Approach("tls:e1", "J1", tuple(links), 10.0, 20.0, np.pi / 2)


def test_closed_only_when_every_link_must_stop():
    switch_times = np.array([5.0, 10.0, 13.0, 20.0])
    states = ["GGr", "yyr", "rrG", "rGr"]
    times = np.array([0.0, 4.9, 5.0, 9.9, 10.0, 12.9, 13.0, 19.9, 20.0, 30.0])
    # before the first switch: unknown, so open; yellow counts as closed; one green link keeps it open
    expected = [False, False, False, False, True, True, True, True, False, False]
    np.testing.assert_array_equal(closed_mask(_approach(), switch_times, states, times), expected)
    # the third link's own approach is the mirror image while the others are green
    np.testing.assert_array_equal(closed_mask(_approach((2,)), switch_times, states, times),
                                  [False, False, True, True, True, True, False, False, True, True])


def test_rows_keep_the_fcd_schema_and_stand_still():
    schema = pa.schema([("timestep_time", pa.float64()), ("vehicle_id", pa.string()), ("vehicle_x", pa.float64()),
                        ("vehicle_y", pa.float64()), ("vehicle_angle", pa.float32()), ("vehicle_type", pa.string()),
                        ("vehicle_speed", pa.float32()), ("vehicle_lane", pa.string())])
    times = np.round(np.arange(0, 30, 0.1), 1)
    rows = signal_rows([_approach(), Approach("tls:x", "J2", (0,), 0.0, 0.0, 0.0)],
                       {"J1": (np.array([0.0, 10.0]), ["GG", "rr"])}, times, schema)
    assert rows.schema == schema
    assert rows.num_rows == int((times >= 10.0).sum())  # J2 never switched: no rows for it
    d = rows.to_pydict()
    assert set(d["vehicle_id"]) == {"tls:e1"} and set(d["vehicle_type"]) == {SIGNAL_VTYPE}
    assert set(d["vehicle_x"]) == {10.0} and set(d["vehicle_y"]) == {20.0} and set(d["vehicle_speed"]) == {0.0}
    assert set(d["vehicle_angle"]) == {0.0}  # heading north is SUMO's 0 degrees
    assert set(d["vehicle_lane"]) == {None}


def _signal_and_traffic(run_dir):
    fcd = pq.read_table(run_dir / "fcd.parquet")
    is_sig = pc.equal(fcd["vehicle_type"], SIGNAL_VTYPE)
    return fcd.filter(is_sig).to_pydict(), fcd.filter(pc.invert(is_sig)).to_pydict()


def test_walls_stand_at_signalised_stop_lines(sumo_runs):
    run = sumo_runs / "val" / "g_val"
    net = next(run.glob("*.net.xml"))
    walls, _ = _signal_and_traffic(run)
    found = {a.object_id: a for a in approaches(net)}
    assert walls["vehicle_id"] and set(walls["vehicle_id"]) <= set(found)
    for oid, x, y in zip(walls["vehicle_id"], walls["vehicle_x"], walls["vehicle_y"], strict=True):
        assert (x, y) == (found[oid].x, found[oid].y)  # stationary, where its approach is
    # a road approach's wall lies across the ends of its lanes (within a lane or two of each end)
    import sumolib

    sn = sumolib.net.readNet(str(net), withInternal=True, withPedestrianConnections=True)
    for oid in {o for o in walls["vehicle_id"] if not o.startswith("tls::")}:
        ends = np.array([lane.getShape()[-1] for lane in sn.getEdge(oid[4:]).getLanes()])
        assert np.hypot(*(ends - (found[oid].x, found[oid].y)).T).max() < 8.0


def test_no_vehicle_enters_a_junction_through_a_closed_approach(sumo_runs):
    """SUMO's cars obey the lights, so the walls must match them: once an approach has been closed for
    6 s (past its yellow), no vehicle moves from one of its lanes into the junction."""
    checked = 0
    for run in sorted(p.parent for p in sumo_runs.rglob("fcd.parquet")):
        walls, cars = _signal_and_traffic(run)
        closed = {}
        for oid, t in zip(walls["vehicle_id"], walls["timestep_time"], strict=True):
            closed.setdefault(oid[4:], set()).add(round(t * 10))
        last: dict[str, tuple[int, str]] = {}
        order = np.lexsort((np.array(cars["timestep_time"]), np.array(cars["vehicle_id"], dtype=object)))
        for i in order:
            vid, lane, step = cars["vehicle_id"][i], cars["vehicle_lane"][i], round(cars["timestep_time"][i] * 10)
            prev = last.get(vid)
            last[vid] = (step, lane)
            if prev is None or prev[1] is None or lane is None or not lane.startswith(":") or prev[1].startswith(":"):
                continue
            edge = prev[1].rsplit("_", 1)[0]
            if edge in closed:
                checked += 1
                was_closed = all(s in closed[edge] for s in range(step - 60, step + 1))
                assert not was_closed, f"{run.name}: {vid} left {prev[1]} into {lane} at {step / 10} s, closed 6 s"
    assert checked >= 5  # vehicles did enter signalised junctions (8 in the fixture's 40 s runs)


def test_ingested_as_context_of_their_own_class(sumo_store):
    scen = next(s for s in (sumo_store.load_scenario(i.scenario_id) for i in sumo_store.scenarios())
                if (s.agent_type == AgentType.TRAFFIC_SIGNAL).any())
    walls = scen.agent_type == AgentType.TRAFFIC_SIGNAL
    xy = scen.xy[walls]
    present = scen.present[walls]
    # stationary: every present step of a wall is at its first position
    first = xy[np.arange(len(xy)), present.argmax(1)]
    assert np.allclose(np.where(present[..., None], xy - first[:, None], 0.0), 0.0)
