"""Scripted articulated experts of LIBERO-Goal: opening a drawer and turning on the stove succeed on
official initial states (slow: builds the LIBERO env and simulates full episodes)."""

from __future__ import annotations

import pytest

from tests.extras import require

require("libero", "libero")


def _run(task: str, seeds: tuple[int, ...]) -> list[bool]:
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


@pytest.mark.slow
@pytest.mark.parametrize("task", ["libero_goal/0", "libero_goal/7"])
def test_articulated_expert_succeeds(task: str) -> None:
    assert _run(task, (0, 1)) == [True, True]


def test_skill_for_declines_other_predicates() -> None:
    from vlaforge.envs.libero.experts import articulated

    class _NoEnv:  # skill_for must not touch the env for predicates it does not handle
        pass

    assert articulated.skill_for(_NoEnv(), ["stack", "a", "b"]) is None
