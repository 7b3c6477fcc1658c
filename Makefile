# Postroom developer entry points. Needs only Python 3.11+ on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements.lock

.PHONY: install lock run test lint format typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Exactly the locked versions (hash-checked), then Postroom itself without resolving again.
$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

## install: create .venv and install Postroom with its test extras, at the locked versions
install: $(STAMP)

## lock: re-resolve requirements.lock from pyproject.toml (newest allowed versions, all platforms)
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv>=0.4'
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --extra test \
		--generate-hashes --no-header pyproject.toml -o $(LOCK)

## run: install, migrate, and start Postroom on SQLite (http://127.0.0.1:8025)
run: install
	$(BIN)/postroom migrate
	$(BIN)/postroom serve

## test: install and run the whole suite (PostgreSQL too when POSTROOM_TEST_DATABASE_URL is set)
test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

## lint: ruff and mypy
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## bench: the throughput benchmark (see bench/README.md)
bench: install
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
