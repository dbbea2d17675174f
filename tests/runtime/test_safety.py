import numpy as np
import pytest

from vlaforge.runtime.safety import SafetyFilter, SafetyLimits

EPS = 1e-5


def _random_action(g: np.random.Generator, n: int, scale: float) -> np.ndarray:
    a = g.normal(scale=scale, size=n)
    r = g.random()
    if r < 0.05:
        a[g.integers(n)] = np.nan
    elif r < 0.08:
        a[g.integers(n)] = np.inf * g.choice([-1, 1])
    elif r < 0.12:
        a *= 1e6  # a wild jump
    return a


def test_bounds_and_non_finite_hold_over_many_random_actions():
    g = np.random.default_rng(0)
    lim = SafetyLimits(action_low=[-1, -2, 0], action_high=[1, 2, 0.5])
    f = SafetyFilter(lim)
    n_bad = 0
    for _ in range(3000):
        a = _random_action(g, 3, 2.0)
        n_bad += not np.all(np.isfinite(a))
        safe, iv = f.filter(a)
        assert safe.dtype == np.float32 and np.all(np.isfinite(safe))
        assert np.all(safe >= np.array(lim.action_low) - EPS) and np.all(
            safe <= np.array(lim.action_high) + EPS
        )
        if not np.all(np.isfinite(a)):
            assert [i.kind for i in iv] == ["non_finite"]
    assert f.stats()["non_finite"] == n_bad > 50 and f.stats()["calls"] == 3000


@pytest.mark.parametrize("seed", range(5))
def test_delta_actions_in_closed_loop_always_satisfy_the_limits(seed):
    """Meta-World-like: action = (dx, dy, dz) * 0.01 m + gripper; the robot integrates what we let through."""
    g = np.random.default_rng(seed)
    hz, scale = 20.0, 0.01
    lim = SafetyLimits(
        action_low=[-1, -1, -1, -1], action_high=[1, 1, 1, 1],
        position_dims=[0, 1, 2], action_is_delta=True, delta_scale=scale,
        workspace_low=[-0.5, 0.4, 0.05], workspace_high=[0.5, 0.9, 0.3],
        max_delta=0.008, max_velocity=0.12, max_acceleration=1.0, control_hz=hz,
        gripper_dim=3, max_gripper_delta=0.3,
    )  # fmt: skip
    vmax, amax = min(0.008, 0.12 / hz), 1.0 / hz**2
    f = SafetyFilter(lim)
    pos = np.array([0.0, 0.6, 0.2])
    prev_step, prev_grip = np.zeros(3), None
    kinds = set()
    for _ in range(2000):
        a = _random_action(g, 4, 1.5)
        safe, iv = f.filter(a, state=np.concatenate([pos, [0.0]]))
        kinds |= {i.kind for i in iv}
        assert np.all(np.isfinite(safe)) and np.all(np.abs(safe) <= 1 + EPS)
        step = safe[:3].astype(np.float64) * scale
        assert np.all(np.abs(step) <= vmax + EPS), step
        if not any(i.kind in ("workspace", "non_finite") for i in iv):
            assert np.all(np.abs(step - prev_step) <= amax + EPS), (step, prev_step)
        if prev_grip is not None:
            assert abs(safe[3] - prev_grip) <= 0.3 + EPS
        pos = pos + step
        assert np.all(pos >= np.array(lim.workspace_low) - EPS) and np.all(
            pos <= np.array(lim.workspace_high) + EPS
        )
        prev_step, prev_grip = step, safe[3]
    assert kinds == {"non_finite", "action_bounds", "workspace", "velocity", "acceleration", "gripper_rate"}


def test_absolute_targets_stay_in_workspace_and_move_at_most_max_delta():
    g = np.random.default_rng(1)
    lim = SafetyLimits(position_dims=[0, 1], workspace_low=[0, 0], workspace_high=[1, 1], max_delta=0.05)
    f = SafetyFilter(lim)
    cur = np.array([0.5, 0.5])
    for _ in range(2000):
        safe, _ = f.filter(_random_action(g, 3, 1.0), state=cur)
        target = safe[:2].astype(np.float64)
        assert np.all(target >= -EPS) and np.all(target <= 1 + EPS)
        assert np.all(np.abs(target - cur) <= 0.05 + EPS)
        cur = target + g.normal(scale=0.005, size=2).clip(-0.01, 0.01)  # tracking error of the arm
        cur = cur.clip(0, 1)


def test_hold_without_state_uses_last_safe_action_and_chunks_are_fresh_trajectories():
    lim = SafetyLimits(position_dims=[0], max_delta=0.1, gripper_dim=1, max_gripper_delta=0.5)
    f = SafetyFilter(lim)
    safe, _ = f.filter(np.array([0.3, 1.0]), state=np.array([0.25]))
    held, iv = f.filter(np.array([np.nan, 0.0]))
    np.testing.assert_allclose(held, safe)
    assert iv[0].kind == "non_finite" and iv[0].dims == [0]
    chunk, per_step = f.filter_chunk(np.array([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]), state=np.array([0.0]))
    np.testing.assert_allclose(chunk[:, 0], [0.1, 0.2, 0.3], atol=1e-6)  # 0.1 per step from the state
    np.testing.assert_allclose(chunk[:, 1], [0.0, 0.0, 0.0])
    assert [i.kind for i in per_step[0]] == ["velocity"]
    assert f.stats()["non_finite"] == 1 and f.stats()["velocity"] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"action_low": [0, 0]}, "both action_low and action_high"),
        ({"action_low": [1], "action_high": [0]}, "action_low must be <="),
        ({"position_dims": [0, 1], "workspace_low": [0], "workspace_high": [1]}, "workspace_low: expected 2"),
        ({"max_velocity": -1.0}, "max_velocity"),
        ({"control_hz": 0.0}, "control_hz"),
        ({"gripper_dim": 3}, "gripper_dim and max_gripper_delta"),
        (
            {"position_dims": [0], "action_is_delta": True, "action_low": [0.1], "action_high": [1]},
            "include 0",
        ),
    ],
)
def test_limits_validation_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits(**kwargs)
    with pytest.raises(ValueError, match="unknown field"):
        SafetyLimits.from_dict({"max_speed": 1.0})
