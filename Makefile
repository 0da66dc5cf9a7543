# fitrec: two commands on a fresh machine with Python 3.11 or 3.12 -> `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3.12 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c requirements.lock

export TF_USE_LEGACY_KERAS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PREFECT_HOME ?= $(CURDIR)/var/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo test test-fast test-quick lint format bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "fitrec needs Python 3.11 or 3.12, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip

# The demo trains and serves: core plus the train and serve extras.
$(VENV)/.core: $(BIN)/python pyproject.toml requirements.lock
	$(PIP) -e '.[train,serve]'
	@touch $@

# The tests need every role's extras.
$(VENV)/.dev: $(VENV)/.core
	$(PIP) -e '.[train,serve,postgres,dev]'
	@touch $@

## demo: install, run the nightly flow on generated data, print recommendations
demo: $(VENV)/.core
	$(BIN)/fitrec demo

## test: install dev tools and run the whole suite (unit + integration, real servers)
test: $(VENV)/.dev
	$(BIN)/python -m pytest

## test-fast: unit tests only
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -m unit

## test-quick: everything that trains no model and runs no flow (unit + the real-server tests)
test-quick: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not slow"

## lint: ruff (rules and format) and mypy as configured in pyproject.toml
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(VENV)/.bench: $(VENV)/.dev
	$(PIP) -e '.[train,serve,postgres,dev,bench]'
	@touch $@

## bench: every benchmarks/*.py; each prints its one-line summary last
bench: $(VENV)/.bench
	@for b in benchmarks/*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf var .pytest_cache .ruff_cache
