# Every target does its own set-up: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-duckdb-floor lint typecheck bench clean

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE=1 is set (as on our machines) nothing is
# ever cached, and every process compiled litellm from source (~4 s more per DSPy process).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## The seed's pizza workflow, traced into .flock/traces.duckdb (offline unless OPENAI_API_KEY is set).
demo: $(STAMP)
	$(VENV)/bin/flock demo

## Install everything and run the whole test suite (the dashboard's browser tests need
## Debian's chromium; it is installed when missing).
test: $(STAMP) /usr/bin/chromium
	$(PY) -m pytest

## The trace store, writer and dashboard queries against the oldest DuckDB pyproject.toml
## allows (its own venv; run by .ci/run after the suite).
DUCKDB_FLOOR := 1.4.5
FLOOR_VENV := .venv-duckdb-floor
test-duckdb-floor: $(STAMP)
	test -x $(FLOOR_VENV)/bin/python || $(VENV)/bin/uv venv --quiet --python $(PY) $(FLOOR_VENV)
	sed 's/^duckdb==.*/duckdb==$(DUCKDB_FLOOR)/' requirements.lock > $(FLOOR_VENV)/requirements.txt
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(FLOOR_VENV)/bin/python -r $(FLOOR_VENV)/requirements.txt
	$(VENV)/bin/uv pip install --quiet --python $(FLOOR_VENV)/bin/python --no-deps -e .
	$(FLOOR_VENV)/bin/python -c 'import duckdb; assert duckdb.__version__ == "$(DUCKDB_FLOOR)", duckdb.__version__'
	$(FLOOR_VENV)/bin/python -m pytest -q tests/tracing/test_duckdb_store.py \
		tests/tracing/test_retention.py tests/tracing/test_writer_robustness.py \
		tests/tracing/test_stats.py tests/tracing/test_export.py tests/dashboard/test_api.py \
		tests/dashboard/test_trace_files.py

/usr/bin/chromium:
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Regenerate the lock file after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra dashboard --extra postgres --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
