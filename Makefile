# The two commands of the README: `make demo` and `make test`. Both set up first.
.PHONY: setup demo test test-unit lint clean-host

PYTEST_ARGS ?=

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/spyglass up --demo

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-unit: setup
	.venv/bin/python -m pytest -m "not datapath and not e2e" $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .

# Remove whatever a crashed `spyglass up` left behind (netns, veths, programs, pins).
clean-host: setup
	.venv/bin/spyglass down
