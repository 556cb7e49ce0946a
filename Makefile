PY ?= .venv/bin/python

.PHONY: install test test-pandas2 lint format reliability bench bench-quick demo clean

install:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'

test:
	$(PY) -m pytest

# The suite again on pandas 2.x (marketpipe supports pandas 2.2+ and 3.x; the main venv resolves pandas 3).
.venv-pandas2/.installed: pyproject.toml
	python3 -m venv .venv-pandas2
	.venv-pandas2/bin/pip install -e '.[dev]' 'pandas>=2.2,<3'
	touch $@

test-pandas2: .venv-pandas2/.installed
	.venv-pandas2/bin/python -m pytest -q -p no:cacheprovider

# mypy --strict over src/ (configured in pyproject.toml's [tool.mypy]): the package ships py.typed.
lint:
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy

format:
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

# The long kill/concurrency/fuzz/hostile-input/secrets runs (tests/reliability at --reliability=long, plus the soak
# tests marked slow); prints the fault-injection table and writes it to reliability-report.json.
reliability:
	$(PY) -m pytest -m "reliability or slow" --run-slow --reliability=long --reliability-json=reliability-report.json -q tests

bench:
	$(PY) benchmarks/run.py

bench-quick:
	$(PY) benchmarks/run.py --quick

demo:
	.venv/bin/marketpipe demo

clean:
	rm -rf data .pytest_cache .ruff_cache
