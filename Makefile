# keystile — `make run` serves on the embedded default, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: serving needs the package alone; the dev tools (pytest, mypy,
# ruff, schemathesis, ...) come with the first check or test. A current pip
# installs faster than the one venv bundles, which pays for upgrading it.
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp

# The server, its tests and bench, and the client distribution (clients/python) with its examples.
CHECKED := src tests bench clients/python/src clients/python/tests examples/client

.PHONY: run install install-run check test test-granian bench bench-compare timing screenshots clean

$(RUN_STAMP): pyproject.toml constraints.txt src/keystile/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP) clients/python/pyproject.toml
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' -e 'clients/python[fastapi,django]'
	touch $@

## What serving needs.
install-run: $(RUN_STAMP)

## Everything, dev tools included.
install: $(DEV_STAMP)

## Start keystile on 127.0.0.1:8080 with SQLite under .keystile/ (migrates first).
## Another port: KEYSTILE_PORT=9000 make run
run: $(RUN_STAMP)
	$(BIN)/keystile serve

## Lint, format check, strict typing.
check: $(DEV_STAMP)
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)
	$(BIN)/mypy $(CHECKED)

## The whole suite, the client's (clients/python/tests) included. Under CI=true a missing PostgreSQL or Redis fails it.
## It runs in TEST_WORKERS pytest-xdist processes, a test file per worker at a time, the
## longest files first (tests/conftest.py); most e2e tests wait on the processes they
## start, so more workers than cores pay.
TEST_WORKERS ?= 4
test: check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## The served tests (tests/e2e) with every keystile on granian (KEYSTILE_SERVER=granian) instead
## of uvicorn: what differs is skipped or relaxed by name (tests/support.py, GRANIAN_GAP).
test-granian: check
	KEYSTILE_TEST_SERVER=granian $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests/e2e

## Benchmarks (about 13 minutes, loopback only): bench/results/<date>.json and docs/benchmarks.md.
## Needs PostgreSQL and Redis running; installs wrk (Debian) and py-spy if missing, and the
## peers it is compared with (bench/peers.py) from PyPI into ~/.cache/keystile-bench/peers-*;
## builds the commit before issue 19 (bench/baseline.py) once into .bench-cache/builds/ for rows (d).
bench: install
	$(BIN)/python -m pip install --quiet py-spy
	$(BIN)/python -m bench.run

## Builds or configurations measured against each other in one run (docs/benchmarks.md,
## "Comparing two builds or two configurations"), e.g.
## make bench-compare ARGS='--variant before=242b2b0 --variant after=HEAD --scenario verify'
bench-compare: install
	$(BIN)/python -m bench.compare $(ARGS)

## The timing report of docs/security.md (about a minute).
timing: install
	$(BIN)/python -m bench.timing

## The browser console's screenshots (docs/console/*.png), taken by its browser tests
## (Playwright driving Debian's chromium, installed with apt when missing).
screenshots: install
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_console_browser.py

clean:
	rm -rf $(VENV) .keystile .pytest_cache .mypy_cache .ruff_cache
