# The verbs a newcomer looks for. Each target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=

.PHONY: demo test test-all test-slow lint format docs bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,mysql,postgres,embedded,bench,docs]'
	# asyncmy lives apart: Tortoise uses it whenever it can import it, so the
	# aiomysql run must not see it (scripts/test.sh adds it for the asyncmy run).
	$(BIN)/python -m pip install --quiet --target $(VENV)/asyncmy 'asyncmy==0.2.18'
	touch $@

## demo: the 1000-comment burst on one post, with and without counter caches
demo: $(VENV)/.installed
	$(BIN)/python benchmarks/burst.py $(DEMO_ARGS)

## test: the whole suite on MariaDB (aiomysql, asyncmy), PostgreSQL and SQLite
test: $(VENV)/.installed
	bash scripts/services.sh
	bash scripts/test.sh

## test-slow: the long fault-injection and burst runs
test-slow: $(VENV)/.installed
	bash scripts/services.sh
	$(BIN)/pytest -m slow -v

## lint: ruff and mypy strict
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## docs: build the documentation site into site/
docs: $(VENV)/.installed
	$(BIN)/mkdocs build --strict

## bench: the burst benchmark on the local MariaDB and Redis
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/burst.py --db mysql://root:@127.0.0.1:3306/cc_bench \
		--redis redis://127.0.0.1:6379/0 --rounds 3 --drain 10000 \
		--plot benchmarks/burst.png --json benchmarks/burst.json

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
