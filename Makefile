# Two commands do everything: `make demo` (a real sweep) and `make test` (the whole suite).
# Each creates .venv and installs stet into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/sweep.py

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) _stet_store.csv _stet_store.csv.lock
