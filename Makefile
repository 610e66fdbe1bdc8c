# One venv, torch pinned to the CPU build this project is tested with (override: make TORCH_SPEC='torch==2.5.1').
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: venv demo test test-full lint bench clean slurm-up

$(BIN)/greedymm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/greedymm

demo: venv
	$(BIN)/greedymm demo

# the fast tier: single-process tests (pyproject.toml deselects the `process` and `slow` markers)
test: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/pytest -q

# every test, the process-starting ones (DDP, torchrun, kill-resume, locks, examples) too
test-full: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/pytest -q -m ""

# a one-node Slurm cluster on this machine (root, Debian: apt-get installs slurm-wlm and munge); idempotent
slurm-up:
	bash scripts/slurm-up.sh

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

bench: venv
	$(BIN)/python benchmarks/bench_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
