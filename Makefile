# Two entry points on a fresh machine: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean env

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly pinned: the local CPU wheel, not a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The AV2 devkit, the metrics tests' oracle, without its heavy declared dependencies (see pyproject.toml).
	$(PY) -m pip install -q --no-deps av2==0.3.6
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/forecast pipeline run configs/pipeline/quickstart.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --nbmake tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/ingest.py && $(PY) bench/raster.py && $(PY) bench/train.py && $(PY) bench/latency.py

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache
