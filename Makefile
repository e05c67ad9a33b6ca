# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest server clean

test: $(STAMP) server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy faktory_core faktory_adapters
	$(BIN)/python scripts/unasync.py --check
	$(BIN)/pytest --cov --cov-report=term

# A local Faktory, a worker with jobs running, then SIGTERM: the shutdown contract as it
# happens, in about 5 s. `make demo ARGS=--wire` shows the protocol's bytes instead.
demo: $(STAMP) server
	$(BIN)/python scripts/demo.py $(ARGS)

# Installs the pinned Faktory server and Debian's redis-server when they are missing.
server:
	scripts/faktory-server install

$(STAMP): pyproject.toml faktory_core/__init__.py  # the version is read from there at install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
