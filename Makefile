# The two commands of the README: `make demo` and `make test`. Both set up first.
.PHONY: setup demo test test-unit lint typecheck clean-host

PYTEST_ARGS ?=
# Extra options for `spyglass up` (the teardown test gives it private names).
DEMO_ARGS ?=
SHELL := /bin/bash

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/spyglass up --demo $(DEMO_ARGS)

# The README's test command: the layer contracts and the type check, then every test.
test: setup lint typecheck
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-unit: setup
	.venv/bin/python -m pytest -m "not datapath and not e2e" $(PYTEST_ARGS)

# ruff, and the import contracts of docs/architecture.md ([tool.importlinter] in pyproject).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports --no-cache

# mypy over the installed package: the strict editable install of scripts/setup.sh lets it
# resolve spyglass.*. Paths are shown as the repository's own.
MYPY_PACKAGES = $(foreach p,model bpf policy lab collector storage api agent cli ui,-p spyglass.$(p))
typecheck: setup
	@set -o pipefail; .venv/bin/mypy $(MYPY_PACKAGES) 2>&1 | sed 's|build/__editable__[^/]*/spyglass/||'
	.venv/bin/mypy bench  # the benchmarks import the packages as a user would

# Remove whatever a crashed `spyglass up` left behind (netns, veths, programs, pins).
clean-host: setup
	.venv/bin/spyglass down
