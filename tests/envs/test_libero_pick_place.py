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
