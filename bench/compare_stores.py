"""Are two stores the same data? Every Parquet file by relative path: table contents and schema metadata
equal, row groups alike; and the ingest summaries (counts) equal. File bytes may differ (compression).

Usage: python bench/compare_stores.py OLD_STORE NEW_STORE   (exit status 1 when anything differs)

Used to check that a faster ingest writes the same store as before (docs/measurements.md, issue 11):
ingest one input with the old code and the new, then compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq


def parquet_files(store: Path) -> list[Path]:
    return sorted(p.relative_to(store) for p in store.rglob("*.parquet") if "_cache" not in p.parts)


def compare(old: Path, new: Path) -> list[str]:
    """One line per difference (empty: the same data)."""
    problems: list[str] = []
    fa, fb = parquet_files(old), parquet_files(new)
    if fa != fb:
        return [f"different files: only old {sorted(set(fa) - set(fb))}, only new {sorted(set(fb) - set(fa))}"]
    for rel in fa:
        ta, tb = pq.read_table(old / rel), pq.read_table(new / rel)
        if not ta.equals(tb, check_metadata=True):
            problems.append(f"{rel}: table contents or schema differ")
        ma, mb = pq.ParquetFile(old / rel).metadata, pq.ParquetFile(new / rel).metadata
        if [ma.row_group(i).num_rows for i in range(ma.num_row_groups)] != [
                mb.row_group(i).num_rows for i in range(mb.num_row_groups)]:
            problems.append(f"{rel}: row groups differ")
        print(f"{rel}: {ta.num_rows} rows, {(old / rel).stat().st_size} -> {(new / rel).stat().st_size} bytes")
    for s in sorted((old / "_summaries").glob("*.json")):
        other = new / "_summaries" / s.name
        if not other.is_file() or json.loads(s.read_text()) != json.loads(other.read_text()):
            problems.append(f"_summaries/{s.name}: counts differ")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args()
    problems = compare(args.old, args.new)
    print("\n".join(problems) if problems else "same data")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
