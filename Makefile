# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test setup system-deps lint typecheck bench clean

# Set up and run the relay (built-in OpenAI emulator unless OPENAI_API_KEY is set).
run: setup
	scripts/install-system-deps.sh --run
	$(BIN)/realtime-relay serve

# Set up everything the tests need, then lint, type-check and run the whole suite.
test: setup system-deps
	$(BIN)/ruff check relay tests bench
	$(BIN)/mypy
	scripts/run-tests.sh $(PYTEST_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-deps:
	scripts/install-system-deps.sh

lint:
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench

typecheck:
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.latency

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
