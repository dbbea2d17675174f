"""What every LIBERO scripted expert shares: privileged state, a Cartesian P-controller, phases.

An expert reads the simulator (object and fixture poses, sites, BDDL regions) that a policy never
sees, and emits the same 7-D OSC_POSE delta action a policy does:
  [Δx, Δy, Δz] = clip((target - eef) / POS_SCALE * gain), POS_SCALE = 5 cm per unit action,
  [Δrx, Δry, Δrz] = clip(axis-angle error / ROT_SCALE), ROT_SCALE = 0.5 rad per unit action,
  gripper = -1 open / +1 close.

A plan is a list of `Phase`s; each phase gives a target pose (recomputed every step from the
current state, so it follows objects that move), a gripper command, and when it is done (within
tolerance, after a number of steps, or a predicate). The expert never looks at the step counter of
the env, only at the state, so it is a function of the state and its own phase index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

POS_SCALE = 0.05  # m per unit of action (robosuite OSC_POSE output_max for position)
ROT_SCALE = 0.5  # rad per unit of action
OPEN, CLOSE = -1.0, 1.0


# -- privileged state --------------------------------------------------------------------------


def eef_pos(env: Any) -> np.ndarray:
    return np.asarray(env.raw_observation["robot0_eef_pos"], dtype=np.float64).copy()


def eef_quat(env: Any) -> np.ndarray:
    """(x, y, z, w)"""
    return np.asarray(env.raw_observation["robot0_eef_quat"], dtype=np.float64).copy()


def gripper_opening(env: Any) -> float:
    """Distance between the two finger joints (m): ~0.08 open, ~0 closed on nothing."""
    q = env.raw_observation["robot0_gripper_qpos"]
    return float(q[0] - q[1])


def body_pos(env: Any, name: str) -> np.ndarray:
    """World position of an object or fixture's root body (its BDDL name, e.g. 'plate_1')."""
    problem = env.problem
    body_id = problem.obj_body_id[name]
    return np.asarray(env.sim.data.body_xpos[body_id], dtype=np.float64).copy()


def body_quat(env: Any, name: str) -> np.ndarray:
    """World orientation (w, x, y, z, MuJoCo order) of an object's root body."""
    body_id = env.problem.obj_body_id[name]
    return np.asarray(env.sim.data.body_xquat[body_id], dtype=np.float64).copy()


def site_pos(env: Any, site: str) -> np.ndarray:
    sid = env.sim.model.site_name2id(site)
    return np.asarray(env.sim.data.site_xpos[sid], dtype=np.float64).copy()


def geom_bounds(env: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounds (lo, hi) of the collision geoms of object `name`'s bodies."""
    import mujoco

    model = env.sim.model._model
    data = env.sim.data._data
    root = env.problem.obj_body_id[name]
    bodies = {root} | {b for b in range(model.nbody) if _has_ancestor(model, b, root)}
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for g in range(model.ngeom):
        if model.geom_bodyid[g] not in bodies or model.geom_group[g] != 0:
            continue
        center = data.geom_xpos[g]
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
            mesh = model.geom_dataid[g]
            verts = model.mesh_vert[
                model.mesh_vertadr[mesh] : model.mesh_vertadr[mesh] + model.mesh_vertnum[mesh]
            ]
            world = verts @ data.geom_xmat[g].reshape(3, 3).T + center
            lo, hi = np.minimum(lo, world.min(0)), np.maximum(hi, world.max(0))
        else:
            r = model.geom_rbound[g]
            lo, hi = np.minimum(lo, center - r), np.maximum(hi, center + r)
    return lo, hi


def _has_ancestor(model: Any, body: int, root: int) -> bool:
    while body > 0:
        if body == root:
            return True
        body = int(model.body_parentid[body])
    return False


def goal_predicates(env: Any) -> list[list[str]]:
    """The BDDL goal as lists, e.g. [['on', 'akita_black_bowl_1', 'plate_1']] (lower case)."""
    return [[str(x).lower() for x in pred] for pred in env.problem.parsed_problem["goal_state"]]


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


def predicate_holds(env: Any, predicate: list[str]) -> bool:
    return bool(env.problem._eval_predicate(predicate))


# -- control -----------------------------------------------------------------------------------


def quat_xyzw_to_mat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle (world frame) that rotates `current` into `target` (both 3x3 matrices)."""
    r = target @ current.T
    angle = np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def yaw_rotation(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def move_action(
    env: Any,
    target: np.ndarray,
    gripper: float,
    *,
    rotation: np.ndarray | None = None,
    gain: float = 1.0,
    max_speed: float = 1.0,
) -> np.ndarray:
    """One 7-D action toward `target` (world position) and `rotation` (3x3 world, None: keep)."""
    delta = (np.asarray(target, dtype=np.float64) - eef_pos(env)) / POS_SCALE * gain
    norm = np.linalg.norm(delta)
    if norm > max_speed:
        delta *= max_speed / norm
    rot = np.zeros(3)
    if rotation is not None:
        rot = np.clip(rotation_error(quat_xyzw_to_mat(eef_quat(env)), rotation) / ROT_SCALE, -1.0, 1.0)
    return np.concatenate([delta, rot, [gripper]])


# -- plans -------------------------------------------------------------------------------------

Target = Callable[[Any], np.ndarray]


@dataclass
class Phase:
    """One step of a plan. `target(env)` -> world position for the end effector.

    Done when the end effector is within `tol` of the target (and at least `min_steps` were spent),
    or after `steps` steps when given (`target` None: hold position), or when `until(env)` is true.
    A phase that exceeds `timeout` steps moves on anyway (the episode then usually fails and is
    discarded by the recorder).
    """

    name: str
    target: Target | None
    gripper: float
    tol: float = 0.01
    steps: int | None = None
    min_steps: int = 0
    until: Callable[[Any], bool] | None = None
    rotation: Callable[[Any], np.ndarray] | None = None
    gain: float = 1.0
    max_speed: float = 1.0
    timeout: int = 120
    # Recovery: when this phase ends, `recover(env)` may return fresh phases for the whole skill the
    # phase belongs to (`skill`: any object shared by that skill's phases), e.g. a missed grasp found
    # after the lift starts the pick over. The expert then re-runs the skill from its first phase.
    recover: Callable[[Any], list[Phase] | None] | None = None
    skill: object = None


@dataclass
class ScriptedExpert:
    """Runs a list of phases; `plan(env)` builds them at reset (it may read the initial layout)."""

    plan_fn: Callable[[Any], list[Phase]]
    phases: list[Phase] = field(default_factory=list)
    index: int = 0
    spent: int = 0
    hold: np.ndarray | None = None
    rotation: np.ndarray | None = None
    retries: int = 0
    max_retries: int = 3

    def reset(self, env: Any) -> None:
        self.phases = self.plan_fn(env)
        self.index = 0
        self.spent = 0
        self.retries = 0
        self.hold = eef_pos(env)
        self.rotation = quat_xyzw_to_mat(eef_quat(env))  # keep the start orientation unless told

    @property
    def phase(self) -> str:
        return self.phases[self.index].name if self.index < len(self.phases) else "done"

    def act(self, env: Any) -> np.ndarray:
        while self.index < len(self.phases):
            p = self.phases[self.index]
            target = p.target(env) if p.target is not None else self.hold
            done = False
            if p.until is not None and p.until(env):
                done = True
            elif p.steps is not None:
                done = self.spent >= p.steps
            elif p.target is not None:
                done = self.spent >= p.min_steps and np.linalg.norm(target - eef_pos(env)) < p.tol
            if done or self.spent >= p.timeout:
                self._next_phase(env, p)
                continue
            self.spent += 1
            rotation = p.rotation(env) if p.rotation is not None else self.rotation
            return move_action(env, target, p.gripper, rotation=rotation, gain=p.gain, max_speed=p.max_speed)
        last = self.phases[-1].gripper if self.phases else OPEN
        return move_action(env, self.hold, last, rotation=self.rotation)

    def _next_phase(self, env: Any, p: Phase) -> None:
        """Move past phase `p`, or back to the start of its skill when its `recover` asks to."""
        fresh = p.recover(env) if p.recover is not None and self.retries < self.max_retries else None
        if fresh:
            start = end = self.index
            while start > 0 and self.phases[start - 1].skill is p.skill:
                start -= 1
            while end < len(self.phases) and self.phases[end].skill is p.skill:
                end += 1
            self.phases[start:end] = fresh
            self.index = start
            self.retries += 1
        else:
            self.index += 1
        self.spent = 0
        self.hold = eef_pos(env)
