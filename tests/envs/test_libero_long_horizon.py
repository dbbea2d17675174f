"""Pieces of the scripted LIBERO experts added for LIBERO-10's multi-goal tasks: the order the goal's
predicates run in, and the batched box-overlap test of the straddle grasp (fast, no simulator); and,
marked slow, a long-horizon task solved on official initial states."""

from __future__ import annotations

import numpy as np
import pytest

from tests.extras import require


def test_close_runs_after_what_it_closes_on() -> None:
    from vlaforge.envs.libero.experts import ordered

    goal = [
        ["close", "white_cabinet_1_bottom_region"],
        ["in", "akita_black_bowl_1", "white_cabinet_1_bottom_region"],
    ]
    assert ordered(goal) == [goal[1], goal[0]]
    goal = [["in", "mug_1", "microwave_1_heating_region"], ["close", "microwave_1"]]
    assert ordered(goal) == goal
    # a close with nothing put into its fixture keeps its place; other goals are untouched
    goal = [["close", "wooden_cabinet_1_top_region"], ["on", "bowl_1", "plate_1"]]
    assert ordered(goal) == goal
    assert ordered([["on", "a", "b"]]) == [["on", "a", "b"]]


def test_the_box_overlap_test_against_geometry() -> None:
    """`_overlap_grid` (and `Obstacles.overlapping`, its one-box form) against cases decided by hand:
    axis-aligned boxes overlap exactly where every axis's centre distance is below the half-sizes' sum,
    and a cube turned 45 degrees reaches sqrt(2) along x."""
    from vlaforge.envs.libero.experts.pick_place import Obstacles, _overlap_grid

    rng = np.random.default_rng(0)
    eye = np.eye(3)
    boxes = [(rng.uniform(-0.1, 0.1, 3), eye, rng.uniform(0.005, 0.04, 3)) for _ in range(6)]
    obstacles = Obstacles(boxes)
    half = np.array([0.012, 0.03, 0.02])
    points = rng.uniform(-0.12, 0.12, (400, 3))
    gap = np.abs(points[:, None, :] - obstacles.center[None]) - (half + obstacles.half[None])  # (M, N, 3)
    clear = np.abs(gap).min(axis=2) > 1e-3  # keep the cases away from touching
    want = (gap < 0).all(axis=2)
    grid = _overlap_grid(obstacles, points, eye, half)
    assert grid.shape == (400, 6) and 0 < want[clear].sum() < clear.sum()
    np.testing.assert_array_equal(grid[clear], want[clear])
    np.testing.assert_array_equal(obstacles.overlapping(points[0], eye, half), grid[0])

    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    turned = Obstacles([(np.zeros(3), np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.ones(3))])
    small = np.full(3, 0.1)
    # the turned square is |x + y| <= sqrt(2), |x - y| <= sqrt(2): (1.2, 0.25) reaches in, (1.4, 0.25) does not
    xs = np.array([[1.45, 0, 0], [1.5, 0, 0], [1.53, 0, 0], [1.6, 0, 0], [1.2, 0.25, 0], [1.4, 0.25, 0]])
    assert _overlap_grid(turned, xs, eye, small)[:, 0].tolist() == [True, True, False, False, True, False]
    assert Obstacles([]).overlapping(np.zeros(3), eye, small).shape == (0,)


@pytest.mark.slow
def test_two_objects_go_into_one_basket() -> None:
    require("libero", "libero")
    from vlaforge.envs.libero.env import LiberoEnv
    from vlaforge.envs.libero.suites import resolve_libero
    from vlaforge.envs.record import run_expert_episode

    (task,) = resolve_libero("libero_10/0")  # put both the alphabet soup and the tomato sauce in the basket
    env = LiberoEnv(task, split="eval", cameras=("image",), image_size=32)
    env.render_images = False
    try:
        assert run_expert_episode(env, 0, steps_after_success=0, keep_frames=False).success
    finally:
        env.close()
