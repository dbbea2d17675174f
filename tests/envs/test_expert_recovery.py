"""ScriptedExpert's recovery: a phase's `recover` replaces its skill's phases and re-runs the skill."""

from __future__ import annotations

import numpy as np

from vlaforge.envs.libero.experts.base import OPEN, Phase, ScriptedExpert


class _Env:
    """What ScriptedExpert reads: the end effector's pose."""

    raw_observation = {"robot0_eef_pos": np.zeros(3), "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0])}


def _skill(tag: str, log: list[str], fail_first: list[bool]) -> list[Phase]:
    skill = object()

    def recover(env):
        if fail_first[0]:
            fail_first[0] = False
            log.append("retry")
            return _skill(tag + "'", log, fail_first)
        return None

    phases = [
        Phase(f"{tag}.approach", None, OPEN, steps=1),
        Phase(f"{tag}.lift", None, OPEN, steps=1, recover=recover),
        Phase(f"{tag}.place", None, OPEN, steps=1),
    ]
    for p in phases:
        p.skill = skill
    return phases


def _run(expert: ScriptedExpert, steps: int) -> list[str]:
    env = _Env()
    expert.reset(env)
    seen: list[str] = []
    for _ in range(steps):
        expert.act(env)
        if not seen or seen[-1] != expert.phase:
            seen.append(expert.phase)  # the phase each action came from, once per run of it
    return seen


def test_recover_reruns_only_its_own_skill():
    log: list[str] = []
    fail = [True]
    before = Phase("open drawer", None, OPEN, steps=1)  # another skill, already done: not repeated
    expert = ScriptedExpert(lambda env: [before, *_skill("pick", log, fail)])
    seen = _run(expert, 12)
    assert log == ["retry"] and expert.retries == 1
    assert seen == [
        "open drawer",
        "pick.approach",
        "pick.lift",
        "pick'.approach",  # the fresh phases, from the skill's first one
        "pick'.lift",
        "pick'.place",
        "done",
    ]


def test_retries_are_capped():
    log: list[str] = []

    def always(env):
        log.append("retry")
        return [Phase("again", None, OPEN, steps=1, recover=always)]

    expert = ScriptedExpert(lambda env: [Phase("again", None, OPEN, steps=1, recover=always)], max_retries=2)
    seen = _run(expert, 8)
    assert expert.retries == 2 and len(log) == 2 and seen[-1] == "done"
