"""The scripted pick-and-place expert solves LIBERO spatial and object tasks (official states)."""

from __future__ import annotations

import os

import pytest

from tests.extras import require

pytestmark = pytest.mark.slow


def _run(task: str, seeds: tuple[int, ...]) -> list[bool]:
    os.environ.setdefault("MUJOCO_GL", "egl")
    require("libero", "libero")
    from vlaforge.envs.libero.env import LiberoEnv
    from vlaforge.envs.record import run_expert_episode

    env = LiberoEnv(task, split="eval", cameras=("image",), image_size=32)
    env.render_images = False
    try:
        outcomes = [
            run_expert_episode(env, seed, steps_after_success=0, keep_frames=False).success for seed in seeds
        ]
    finally:
        env.close()
    return outcomes


@pytest.mark.parametrize(
    "task",
    [
        "libero_spatial/pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate",
        "libero_object/pick_up_the_alphabet_soup_and_place_it_in_the_basket",
    ],
)
def test_pick_place_expert_succeeds(task: str) -> None:
    assert _run(task, (0, 1)) == [True, True]


def test_skill_for_ignores_other_predicates() -> None:
    require("libero", "libero")
    from vlaforge.envs.libero.experts import pick_place

    assert pick_place.skill_for(None, ["open", "wooden_cabinet_1_top_region"]) is None
    assert pick_place.skill_for(None, ["turnon", "flat_stove_1"]) is None


def test_a_missed_grasp_starts_the_pick_over() -> None:
    """The first grasp is sabotaged (the gripper held open): the lift finds the bowl still on the table,
    the expert picks it again from the start of the skill and the episode still succeeds."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    require("libero", "libero")
    import numpy as np

    from vlaforge.envs.libero.env import LiberoEnv

    env = LiberoEnv(
        "libero_spatial/pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate",
        split="eval",
        cameras=("image",),
        image_size=32,
    )
    env.render_images = False
    try:
        env.reset(0)
        success, phases = False, []
        for _ in range(env.max_steps):
            action = env.expert_action()
            expert = env._expert
            phases.append(expert.phase)
            if expert.retries == 0 and expert.phase in ("grasp", "lift"):
                action = action.copy()
                action[6] = -1.0  # keep the fingers open: the first grasp misses
            _, _, _, info = env.step(action)
            if info["success"]:
                success = True
                break
        assert expert.retries == 1
        first_lift = phases.index("lift")
        assert "approach" in phases[first_lift:]  # started over after the missed lift
        assert success
        assert np.isfinite(env.state_vector()).all()
    finally:
        env.close()
