# payoutdesk: `make run` serves a demo, `make test` runs the whole suite on SQLite and PostgreSQL.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PAYOUTDESK_DATA_DIR ?= $(CURDIR)/data

.PHONY: install run test lint bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/payoutdesk init
	$(BIN)/payoutdesk demo --once
	$(BIN)/payoutdesk serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: install lint
	bash scripts/ensure-test-deps.sh
	PYTHON=$(PYTHON) bash scripts/ensure-tap.sh
	$(BIN)/pytest $(PYTEST_ARGS)

# the pages as docs/screenshots/*.png, from the browser tests (SQLite run)
screenshots: install
	bash scripts/ensure-test-deps.sh
	PAYOUTDESK_SCREENSHOTS=1 $(BIN)/pytest tests/test_pages_*.py -k sqlite $(PYTEST_ARGS)

bench: install
	bash scripts/ensure-test-deps.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache
