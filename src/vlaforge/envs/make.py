"""One entry point for every simulated environment: the task name says which simulator.

    make_env("push-v3")                       # Meta-World (MetaWorldEnv)
    make_env("libero_goal/turn_on_the_stove")  # LIBERO (LiberoEnv)

`family_of(task)` tells what recording and evaluation need to know without building an env:
cameras, state/action names, robot type and control rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EnvFamily:
    """What a dataset recorded from a simulator looks like."""

    name: str  # "metaworld" | "libero"
    cameras: tuple[str, ...]  # every camera the env can render
    default_cameras: tuple[str, ...]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    robot_type: str
    fps: float


def family_of(task: str) -> EnvFamily:
    """The env family of a full task name (as `resolve_tasks` returns it)."""
    from vlaforge.envs.libero.suites import is_libero

    if is_libero(task):
        from vlaforge.envs.libero.suites import CONTROL_HZ

        names = ("image", "wrist_image")  # the keys of LeRobot's LIBERO datasets (openpi's converter)
        state = ("eef_x", "eef_y", "eef_z", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
                 "gripper_qpos_left", "gripper_qpos_right")  # fmt: skip
        action = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
        return EnvFamily("libero", names, names, state, action, "panda", CONTROL_HZ)
    from vlaforge.envs.metaworld_env import ACTION_NAMES, DEFAULT_CAMERAS, STATE_NAMES
    from vlaforge.envs.render import CAMERAS

    return EnvFamily(
        "metaworld", tuple(CAMERAS), DEFAULT_CAMERAS, tuple(STATE_NAMES), tuple(ACTION_NAMES), "sawyer", 80.0
    )


def make_env(
    task: str,
    *,
    split: str = "train",
    cameras: tuple[str, ...] | list[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    instruction: str | None = None,
    **kwargs: Any,
) -> Any:
    """Build the environment of `task` (Meta-World or LIBERO); None keeps the env's default."""
    from vlaforge.envs.libero.suites import is_libero

    options: dict[str, Any] = {"split": split, "instruction": instruction, **kwargs}
    if cameras is not None:
        options["cameras"] = tuple(cameras)
    if image_size is not None:
        options["image_size"] = image_size
    if is_libero(task):
        from vlaforge.envs.libero.env import LiberoEnv

        return LiberoEnv(task, **options)
    from vlaforge.envs.metaworld_env import make_env as make_metaworld_env

    return make_metaworld_env(task, **options)


def make_watching_env(
    task: str,
    *,
    split: str = "eval",
    cameras: tuple[str, ...] | list[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    instruction: str | None = None,
) -> Any:
    """A LIBERO env factory for `evaluate(env_factory=...)` whose episodes also report which *other*
    tasks of the same suite had their goal reached (`episode_outcomes`): the language tests' "did it
    do the instructed task instead?". Module-level, so worker processes can unpickle it."""
    from vlaforge.envs.libero.suites import get_task, resolve_libero, suite_of

    others = [t for t in resolve_libero(suite_of(task)) if t != get_task(task).full_name]
    return make_env(
        task, split=split, cameras=cameras, image_size=image_size, instruction=instruction, watch_tasks=others
    )
