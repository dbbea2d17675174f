"""Disjoint train / eval configurations of Meta-World tasks.

Meta-World resets a task from a frozen list of 50 object/goal configurations ("rand_vec": object
and goal positions) drawn from the benchmark seed (`metaworld.MT1(task, seed)`; each `Task` carries
them pickled). vlaforge draws the training list and the evaluation list from two different benchmark
seeds, following Meta-World's own ML1 convention (test seed = train seed + 1), so a policy is never
scored on a layout it saw in its demonstrations. `config_fingerprint` makes that checkable.

Different seeds alone are not enough: some tasks randomise a single coordinate (the drawer's x over
20 cm), so two independent lists of 50 share layouts to within a fraction of a millimetre (drawer-open
does 4 times with seeds 0 and 1). The eval list therefore replaces, in place, every configuration
within `SAME_LAYOUT_TOL` of a training one (or of an earlier eval one) by the next unused
configuration of a reserve benchmark seed. The train list is Meta-World's MT1 list, untouched.
"""

from __future__ import annotations

import functools
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np

from vlaforge.envs.tasks import canonical_task

if TYPE_CHECKING:
    from metaworld.types import Task

TRAIN_SEED = 0
EVAL_SEED = 1
SPLIT_SEEDS: dict[str, int] = {"train": TRAIN_SEED, "eval": EVAL_SEED}
N_CONFIGS = 50  # metaworld._N_GOALS: configurations per task and benchmark seed
SAME_LAYOUT_TOL = 1e-3  # metres: configurations closer than this in every coordinate are one layout
FINGERPRINT_DECIMALS = 3  # round to 1 mm; layouts further apart than SAME_LAYOUT_TOL never collide
_RESERVE_SEEDS = (1001, 1002, 1003)  # eval replacements come from these benchmark seeds, in order


def split_seed(split: str) -> int:
    """Benchmark seed of a split ('train' | 'eval')."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    return SPLIT_SEEDS[split]


@functools.cache
def _benchmark_tasks(task: str, benchmark_seed: int) -> tuple[Task, ...]:
    import metaworld

    tasks = tuple(metaworld.MT1(task, seed=benchmark_seed).train_tasks)
    if len(tasks) != N_CONFIGS:
        raise RuntimeError(f"metaworld.MT1('{task}') gave {len(tasks)} configurations, expected {N_CONFIGS}")
    return tasks


@functools.cache
def _eval_tasks(task: str) -> tuple[Task, ...]:
    taken = [config_rand_vec(c) for c in _benchmark_tasks(task, TRAIN_SEED)]

    def is_new(config: Task) -> bool:
        vec = config_rand_vec(config)
        return all(np.max(np.abs(vec - other)) > SAME_LAYOUT_TOL for other in taken)

    def reserves():
        for seed in _RESERVE_SEEDS:
            yield from _benchmark_tasks(task, seed)

    reserve = reserves()
    configs: list[Task] = []
    for config in _benchmark_tasks(task, EVAL_SEED):
        while not is_new(config):
            config = next(reserve, None)
            if config is None:
                raise RuntimeError(
                    f"{task}: ran out of reserve configurations distinct from the training ones"
                )
        configs.append(config)
        taken.append(config_rand_vec(config))
    return tuple(configs)


def task_configs(task: str, split: str = "train") -> tuple[Task, ...]:
    """The 50 `metaworld.Task` configurations of `task` in `split` (cached per process; ~1 s first time).

    train: `metaworld.MT1(task, seed=TRAIN_SEED)`; eval: `MT1(task, seed=EVAL_SEED)` with layouts that
    repeat a training (or earlier eval) layout replaced, so the two lists never share a layout.
    """
    task = canonical_task(task)
    seed = split_seed(split)
    return _eval_tasks(task) if seed == EVAL_SEED else _benchmark_tasks(task, seed)


def lerobot_task(task: str) -> Task:
    """The task LeRobot's Meta-World env is set to before it unfreezes the layout:
    `metaworld.MT1(task, seed=42).train_tasks[0]` (its constants, partially_observable=False)."""
    from vlaforge.envs.protocol import LEROBOT_MT1_SEED

    return _benchmark_tasks(canonical_task(task), LEROBOT_MT1_SEED)[0]


def config_data(config: Task) -> dict[str, Any]:
    """Unpickle a Meta-World `Task` (keys: rand_vec, partially_observable, env_cls, task-specific extras)."""
    return pickle.loads(config.data)


def config_rand_vec(config: Task) -> np.ndarray:
    """The object/goal positions that define a configuration, float64 (K,)."""
    return np.asarray(config_data(config)["rand_vec"], dtype=np.float64)


def config_fingerprint(config: Task | np.ndarray, decimals: int = FINGERPRINT_DECIMALS) -> tuple[float, ...]:
    """Hashable identity of a configuration: its rand_vec rounded to `decimals` (1 mm by default).

    Equal fingerprints mean every object and goal is within a millimetre: the same layout. Layouts
    that differ by more than SAME_LAYOUT_TOL in some coordinate always get different fingerprints.
    """
    vec = config if isinstance(config, np.ndarray) else config_rand_vec(config)
    return tuple(float(x) for x in np.round(vec, decimals) + 0.0)  # + 0.0 turns -0.0 into 0.0


def split_fingerprints(task: str, split: str) -> list[tuple[float, ...]]:
    """Fingerprints of the 50 configurations of `task` in `split`, index = config id."""
    return [config_fingerprint(c) for c in task_configs(task, split)]
