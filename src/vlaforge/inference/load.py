"""`load_policy`: a trained policy with the chosen inference fast paths, ready to act.

What `vlaforge eval`, `vlaforge serve` and the quickstart load, and what a deployment script should call:
a checkpoint or run directory of any policy family (`vlaforge.policies.Policy.load`), then int8 Linear
layers, bf16 weights or torch.compile (`fastpaths`). Problems are exceptions, never an exit: a ValueError
for flags that do not go together, `PathUnavailable` (a ValueError) for a path that does not apply to
the policy, device or machine, `CheckpointError` (a ValueError) for a checkpoint that cannot be read; the
command lines turn them into one line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlaforge.inference.fastpaths import (
    PathUnavailable,
    compile_toolchain_problem,
    compiled_copy,
    int8_copy,
)
from vlaforge.policies.base import Capabilities
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.registry import capabilities_of
from vlaforge.runtime.rtc import predict_rtc, supports_rtc
from vlaforge.types import Observation

WARMUP_INSTRUCTION = "open the drawer"


def check_fast_paths(
    *, int8: bool = False, bf16: bool = False, compile: bool = False, map_location: str = "cpu"
) -> None:
    """The combinations of fast paths that exist, checked before anything is loaded (ValueError)."""
    if int8 and bf16:
        raise ValueError("int8 and bf16 are two different fast paths: choose one")
    if int8 and compile:
        raise ValueError("compile does not combine with int8 (dynamically quantized layers): choose one")
    if int8 and str(map_location) != "cpu":
        raise ValueError(f"int8 runs on the CPU only (dynamic quantization), not on {map_location}")


def load_policy(
    path: str,
    int8: bool = False,
    bf16: bool = False,
    map_location: str = "cpu",
    compile: bool = False,
    dataset: str | None = None,
) -> Any:
    """Load a trained policy (module-level so that worker processes can unpickle the factory).

    int8: dynamically quantize the Linear layers of the transformer and the head to int8 (the CPU
    fast path of `vlaforge bench`), to measure what it costs in success on the same seeds.
    bf16: cast the transformer's weights to bfloat16 (`cast_for_inference`: Octo-style policies, π0 /
    π0.5), the fast path on CPUs with AMX / AVX512-BF16 and on GPUs.
    compile: torch.compile the per-chunk networks (π0 / π0.5: `compile_sampling()`; Octo-style: stems,
    blocks and head net, `fastpaths.compiled_copy`) and make one warm-up call, so the compilation
    (10-60 s on a CPU) happens here and not at the first request. May be combined with bf16.
    dataset: a cross-embodiment policy's dataset to act as (its sizes, statistics, control rate and
    camera names: `Policy.for_dataset`); required for such policies by `vlaforge eval`.
    """
    check_fast_paths(int8=int8, bf16=bf16, compile=compile, map_location=map_location)
    policy = Policy.load(path, map_location=map_location)
    supports = _capabilities(policy)
    if int8:
        if not supports.int8:
            raise PathUnavailable(
                f"int8 covers the octo-family recipes (transformer + head); {path} is not one"
            )
        policy = int8_copy(policy)
    if bf16:
        if not supports.bf16_weights:
            raise PathUnavailable(
                f"bf16 covers the octo-family and π0 / π0.5 recipes; {path} is a {type(policy).__name__}"
            )
        policy = policy.cast_for_inference(torch.bfloat16)
    if compile:
        policy = _compiled(policy, path)
    if dataset is not None:
        known = list(getattr(getattr(policy, "config", None), "datasets", None) or [])
        if not known:
            raise ValueError(
                f"dataset '{dataset}': {path} was trained on one dataset; drop the dataset choice"
            )
        if dataset not in known:
            raise ValueError(f"unknown dataset '{dataset}'; {path} was trained on {known}")
        policy = policy.for_dataset(dataset)
    return policy


def dataset_choice_problem(path: str, dataset: str | None, purpose: str) -> str | None:
    """What is wrong with `--dataset` for the policy at `path` (None: nothing), checked from its config
    before anything is loaded: a mixture policy needs one of its datasets, a one-dataset policy none.
    purpose: what the command asks the user to choose, e.g. "the one to act as"."""
    datasets = trained_datasets(path)
    if datasets and dataset is None:
        return f"{path} was trained on several datasets {datasets}: choose {purpose} with --dataset NAME"
    if dataset is not None and dataset not in datasets:
        known = f"{path} was trained on {datasets}" if datasets else "the policy was trained on one dataset"
        return f"--dataset {dataset}: {known}"
    return None


def trained_datasets(path: str) -> list[str]:
    """The datasets a cross-embodiment policy was trained on, read from its config: [] for one dataset,
    or where the config cannot be read (loading the policy then says why)."""
    import json

    from vlaforge.policies.base import CONFIG_FILE, policy_dir

    try:
        config = json.loads((policy_dir(path) / CONFIG_FILE).read_text()).get("config", {})
    except (ValueError, OSError, AttributeError):  # CheckpointError is a ValueError
        return []
    return list(config.get("datasets") or []) if isinstance(config, dict) else []


def _compiled(policy: Any, path: str) -> Any:
    """`load_policy(compile=True)`: the compiled policy after warm-up calls (plain and RTC; see there)."""
    problem = compile_toolchain_problem(policy.device)
    if problem is not None:
        raise PathUnavailable(f"compile: {problem}")
    how = _capabilities(policy).compile
    if how == "sampling":  # π0 / π0.5: the policy compiles its own per-chunk networks
        policy.compile_sampling()
    elif how == "modules":  # Octo layout: stems, blocks and head network
        policy = compiled_copy(policy)
    else:  # "decoding" (token decoders: timed by the bench only) or None
        raise PathUnavailable(
            f"compile covers the octo-family and π0 / π0.5 recipes; {path} is a {type(policy).__name__} "
            "(token decoders: `vlaforge bench --paths compile` times their compiled decode step)"
        )
    policy.eval()
    obs = example_observations(policy)
    policy.predict(obs)  # compiles now, for batch 1
    if supports_rtc(policy):  # RTC's guided sampling (autograd through the velocity) is another graph
        spec = policy.spec
        predict_rtc(
            policy, obs, np.zeros((spec.chunk, spec.action_dim), np.float32), np.linspace(1, 0, spec.chunk)
        )
    return policy


def _capabilities(policy: Any) -> Capabilities:
    """What the policy's family declares; nothing (no fast path) for a policy that declares nothing."""
    return capabilities_of(policy) or Capabilities()


def example_observations(
    policy: Any, seed: int = 0, instruction: str = WARMUP_INSTRUCTION
) -> list[Observation]:
    """`history` observations (oldest first) with random images and states, sized from the policy's spec:
    what a warm-up call (and `vlaforge bench`) feeds a policy."""
    spec = policy.spec
    rng = np.random.default_rng(seed)
    return [
        Observation(
            images={
                cam: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for cam, (h, w) in spec.cameras.items()
            },
            state=rng.uniform(-0.5, 0.5, spec.state_dim).astype(np.float32),
            instruction=instruction,
        )
        for _ in range(spec.history)
    ]
