"""Scripted LIBERO experts from privileged simulator state and the task's BDDL goal.

`make_expert(task)` reads the goal predicates of the task (e.g. `(On akita_black_bowl_1 plate_1)`,
`(Open wooden_cabinet_1_middle_region)`, `(Turnon flat_stove_1)`) and composes the matching skills:
pick-and-place (`pick_place.py`) and articulated or pushing skills (`articulated.py`).
"""

from __future__ import annotations

from typing import Any

from vlaforge.envs.libero.experts.base import Phase, ScriptedExpert, goal_predicates, ordered


def plan_for(env: Any) -> list[Phase]:
    """Phases for the current episode of `env`, from its BDDL goal (first predicate first)."""
    from vlaforge.envs.libero.experts import articulated, pick_place

    phases: list[Phase] = []
    for predicate in ordered(goal_predicates(env)):
        kind = predicate[0]
        skill = articulated.skill_for(env, predicate) or pick_place.skill_for(env, predicate)
        if skill is None:
            raise NotImplementedError(
                f"{env.task}: no scripted skill for the goal predicate {predicate} ({kind})"
            )
        phases.extend(skill)
    return phases


def make_expert(task: str) -> ScriptedExpert:
    """The scripted expert of a LIBERO task (its plan is built from the env at each reset)."""
    del task  # the plan reads the goal from the env itself
    return ScriptedExpert(plan_fn=plan_for)


__all__ = ["Phase", "ScriptedExpert", "make_expert", "ordered", "plan_for"]
