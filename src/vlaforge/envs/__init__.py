"""Simulated environments: Meta-World and LIBERO behind the `Env` protocol, instructions, expert recording.

    from vlaforge.envs import make_env, resolve_tasks, record
    env = make_env("pick-place", split="eval")          # cameras corner + gripper, 128x128, 80 Hz
    obs = env.reset(seed=3)                             # layout 3 of the eval list
    obs, reward, done, info = env.step(env.expert_action())
    env = make_env("libero_goal/turn_on_the_stove", split="eval")   # LIBERO: official initial states

Task names, suites and instructions import instantly; the MuJoCo-backed parts (`make_env`,
`MetaWorldEnv`, `record`) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlaforge.envs.instructions import HELDOUT_REPHRASINGS, instruction_for_seed, instructions_for
from vlaforge.envs.tasks import MT10, MT50, canonical_task, resolve_tasks

_LAZY = {
    "MetaWorldEnv": "vlaforge.envs.metaworld_env",
    "make_env": "vlaforge.envs.make",
    "family_of": "vlaforge.envs.make",
    "record": "vlaforge.envs.record",
    "TRAIN_SEED": "vlaforge.envs.configs",
    "EVAL_SEED": "vlaforge.envs.configs",
    "config_fingerprint": "vlaforge.envs.configs",
    "split_fingerprints": "vlaforge.envs.configs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlaforge.envs' has no attribute {name!r}")


__all__ = [
    "EVAL_SEED",
    "HELDOUT_REPHRASINGS",
    "MT10",
    "MT50",
    "TRAIN_SEED",
    "MetaWorldEnv",
    "canonical_task",
    "config_fingerprint",
    "instruction_for_seed",
    "instructions_for",
    "family_of",
    "make_env",
    "record",
    "resolve_tasks",
    "split_fingerprints",
]
