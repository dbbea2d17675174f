"""A policy whose state or action size does not fit the environment is refused with both sizes."""

from __future__ import annotations

import pytest

from vlaforge.eval.rollout import _check_compatible
from vlaforge.types import PolicySpec


class _Env:
    task = "libero_goal/turn_on_the_stove"
    state_dim = 8
    action_dim = 7


def _spec(state: int, action: int) -> PolicySpec:
    return PolicySpec(
        cameras={"corner": (64, 64)}, state_dim=state, action_dim=action, chunk=4, history=1, fps=80.0
    )


def test_matching_sizes_pass():
    _check_compatible(_spec(8, 7), _Env())
    _check_compatible(_spec(0, 7), _Env())  # a policy that reads no state (the scripted expert)


def test_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match=r"outputs 4-D, the env takes 7-D.*reads 4-D, the env gives 8-D"):
        _check_compatible(_spec(4, 4), _Env())
