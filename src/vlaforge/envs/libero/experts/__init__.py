"""Scripted LIBERO experts from privileged simulator state and the task's BDDL goal.

`make_expert(task)` reads the goal predicates of the task (e.g. `(On akita_black_bowl_1 plate_1)`,
`(Open wooden_cabinet_1_middle_region)`, `(Turnon flat_stove_1)`) and composes the matching skills:
pick-and-place (`pick_place.py`) and articulated or pushing skills (`articulated.py`).
"""

from __future__ import annotations

from typing import Any

from vlaforge.envs.libero.experts.base import Phase, ScriptedExpert, goal_predicates


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


def ordered(predicates: list[list[str]]) -> list[list[str]]:
    """The goal's predicates in the order the skills run: a `(Close X)` after the predicates that put
    something into X (or one of X's regions), e.g. LIBERO-10's "put the bowl in the drawer and close
    it" lists the close first; otherwise as given."""

    def fills(pred: list[str], fixture: str) -> bool:
        return (
            pred[0] in ("in", "on")
            and len(pred) == 3
            and (pred[2] == fixture or pred[2].startswith(fixture + "_"))
        )

    closes = [
        p for p in predicates if p[0] == "close" and len(p) == 2 and any(fills(q, p[1]) for q in predicates)
    ]
    return [p for p in predicates if p not in closes] + closes


def make_expert(task: str) -> ScriptedExpert:
    """The scripted expert of a LIBERO task (its plan is built from the env at each reset)."""
    del task  # the plan reads the goal from the env itself
    return ScriptedExpert(plan_fn=plan_for)


__all__ = ["Phase", "ScriptedExpert", "make_expert", "ordered", "plan_for"]
