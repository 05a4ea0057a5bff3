#!/usr/bin/env bash
# Nightly retraining on a GPU node, with the promotion gate and registration: what cron or an
# Airflow BashOperator calls. The exit code is the pipeline's (pipelines/README.md):
#   0 done or up to date, 1 a step failed (rerun resumes), 2 bad config, 4 gate said no,
#   75 another run holds the lock (retry later), 143 stopped by SIGTERM (rerun resumes).
# Extra arguments go to `forecast pipeline run`: --force STEP, --until STEP, key=value overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
FORECAST="${FORECAST:-.venv/bin/forecast}"
exec "$FORECAST" --quiet pipeline run configs/pipeline/nightly.yaml "$@"
