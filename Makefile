# flexo: the README's two commands live here. Each creates .venv on first use (idempotent) and needs only python3.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
BIN     := $(VENV)/bin
PROFILE ?= demo

.PHONY: run check test test-all install ui clean-runs

run: $(STAMP)  ## the main job: the whole pipeline on the embedded defaults
	$(BIN)/flexo run --profile $(PROFILE)

check: $(STAMP)  ## lint, format, types, import layering (pyproject.toml configures each): stops at the first violation
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

test: check  ## the checks, then the default test suite (fails on no tests: pytest exit code 5 is non-zero)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: check
	$(BIN)/python -m pytest -q

install: $(STAMP)

# torch first, from the local CPU wheel: a bare `torch` requirement would pull gigabytes of CUDA packages.
# The dev extra brings the checkers `make check` runs.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev]"
	touch $(STAMP)

ui: $(STAMP)
	$(BIN)/flexo ui

clean-runs:
	rm -rf runs .prefect
