# Two entry points on a fresh machine: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo needs the package alone; the tests add the dev tools and the AV2 devkit on top (about 12 s
# of the demo's 15 minutes on 2 cores). A venv made by `make demo` gets them at the first `make test`.
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean env

env: $(DEV_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly pinned: the local CPU wheel, not a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	# The AV2 devkit, the metrics tests' oracle, without its heavy declared dependencies (see pyproject.toml).
	$(PY) -m pip install -q --no-deps av2==0.3.6
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/forecast pipeline run configs/pipeline/quickstart.yaml

test: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --nbmake tests notebooks

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

bench: $(DEV_STAMP)
	$(PY) bench/ingest.py && $(PY) bench/raster.py && $(PY) bench/train.py && $(PY) bench/latency.py

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache
