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

.PHONY: demo test test-slow-ci test-all lint install system-deps clean

$(VENV)/.stamp-install: pyproject.toml constraints.txt packages/vlaforge-client/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e packages/vlaforge-client -e ".[sim,libero,serve,text,lora,export,dev]"
	@touch $@

install: system-deps $(VENV)/.stamp-install

system-deps:
	@./scripts/system_deps.sh

demo: install
	$(BIN)/vlaforge quickstart

lint: install
	$(BIN)/ruff check src tests benchmarks packages
	$(BIN)/ruff format --check src tests benchmarks packages

test: install
	$(BIN)/ruff check src tests benchmarks packages
	$(BIN)/python -m pytest

# The riskiest of the slow suite, run by CI (.ci/run) after `make test`: DDP and FSDP equivalence, the
# end-to-end CLI, evaluation through the server, the client's fresh-venv install, the compiled path.
SLOW_CI := tests/train/test_distributed.py tests/train/test_fsdp.py tests/test_end_to_end.py \
	tests/eval/test_eval_remote.py tests/inference/test_load_fast_paths.py \
	tests/serve/test_rtc_batching.py::test_client_package_installs_alone_into_a_fresh_venv

test-slow-ci: install
	$(BIN)/python -m pytest -m slow $(SLOW_CI)

test-all: install
	$(BIN)/ruff check src tests benchmarks packages
	$(BIN)/python -m pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
