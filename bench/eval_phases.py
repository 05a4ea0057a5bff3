"""Peak memory of `forecast evaluate` phase by phase (issue 11): RSS printed around each step.

Usage: python bench/eval_phases.py evaluate --model constant_velocity --store S --split test --t0-stride 30 --no-mlflow

Wraps the evaluation driver's steps (loading predictors, opening the split, the loop, the map pass,
the per-agent metrics, the tag table, the world-model card, writing the outputs) and prints the
process's RSS and peak RSS (``ru_maxrss``) before and after each, to stderr.
"""

from __future__ import annotations

import functools
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

import forecast.evaluation.evaluate as E  # noqa: E402

STEPS = ("load_predictors", "SceneSet", "collect", "map_pass", "agent_metrics", "tag_table", "world_model_section",
         "write_outputs")


def rss(tag: str) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{tag}] rss {psutil.Process().memory_info().rss / 2**20:.0f} MB peak {peak:.0f} MB", file=sys.stderr,
          flush=True)


def _wrapped(name: str, fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        rss(f"before {name}")
        out = fn(*args, **kwargs)
        rss(f"after {name}")
        return out

    return call


def main() -> int:
    for name in STEPS:
        setattr(E, name, _wrapped(name, getattr(E, name)))
    from forecast.cli import main as cli

    rc = cli(["--quiet", *sys.argv[1:]])
    rss("end")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
