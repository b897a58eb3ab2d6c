# flexo: the README's two commands live here. Each creates .venv on first use (idempotent) and needs only python3.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
LM_EVAL := $(VENV)/.lm-eval
BIN     := $(VENV)/bin
PROFILE ?= demo
UV_VERSION   := 0.13.8
UV_FROM_PIP  := install -q --disable-pip-version-check uv==$(UV_VERSION)
PIP_VERSION  := 23.2.1
# the folder holding torch-2.13.0+cpu-*.whl: pip's find-links where set, else where this kind of machine keeps it
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),/opt/wheels)

.PHONY: run check test test-all install browser ui clean-runs

run: $(STAMP)  ## the main job: the whole pipeline on the embedded defaults
	$(BIN)/flexo run --profile $(PROFILE)

check: $(STAMP)  ## lint, format, types, import layering (pyproject.toml configures each): stops at the first violation
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# The default suite on TEST_WORKERS pytest-xdist workers (the dev extra; 0: in pytest's own process), a whole test
# file per worker (--dist loadfile: a file's module-scoped world is built once) in the order tests/conftest.py gives
# (longest file first, hence --no-loadscope-reorder). Two: the suite in about 5 minutes on 2 cores instead of 11
# (benchmarks/RESULTS.md); `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: check $(LM_EVAL)  ## the checks, then the default test suite (fails on no tests: pytest exit code 5 is non-zero)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

test-all: check browser $(LM_EVAL)  ## the checks, then every test, the slow ones too (the browser test needs `browser`)
	$(BIN)/python -m pytest -q

# The browser test (tests/flows/test_ui_browser.py) drives Debian's chromium through its chromedriver (Selenium, from
# the dev extra, is given the driver's path: it never downloads one). Installed once, with apt, as root or via sudo.
CHROMIUM     := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
SUDO         := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	test -x $(CHROMIUM) -a -x $(CHROMEDRIVER) || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

install: $(STAMP)

# uv installs the pinned set (requirements.lock) in seconds where pip takes minutes; it is pinned itself and installed
# into the venv by the interpreter's own pip (by the venv's, from ensurepip, where the interpreter has no pip module).
# uv reads no pip configuration, so it is pointed at the folder of the torch CPU wheel (torch==2.13.0+cpu in the lock):
# a bare `torch` requirement would pull gigabytes of CUDA packages, and with no such folder the install fails instead.
# --compile-bytecode: the first imports do not pay for it. pip stays in the venv (the data stage runs
# `python -m pip download`) at the version a plain `python -m venv` seeds.
# The dev extra brings the checkers `make check` runs.
$(STAMP): pyproject.toml setup.py lm_eval_flexo_hook.pth requirements.lock
	test -x $(BIN)/python || $(PY) -m venv --without-pip $(VENV)
	test -x $(BIN)/uv || { $(PY) -m pip --version >/dev/null 2>&1 && $(PY) -m pip --python $(BIN)/python $(UV_FROM_PIP); } \
		|| { $(BIN)/python -m ensurepip >/dev/null && $(BIN)/python -m pip $(UV_FROM_PIP); }
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode $(TORCH_WHEELS:%=--find-links %) \
		-c requirements.lock -e ".[dev]" pip==$(PIP_VERSION)
	touch $(STAMP)

# lm-evaluation-harness (the `lm-eval` extra): the evaluation-engine tests need it, the pipeline does not, so the first
# `make test` installs it instead of every install (it alone would take more than the install's time budget).
$(LM_EVAL): $(STAMP)
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode $(TORCH_WHEELS:%=--find-links %) \
		-c requirements.lock -e ".[dev,lm-eval]" pip==$(PIP_VERSION)
	touch $(LM_EVAL)

ui: $(STAMP)
	$(BIN)/flexo ui

clean-runs:
	rm -rf runs .prefect
