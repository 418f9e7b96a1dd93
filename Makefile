# skybuffer: `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help run test test-random lint typecheck pytest pytest-random soak bench system-packages clean clean-data

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

system-packages:  ## install missing Debian packages (redis, prometheus, alertmanager, exporter)
	@scripts/system-packages.sh

run: $(VENV)/.installed system-packages  ## set up, then run the whole pipeline (Ctrl-C stops it; ARGS="..." passes options)
	$(BIN)/skybuffer run $(ARGS)

lint: $(VENV)/.installed-dev  ## ruff, and import-linter (layers point down: pyproject.toml)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports --no-cache

typecheck: $(VENV)/.installed-dev  ## mypy
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev system-packages  ## the test suite only, in file order, the 15 slowest listed
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

pytest-random: $(VENV)/.installed-dev system-packages  ## the test suite in a random order (seed printed; PYTEST_ARGS=--randomly-seed=N repeats it)
	$(BIN)/python -m pytest -p randomly --durations=15 $(PYTEST_ARGS)

test: lint typecheck pytest  ## set up, then lint, type-check and run every test

test-random: lint typecheck pytest-random  ## the same, the tests in a random order

soak: $(VENV)/.installed-dev system-packages  ## long end-to-end runs (not in CI)
	$(BIN)/python -m pytest -m soak -s -p no:cacheprovider tests

clean:  ## remove the venv and tool caches; keeps the buffer, the lake and reports (./var)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

DATA_DIR ?= var
clean-data:  ## delete ./var (Redis buffer, lake, spool, reports) after asking; CONFIRM=yes does not ask
	@if [ ! -e "$(DATA_DIR)" ]; then echo "nothing to delete: $(DATA_DIR) does not exist"; exit 0; fi; \
	pid=$$(cat "$(DATA_DIR)/redis/redis.pid" 2>/dev/null); \
	if [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null; then \
	  echo "$(DATA_DIR) is in use: its redis-server runs (pid $$pid); stop the pipeline first (Ctrl-C in make run, or skybuffer redis stop)"; exit 1; fi; \
	if [ "$(CONFIRM)" != yes ]; then \
	  printf 'Delete %s (%s): the Redis buffer, the lake, spool and reports, not recoverable? Type yes: ' \
	    "$(DATA_DIR)" "$$(du -sh "$(DATA_DIR)" | cut -f1)"; \
	  read -r answer || answer=; \
	  if [ "$$answer" != yes ]; then echo "kept $(DATA_DIR)"; exit 1; fi; \
	fi; \
	rm -rf "$(DATA_DIR)" && echo "deleted $(DATA_DIR)"
