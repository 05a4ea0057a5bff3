#!/usr/bin/env bash
# The demo pipeline end to end on a laptop: simulate -> ingest -> train -> evaluate -> export.
# What `make demo` runs. A second call skips every step that is up to date.
# Extra arguments go to `forecast pipeline run`: --force STEP, --until STEP, key=value overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
FORECAST="${FORECAST:-.venv/bin/forecast}"
exec "$FORECAST" pipeline run configs/pipeline/quickstart.yaml "$@"
