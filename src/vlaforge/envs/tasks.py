"""Meta-World task names and benchmark suites, without importing Meta-World.

The names are spelled out here (and checked against `metaworld` by a test) so that the CLI,
the instruction table and argument validation work without loading MuJoCo.
"""

from __future__ import annotations

VERSION_SUFFIX = "-v3"

# The 50 tasks of Meta-World v3, in `metaworld.env_dict.ALL_V3_ENVIRONMENTS` order (= MT50).
MT50: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)

# MT10, in `metaworld.env_dict.MT10_V3` order.
MT10: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)

# The difficulty groups of MT50 that the VLA papers report (SmolVLA, pi0 and Evo-1 on LeRobot's protocol):
# Seo et al., "Masked World Models for Visual Control" (CoRL 2022, arXiv 2206.14244), as LeRobot lists them
# in src/lerobot/envs/metaworld_config.json "DIFFICULTY_TO_TASKS" (28 / 11 / 6 / 5 tasks).
DIFFICULTY_GROUPS: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press-v3",
        "button-press-topdown-v3",
        "button-press-topdown-wall-v3",
        "button-press-wall-v3",
        "coffee-button-v3",
        "dial-turn-v3",
        "door-close-v3",
        "door-lock-v3",
        "door-open-v3",
        "door-unlock-v3",
        "drawer-close-v3",
        "drawer-open-v3",
        "faucet-close-v3",
        "faucet-open-v3",
        "handle-press-v3",
        "handle-press-side-v3",
        "handle-pull-v3",
        "handle-pull-side-v3",
        "lever-pull-v3",
        "plate-slide-v3",
        "plate-slide-back-v3",
        "plate-slide-back-side-v3",
        "plate-slide-side-v3",
        "reach-v3",
        "reach-wall-v3",
        "window-close-v3",
        "window-open-v3",
        "peg-unplug-side-v3",
    ),
    "medium": (
        "basketball-v3",
        "bin-picking-v3",
        "box-close-v3",
        "coffee-pull-v3",
        "coffee-push-v3",
        "hammer-v3",
        "peg-insert-side-v3",
        "push-wall-v3",
        "soccer-v3",
        "sweep-v3",
        "sweep-into-v3",
    ),
    "hard": (
        "assembly-v3",
        "hand-insert-v3",
        "pick-out-of-hole-v3",
        "pick-place-v3",
        "push-v3",
        "push-back-v3",
    ),
    "very_hard": (
        "shelf-place-v3",
        "disassemble-v3",
        "stick-pull-v3",
        "stick-push-v3",
        "pick-place-wall-v3",
    ),
}

SUITES: dict[str, tuple[str, ...]] = {"mt10": MT10, "mt50": MT50, **DIFFICULTY_GROUPS}


def difficulty_of(task: str) -> str:
    """The difficulty group ('easy' | 'medium' | 'hard' | 'very_hard') of a Meta-World task."""
    key = canonical_task(task)
    return next(group for group, tasks in DIFFICULTY_GROUPS.items() if key in tasks)


def canonical_task(name: str) -> str:
    """Return the full Meta-World name ('pick-place' -> 'pick-place-v3'); raise on an unknown task."""
    key = name.strip().lower().replace("_", "-")
    if key and not key.endswith(VERSION_SUFFIX):
        key += VERSION_SUFFIX
    if key not in MT50:
        valid = ", ".join(t.removesuffix(VERSION_SUFFIX) for t in MT50)
        raise ValueError(
            f"unknown Meta-World task '{name}'; use a suite ({', '.join(SUITES)}) or one of "
            f"(with or without '{VERSION_SUFFIX}'): {valid}"
        )
    return key


def resolve_tasks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Turn 'mt10', 'mt50', a difficulty group ('easy', 'very_hard'), 'reach-v3,push' or a list of
    names into full task names.

    LIBERO names pass through `vlaforge.envs.libero.suites.resolve_libero`: 'libero_goal' -> its ten
    tasks as 'libero_goal/<task_name>', 'libero_goal/3' -> one.

    Order is kept (suites in their Meta-World order), duplicates are dropped, and an unknown name
    raises ValueError listing the valid ones.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise ValueError(f"no task given in {spec!r}; use 'mt10', 'mt50' or comma-separated task names")
    tasks: list[str] = []
    for part in parts:
        if part.lower().startswith("libero_"):  # LIBERO suites and tasks ('libero_goal', 'libero_goal/3')
            from vlaforge.envs.libero.suites import resolve_libero

            tasks.extend(t for t in resolve_libero(part) if t not in tasks)
            continue
        suite = SUITES.get(part.lower())
        for task in suite if suite is not None else (canonical_task(part),):
            if task not in tasks:
                tasks.append(task)
    return tasks
