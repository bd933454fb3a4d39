# Two commands do everything: `make demo` (a real sweep) and `make test` (the whole suite).
# Each creates .venv and installs stet into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench docs serve-docs clean

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

# The documentation site (docs/, mkdocs.yml), built into site/; every code block in it
# runs in tests/test_docs.py.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

serve-docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	# the demo's store and every file stet keeps beside it (.lock, .claims, .failures.jsonl)
	rm -rf $(VENV) site _stet_store.csv _stet_store.csv.* ._stet_store.csv.stet-tmp-*
