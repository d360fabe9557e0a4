# Talbot: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= demo-out
PROFILE ?= tiny

.PHONY: demo test lint typecheck layers pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/talbot demo --profile $(PROFILE) --out $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

# The RunEngine session tests run in a process of their own: pyepics may crash when PVs of
# devices destroyed by earlier tests are garbage-collected while new ones connect.
pytest: $(STAMP)
	$(BIN)/pytest --ignore=tests/beamline/test_session.py
	$(BIN)/pytest tests/beamline/test_session.py

test: lint typecheck layers pytest

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run_all.py --out benchmarks/results

clean:
	rm -rf $(VENV) demo-out .mypy_cache .pytest_cache .ruff_cache
