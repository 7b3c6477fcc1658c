# Postroom developer entry points. Needs only Python 3.11+ on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

## install: create .venv and install Postroom with its test extras
install: $(STAMP)

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
