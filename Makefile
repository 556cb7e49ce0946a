PY ?= .venv/bin/python

.PHONY: install test lint format reliability bench demo clean

install:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format:
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

reliability:
	$(PY) -m pytest -m slow --run-slow -q

bench:
	$(PY) benchmarks/query_speedups.py
	$(PY) benchmarks/ingest_throughput.py
	$(PY) benchmarks/hot_store_insert.py

demo:
	.venv/bin/marketpipe demo

clean:
	rm -rf data .pytest_cache .ruff_cache
