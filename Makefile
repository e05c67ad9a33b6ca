# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo server browser prometheus clean

# Test processes (pytest-xdist), each with servers of its own. Most tests wait on servers and
# subprocesses, so 4 finish sooner than 2 even on 2 cores.
TEST_PROCESSES ?= 4

# The core and conformance suites on every other supported Python found here, then the full
# suite, last, on .venv's Python.
test: $(STAMP) server browser prometheus
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy faktory_core faktory_adapters
	$(BIN)/python scripts/unasync.py --check
	scripts/test-pythons -n $(TEST_PROCESSES)
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadgroup --cov --cov-report=term

# A local Faktory, a worker with jobs running, then SIGTERM: the shutdown contract as it
# happens, in about 5 s. `make demo ARGS=--wire` shows the protocol's bytes instead.
demo: $(STAMP) server
	$(BIN)/python scripts/demo.py $(ARGS)

# Installs the pinned Faktory server and Debian's redis-server when they are missing.
server:
	scripts/faktory-server install

# Installs Debian's Chromium when it is missing, for the docs site's smoke test.
browser:
	scripts/install-browser

# Installs Debian's prometheus (and promtool) when it is missing, for the metrics tests that
# run a real Prometheus; its own service is not started.
prometheus:
	scripts/install-prometheus

$(STAMP): pyproject.toml faktory_core/__init__.py  # the version is read from there at install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e . --group dev  # the tools: pyproject's dependency-groups
	touch $(STAMP)

clean:
	rm -rf $(VENV) .venv-3.* docs/_build .pytest_cache .mypy_cache .ruff_cache .coverage
