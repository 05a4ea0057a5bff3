"""ETH/UCY adapter: ``frame pedestrian_id x y`` text files -> canonical pedestrian rows.

Layout (``/work/shared/data/eth_ucy``): ``<scene>/<split>/<name>.txt``, one leave-one-out
split per scene. Each file is one unit and one scenario (no windows, no map). Positions are
metres in the scene's world frame; one frame step is 0.4 s, as in the literature, whatever
the frame numbers step by (10 in most files, 6 in the original ETH annotation).

Velocity and heading are derived here from positions with *backward* differences only, so
that no feature of an observed step reads a later position (the Trajectron++ leak, see the
data README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.ingest import ParsedUnit, Unit
from forecast.data.schema import SPLITS, AgentType
from forecast.data.validate import Quarantine, RawRows, validate_rows

SOURCE = "eth_ucy"
ETH_UCY_DT = 0.4  # s per frame step (2.5 Hz)
DEFAULT_FRAME_STEP = 10.0  # used only when a file has fewer than two distinct frames
HEADING_MIN_SPEED = 0.05  # m/s; below this the heading is carried forward from the past
FIELDS = ("frame", "pedestrian_id", "x", "y")
# Numbers Arrow's string->float64 cast accepts; anything else is a malformed field.
_NUMBER_RE = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf|infinity))$"


@dataclass
class TextRows:
    """Well-formed rows of one file ``[M]`` plus the rejects of parsing ``[Q]``.

    ``row`` is each kept row's 0-based data row in the file (blank lines are not data rows).
    """

    row: np.ndarray  # [M] int64
    frame: np.ndarray  # [M] float64, frame number as written (NaN allowed: the validator rejects it)
    pedestrian_id: np.ndarray  # [M] float64, finite
    x: np.ndarray  # [M] float64, metres (NaN allowed: the validator rejects it)
    y: np.ndarray  # [M] float64, metres
    rows_read: int  # data rows in the file, kept + rejected
    bad_row: np.ndarray  # [Q] int64
    bad_field: np.ndarray  # [Q] object (str)
    bad_reason: np.ndarray  # [Q] object (str)


class EthUcyAdapter:
    """Discover and parse ETH/UCY files; validation and writing are ``forecast.data.ingest``'s."""

    name = SOURCE

    def discover(self, root: Path, split: str | None) -> list[Unit]:
        """One unit per ``.txt`` file under ``root`` (a ``<scene>/<split>`` folder, a scene, or all scenes).

        The split is the file's folder name unless ``split`` is given; the scene is the folder
        above the split folder (or the file's own folder when that is not a split name).
        """
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*.txt") if p.is_file())
        units: list[Unit] = []
        for path in files:
            scene, folder_split = _scene_and_split(path)
            unit_split = split or folder_split
            units.append(Unit(key=f"{SOURCE}/{scene}/{unit_split}/{path.stem}", source=SOURCE, split=unit_split,
                              files=(path,)))
        keys = [u.key for u in units]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            # Two files with one key would overwrite each other's output in the store.
            raise ValueError(f"ETH/UCY files under {root} map to the same unit key: {dup[:5]}")
        return units

    def parse(self, unit: Unit) -> ParsedUnit:
        """Read one file into ``RawRows`` (time in s, metres, m/s); malformed lines are quarantined."""
        path = unit.files[0]
        scene = unit.key.split("/")[1]
        base = ParsedUnit(
            unit=unit,
            source_file=str(path),
            dt=ETH_UCY_DT,
            rows=None,
            rows_read=0,
            file_quarantine=Quarantine.empty(SOURCE, str(path)),
            scenario_prefix=f"{SOURCE}:{scene}:{unit.split}:{path.stem}",
            window_steps=None,  # one scenario per file
            map_id=None,  # ETH/UCY ships no maps
        )
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first frame
        except (OSError, UnicodeDecodeError) as exc:
            base.file_quarantine = Quarantine.whole_file(SOURCE, str(path), "file", f"unreadable file: {exc}")
            return base
        parsed = parse_text(text)
        base.rows_read = parsed.rows_read
        base.file_quarantine = Quarantine(SOURCE, str(path), parsed.bad_row, parsed.bad_field, parsed.bad_reason)
        if len(parsed.row):
            base.rows = to_raw_rows(parsed, str(path))
        return base


def _scene_and_split(path: Path) -> tuple[str, str]:
    folder = path.parent.name
    if folder in SPLITS:
        return path.parent.parent.name, folder
    return folder, folder  # not a split folder: ingest rejects the split unless --split is given


def parse_text(text: str) -> TextRows:
    """Split the file into fields with Arrow kernels (no loop per row) and sort out malformed lines.

    A line is malformed when it does not have exactly four whitespace-separated fields, when a
    field is not a number, or when the pedestrian id is not finite. NaN positions and frames
    are passed on: the validator quarantines them with the other row checks.
    """
    lines = pc.utf8_trim_whitespace(pa.array(text.splitlines(), pa.string()))
    data = pc.not_equal(lines, "").to_numpy(zero_copy_only=False)
    lines = lines.filter(pa.array(data))
    n = len(lines)
    fields = pc.utf8_split_whitespace(lines)
    count = pc.list_value_length(fields).to_numpy(zero_copy_only=False).astype(np.int64)
    reason = np.full(n, None, dtype=object)
    field = np.full(n, None, dtype=object)
    wrong = count != len(FIELDS)
    field[wrong] = "line"
    reason[wrong] = np.char.add(f"expected {len(FIELDS)} fields (frame pedestrian_id x y), got ",
                                count[wrong].astype(str)).astype(object)

    values = np.full((n, len(FIELDS)), np.nan)
    ok4 = np.flatnonzero(~wrong)
    four = fields.take(pa.array(ok4, pa.int64()))
    for j, name in enumerate(FIELDS):
        col = pc.list_element(four, j)
        numeric = pc.match_substring_regex(col, _NUMBER_RE)
        bad = ok4[~numeric.to_numpy(zero_copy_only=False)]
        first = bad[reason[bad] == None]  # noqa: E711 - elementwise; the first bad field of a line wins
        if len(first):
            text_bad = pc.list_element(fields.take(pa.array(first, pa.int64())), j)
            field[first] = name
            reason[first] = np.asarray(
                pc.binary_join_element_wise("non-numeric value '", text_bad, "'", "").to_pylist(), dtype=object
            )
        # Non-numbers become NaN so that one cast converts the whole column.
        values[ok4, j] = pc.cast(pc.if_else(numeric, col, "nan"), pa.float64()).to_numpy(zero_copy_only=False)
    bad_id = (reason == None) & ~np.isfinite(values[:, 1])  # noqa: E711
    field[bad_id] = "pedestrian_id"
    reason[bad_id] = "non-finite pedestrian id"

    keep = reason == None  # noqa: E711
    bad = np.flatnonzero(~keep)
    return TextRows(
        row=np.flatnonzero(keep).astype(np.int64),
        frame=values[keep, 0],
        pedestrian_id=values[keep, 1],
        x=values[keep, 2],
        y=values[keep, 3],
        rows_read=n,
        bad_row=bad.astype(np.int64),
        bad_field=field[bad],
        bad_reason=reason[bad],
    )


def frame_step(frame: np.ndarray) -> float:
    """The file's frame step: the most common positive gap between consecutive distinct frames.

    ``frame`` [M] float64 (NaN ignored). Off-grid frames add a few odd gaps but do not
    outvote the regular one; with fewer than two distinct frames the step cannot be seen
    and ``DEFAULT_FRAME_STEP`` is returned.
    """
    distinct = np.unique(frame[np.isfinite(frame)])
    gaps = np.round(np.diff(distinct), 6)  # frames are integers in practice; rounding guards float noise
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return DEFAULT_FRAME_STEP
    values, counts = np.unique(gaps, return_counts=True)
    return float(values[np.argmax(counts)])


def frame_time(frame: np.ndarray, dt: float = ETH_UCY_DT) -> np.ndarray:
    """[M] seconds from the file's first frame: ``(frame - first) / step * dt``.

    Kept exact (not rounded to the grid) so that the validator sees and quarantines frames
    that are off the step grid.
    """
    finite = np.isfinite(frame)
    first = frame[finite].min() if finite.any() else 0.0
    return (frame - first) / frame_step(frame) * dt


def to_raw_rows(parsed: TextRows, source_file: str) -> RawRows:
    """Well-formed text rows -> ``RawRows`` in file order, with past-only velocity and heading."""
    ids, track_code = np.unique(parsed.pedestrian_id, return_inverse=True)
    m = len(parsed.row)
    nan = np.full(m, np.nan)
    rows = RawRows(
        track_code=track_code.astype(np.int64),
        track_names=np.array([_id_name(v) for v in ids], dtype=object),  # one per pedestrian, not per row
        type_code=np.zeros(m, dtype=np.int64),
        type_names=np.array(["pedestrian"], dtype=object),
        type_map=np.array([AgentType.PEDESTRIAN], dtype=np.int8),
        time=frame_time(parsed.frame),
        x=parsed.x,
        y=parsed.y,
        heading=nan.copy(),
        vx=nan.copy(),
        vy=nan.copy(),
        observed=np.ones(m, dtype=bool),
        file_row=parsed.row,
    )
    # Differences must run between the rows that the store will keep: a row the validator
    # rejects (NaN, off-grid, duplicate, ...) must not become a neighbour's "previous
    # position". Running the shared validator here (it ignores vx/vy/heading, so ingest
    # reaches the same verdict) gives exactly that set without copying its rules.
    keep, timestep, _ = validate_rows(rows, ETH_UCY_DT, SOURCE, source_file)
    vx, vy, heading = past_velocity(rows.track_code[keep], timestep, rows.x[keep], rows.y[keep], ETH_UCY_DT)
    rows.vx[keep], rows.vy[keep], rows.heading[keep] = vx, vy, heading
    return rows


def _id_name(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def past_velocity(
    track: np.ndarray, timestep: np.ndarray, x: np.ndarray, y: np.ndarray, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward-difference velocity and heading per track; only past and present positions are read.

    Inputs ``[K]`` in any order, one row per (track, timestep). Returns ``(vx, vy, heading)``
    ``[K]`` in the input order: ``v_t = (p_t - p_prev) / ((t - t_prev) * dt)`` in m/s, NaN at a
    track's first row; heading (radians CCW from +x) is ``atan2(vy, vx)`` where the speed
    exceeds ``HEADING_MIN_SPEED``, else the track's last known heading (NaN until one is known).
    """
    k = len(track)
    order = np.lexsort((timestep, track))
    tr, ts, px, py = track[order], timestep[order], x[order], y[order]
    start = np.r_[True, tr[1:] != tr[:-1]] if k else np.zeros(0, bool)
    gap = np.diff(ts, prepend=ts[:1]).astype(np.float64) * dt
    gap[start] = np.nan  # no previous row: velocity unknown (and no division by zero)
    vx = np.diff(px, prepend=px[:1]) / gap
    vy = np.diff(py, prepend=py[:1]) / gap
    speed = np.hypot(vx, vy)
    known = speed > HEADING_MIN_SPEED  # False for NaN speed
    raw = np.where(known, np.arctan2(vy, vx), np.nan)
    # Forward fill within a track: index of the latest known row or track start, whichever is
    # later; a track start has NaN heading, so nothing carries across tracks.
    last = np.maximum.accumulate(np.where(known | start, np.arange(k), 0)) if k else np.zeros(0, np.int64)
    heading = raw[last]
    out_vx, out_vy, out_h = np.empty(k), np.empty(k), np.empty(k)
    out_vx[order], out_vy[order], out_h[order] = vx, vy, heading
    return out_vx, out_vy, out_h
