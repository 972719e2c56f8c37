# The two commands of the README. Both prepare what they need (scripts/setup is idempotent).
# pytest's exit 5 ("no tests collected") is not a failure of the project.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup suites test bench

setup:
	PYTHON=$(PYTHON) ./scripts/setup

suites: setup
	$(PYTHON) -m pytest suites/ $(PYTEST_ARGS) || [ $$? -eq 5 ]

test: setup
	$(PYTHON) -m pytest tests/ $(PYTEST_ARGS) || [ $$? -eq 5 ]
