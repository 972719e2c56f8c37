# The two commands of the README. Both prepare what they need (scripts/setup is idempotent).
# pytest's exit 5 ("no tests collected") is not a failure of the project.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup suites test lint bench

setup:
	PYTHON=$(PYTHON) ./scripts/setup

suites: setup
	$(PYTHON) -m pytest suites/ $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Lint first: a few seconds (both tools cache), and a type or lint error is cheaper to read than a test.
test: setup
	$(MAKE) --no-print-directory lint PYTHON=$(PYTHON)
	$(PYTHON) -m pytest tests/ $(PYTEST_ARGS) || [ $$? -eq 5 ]

# ruff and mypy, configured in pyproject.toml (installed by `.[dev]`, which setup installs).
lint:
	$(PYTHON) -m ruff check --quiet .
	$(PYTHON) -m mypy
