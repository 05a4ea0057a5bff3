"""Why a pipeline step is stale: what changed since its last finished output.

A step's hash covers its settings, its inputs' hashes, the forecast version and the source files it
runs (:mod:`forecast.pipeline.code`). Its ``_SUCCESS.json`` records each of them, so comparing the
most recent record of a step with the current plan names what changed, e.g.::

    train     stale    9f0c...  code changed: forecast/model/rollout.py
    evaluate  stale    41aa...  code changed: forecast/model/rollout.py; input train changed (3e1b... -> 9f0c...)
"""

from __future__ import annotations

import json
from pathlib import Path

from forecast.pipeline.runner import flatten

SUCCESS = "_SUCCESS.json"
MAX_LISTED = 5  # names listed per reason; the rest are counted


def latest_record(step_dir: Path, exclude: str | None = None) -> dict | None:
    """The ``_SUCCESS.json`` of the most recently finished output under ``work_dir/<step>/`` (not ``exclude``)."""
    if not step_dir.is_dir():
        return None
    found = []
    for path in step_dir.glob(f"*/{SUCCESS}"):
        name = path.parent.name
        if name == exclude or name.startswith(".") or name.endswith(".partial"):
            continue
        try:
            found.append((path.stat().st_mtime_ns, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return max(found, key=lambda t: t[0])[1] if found else None


def why_stale(previous: dict, spec: dict, input_hashes: dict[str, str], code_files: dict[str, str],
              version: str) -> list[str]:
    """Reasons, one line each, why the current plan of a step differs from ``previous`` (its ``_SUCCESS.json``)."""
    reasons = []
    old_code = previous.get("code_files")
    if old_code is None:
        if code_files:
            reasons.append("code not recorded by the earlier run (made before steps hashed their code)")
    else:
        changed = sorted(f for f in set(old_code) & set(code_files) if old_code[f] != code_files[f])
        added = sorted(set(code_files) - set(old_code))
        removed = sorted(set(old_code) - set(code_files))
        for label, names in (("code changed", changed), ("code added", added), ("code removed", removed)):
            if names:
                reasons.append(f"{label}: {_listed(names)}")
    old_spec, new_spec = _leaves(previous.get("spec", {})), _leaves(spec)
    settings = [f"{k}: {_short(old_spec.get(k, '(unset)'))} -> {_short(new_spec.get(k, '(unset)'))}"
                for k in sorted(set(old_spec) | set(new_spec)) if old_spec.get(k, _UNSET) != new_spec.get(k, _UNSET)]
    if settings:
        reasons.append(f"settings changed: {_listed(settings)}")
    old_inputs = previous.get("input_hashes", {})
    for name in sorted(set(old_inputs) | set(input_hashes)):
        before, now = old_inputs.get(name), input_hashes.get(name)
        if before != now:
            reasons.append(f"input {name} changed ({before or 'none'} -> {now or 'none'})")
    if previous.get("forecast_version") not in (None, version):
        reasons.append(f"forecast version {previous['forecast_version']} -> {version}")
    return reasons or ["the earlier output's hash differs, though its recorded settings, inputs and code match"]


_UNSET = object()


def _leaves(d: dict) -> dict[str, str]:
    """Nested settings -> ``{dotted key: JSON text of the value}`` (strings quoted, so "1" and 1 differ)."""
    return flatten(d, encode=lambda v: json.dumps(v, sort_keys=True, default=str))


def _short(v: object, n: int = 40) -> str:
    text = str(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (f" (+{more} more)" if more > 0 else "")
