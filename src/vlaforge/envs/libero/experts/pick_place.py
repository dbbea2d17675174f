"""Pick-and-place skills for LIBERO goals `(On obj target)` and `(In obj region)`.

`pick_and_place(env, obj, place_target)` grasps `obj` from above with a vertical gripper, lifts it
to a height that clears the scene, carries it above `place_target(env)`, lowers it until its
bottom is `release_height` above that point, opens and retreats upward. Targets are recomputed every
step from the simulator state (the carried object's offset from the gripper is measured live, so a
grasp that slips or swings is still placed where it should be).

Grasps (`_grasp_plan`): boxes, cans and bottles are taken from the top with the fingers closing
across their narrowest horizontal extent; bowls (too wide for the Panda's 8 cm) by their rim, the
fingers straddling the wall along a radius. Among candidate grasps (rim points around the bowl,
small shifts along a box's long side) the one whose open fingers and palm stay clear of the other
objects and fixtures is chosen; of the two equivalent yaws (the gripper is symmetric under a half
turn) the one that keeps the wrist joint away from its limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vlaforge.envs.libero.experts.base import (
    CLOSE,
    OPEN,
    Phase,
    body_pos,
    eef_pos,
    eef_quat,
    goal_predicates,
    gripper_opening,
    ordered,
    quat_xyzw_to_mat,
    rotation_error,
    site_pos,
    yaw_rotation,
)

DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down, fingers closing along world y (yaw 0)
MAX_WIDTH = 0.072  # widest object (m) the open fingers (~7.7 cm apart) take
BOWL_GRASP_DEPTH = 0.022  # eef below the bowl's rim
TOP_GRASP_DEPTH = 0.024  # eef below the top of a tall object (the palm is 3 cm above the eef)
MIN_EEF_ABOVE_BOTTOM = 0.012  # fingertips reach ~9 mm below the eef
CLEARANCE = 0.05  # m between the carried object's bottom and the highest thing it passes over
PRE_GRASP = 0.07  # m above the grasp point before the vertical descent
LOST = 0.03  # m the object may fall behind the rising gripper before the grasp counts as missed or dropped
WRIST_LIMIT = 2.5  # rad: keep Panda joint 7 (limit 2.9) inside this
RISE_CLEARANCE = 0.03  # m between the fingertips and what they pass over after `rise`
RISE_MAX = 0.2  # m at most (a tall fixture beside the path is not worth climbing over)
SLOT_MARGIN = 0.004  # m between a slotted object's footprint and its region's border
SLOT_EDGE = 0.02  # m between a slotted object's origin and its region's border (`On` a region)

# Parts of the open Panda gripper in the eef frame (x across the fingers, y along the finger axis,
# z up), as (lo, hi) boxes, measured from robosuite's collision meshes.
PALM = (np.array([-0.034, -0.106, 0.030]), np.array([0.034, 0.106, 0.13]))
FINGERS = (
    (np.array([-0.012, 0.036, -0.011]), np.array([0.012, 0.068, 0.035])),
    (np.array([-0.012, -0.068, -0.011]), np.array([0.012, -0.036, 0.035])),
)


# -- geometry ----------------------------------------------------------------------------------


def _bodies_of(model: Any, root: int) -> set[int]:
    out = {root}
    for b in range(model.nbody):
        p = b
        while p > 0:
            if p == root:
                out.add(b)
                break
            p = int(model.body_parentid[p])
    return out


_SIGNS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)


def geom_boxes(env: Any, name: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Oriented boxes (center, rotation with the box axes as columns, half sizes) bounding each
    collision geom of object/fixture `name` (exact for boxes; a mesh's box in its own frame)."""
    import mujoco

    model = env.sim.model._model
    data = env.sim.data._data
    bodies = _bodies_of(model, env.problem.obj_body_id[name])
    out = []
    for g in range(model.ngeom):
        if model.geom_bodyid[g] not in bodies or (
            model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0
        ):
            continue
        center, rot, size = (
            data.geom_xpos[g].copy(),
            data.geom_xmat[g].reshape(3, 3).copy(),
            model.geom_size[g],
        )
        t = model.geom_type[g]
        if t == mujoco.mjtGeom.mjGEOM_MESH:
            m = model.geom_dataid[g]
            verts = model.mesh_vert[model.mesh_vertadr[m] : model.mesh_vertadr[m] + model.mesh_vertnum[m]]
            lo, hi = verts.min(0), verts.max(0)
            out.append((center + rot @ ((lo + hi) / 2), rot, (hi - lo) / 2))
        elif t == mujoco.mjtGeom.mjGEOM_BOX:
            out.append((center, rot, size.copy()))
        elif t == mujoco.mjtGeom.mjGEOM_SPHERE:
            out.append((center, rot, np.full(3, size[0])))
        elif t == mujoco.mjtGeom.mjGEOM_CYLINDER:
            out.append((center, rot, np.array([size[0], size[0], size[1]])))
        elif t == mujoco.mjtGeom.mjGEOM_CAPSULE:
            out.append((center, rot, np.array([size[0], size[0], size[1] + size[0]])))
    return out


def geom_corners(env: Any, name: str) -> list[np.ndarray]:
    """World corners (8, 3) of each of `geom_boxes(env, name)`."""
    return [(_SIGNS * half) @ rot.T + center for center, rot, half in geom_boxes(env, name)]


def collision_points(env: Any, name: str) -> np.ndarray:
    """World corner points (N, 3) of the collision geoms of object/fixture `name`."""
    corners = geom_corners(env, name)
    return np.concatenate(corners) if corners else body_pos(env, name)[None]


def bounds(env: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounds (lo, hi) of `name`'s collision geoms (tight for boxes, unlike
    base.geom_bounds, which pads every primitive by its bounding sphere)."""
    p = collision_points(env, name)
    return p.min(0), p.max(0)


def _others(env: Any, exclude: set[str]) -> list[str]:
    names = list(env.problem.objects_dict) + list(env.problem.fixtures_dict)
    return [n for n in names if n not in exclude and n in env.problem.obj_body_id]


def _scene_top(env: Any, exclude: set[str], lo_xy: np.ndarray, hi_xy: np.ndarray) -> float:
    """Highest collision point of any object/fixture (not excluded) over the xy box [lo, hi]."""
    top = -np.inf
    for name in _others(env, exclude):
        for c in geom_corners(env, name):
            clo, chi = c.min(0), c.max(0)
            if np.all(clo[:2] <= hi_xy) and np.all(chi[:2] >= lo_xy):
                top = max(top, float(chi[2]))
    return top


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def _gripper_frame(yaw: float) -> np.ndarray:
    """Columns: the eef's x (across the fingers), y (finger axis) and world up, at `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Obstacles:
    """The collision boxes of everything but the object to grasp, as arrays for overlap tests."""

    def __init__(self, boxes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.center = np.array([b[0] for b in boxes]).reshape(-1, 3)
        self.rot = np.array([b[1] for b in boxes]).reshape(-1, 3, 3)
        self.half = np.array([b[2] for b in boxes]).reshape(-1, 3)
        self.top = self.center[:, 2] + np.einsum("nj,nj->n", self.half, np.abs(self.rot[:, 2, :]))

    def overlapping(self, center: np.ndarray, rot: np.ndarray, half: np.ndarray) -> np.ndarray:
        """Mask of the boxes that overlap the oriented box (center, rot, half) (separating axes)."""
        if len(self.center) == 0:
            return np.zeros(0, dtype=bool)
        return _overlap_grid(self, np.asarray(center)[None], rot, half)[0]


def _hand_raise(obstacles: Obstacles, point: np.ndarray, yaw: float) -> float:
    """How far (m) the open gripper at eef `point` and `yaw` must be raised to clear `obstacles`;
    0 when clear."""
    frame = _gripper_frame(yaw)
    need = 0.0
    for part_lo, part_hi in (PALM, *FINGERS):
        center = point + frame @ ((part_lo + part_hi) / 2)
        hit = obstacles.overlapping(center, frame, (part_hi - part_lo) / 2)
        if hit.any():
            need = max(need, float(obstacles.top[hit].max() - (point[2] + part_lo[2])))
    return need


# -- robot -------------------------------------------------------------------------------------


def _eef_yaw(env: Any) -> float:
    r = quat_xyzw_to_mat(eef_quat(env)) @ DOWN  # Rz(yaw) when the gripper points down
    return float(np.arctan2(r[1, 0], r[0, 0]))


def _choose_yaw(env: Any, yaw: float, points: list[np.ndarray]) -> float:
    """Of `yaw` and `yaw + pi` (the same grasp), the one reached with the smaller wrist rotation
    that keeps joint 7 within WRIST_LIMIT at every point of `points` (grasp, place)."""
    robot = env.problem.robots[0]
    idx = robot._ref_joint_pos_indexes
    q7 = float(env.sim.data.qpos[idx[6]])
    base = env.sim.data.body_xpos[env.sim.model.body_name2id(robot.robot_model.root_body)]
    now = _eef_yaw(env)
    here = eef_pos(env)
    az_now = np.arctan2(here[1] - base[1], here[0] - base[0])
    options = []
    for y in (yaw, yaw + np.pi):
        turn = _wrap(y - now)  # the controller turns the short way
        worst = 0.0
        for p in points:
            az = np.arctan2(p[1] - base[1], p[0] - base[0])
            q7_pred = q7 - turn + _wrap(az - az_now)
            worst = max(worst, abs(q7_pred))
        options.append((worst > WRIST_LIMIT, abs(turn), now + turn))
    return float(min(options)[2])


# -- the skill ---------------------------------------------------------------------------------


def pick_and_place(
    env: Any,
    obj: str,
    place_target: Callable[[Any], np.ndarray],
    *,
    release_height: float = 0.02,
    carry_height: float | None = None,
    clear_start: bool = False,
    crowded: bool = False,
) -> list[Phase]:
    """Phases that grasp `obj` and put it down above `place_target(env)`.

    `place_target(env)` -> world xyz, recomputed every step: the object is carried so that its body
    origin is above the target's xy, and released when its lowest point is `release_height` (m)
    above the target's z (give the surface it should rest on, e.g. `support_point`). `carry_height`
    (world z of the object's bottom while carrying) defaults to a height that clears the scene
    between the object and the target. `clear_start`: first rise straight up until the open fingers
    clear everything between the hand and the object (when an earlier skill of the same goal left the
    hand low, e.g. in a basket, a straight approach would drag what it passes over). `crowded`: see
    `_grasp_plan`.
    """
    state: dict[str, Any] = {}
    skill = object()  # tags this attempt's phases (a retry builds new ones)

    def plan(e: Any) -> dict[str, Any]:
        """The grasp, planned from the state when the skill starts (not when the plan is built, so
        that it composes after other skills, e.g. opening the drawer the object goes into)."""
        if "grasp" not in state:
            start = body_pos(e, obj)
            lo, hi = bounds(e, obj)
            grasp = _grasp_plan(
                e, obj, lo, hi, np.asarray(place_target(e), dtype=np.float64), crowded=crowded
            )
            state.update(
                grasp=grasp,
                lo=lo,
                bottom_offset=start[2] - lo[2],  # body origin above the object's lowest point
                rot=yaw_rotation(grasp["yaw"]) @ DOWN,
                grasp_offset=grasp["point"] - start,  # eef - object origin at the grasp (world frame)
            )
        return state

    def rotation(e: Any) -> np.ndarray:
        return plan(e)["rot"]

    def grasp_point(e: Any) -> np.ndarray:
        return body_pos(e, obj) + plan(e)["grasp_offset"]

    def pre_grasp(e: Any) -> np.ndarray:
        p = grasp_point(e)
        p[2] = max(p[2] + PRE_GRASP, plan(e)["grasp"]["top"] + 0.03)
        return p

    def held_offset(e: Any) -> np.ndarray:
        """eef - object origin now, within 4 cm of its value when the lift started (an object that
        was dropped or never grasped must not send the gripper chasing its own motion)."""
        if "offset" not in state:
            state["offset"] = eef_pos(e) - body_pos(e, obj)
        off = eef_pos(e) - body_pos(e, obj)
        return np.clip(off, state["offset"] - 0.04, state["offset"] + 0.04)

    def carry_z(e: Any) -> float:
        """World z of the object's bottom while carrying (fixed when the lift starts)."""
        if "carry" not in state:
            if carry_height is not None:
                state["carry"] = float(carry_height)
            else:
                t = np.asarray(place_target(e), dtype=np.float64)
                here = body_pos(e, obj)
                top = _scene_top(
                    e, {obj}, np.minimum(here[:2], t[:2]) - 0.06, np.maximum(here[:2], t[:2]) + 0.06
                )
                carry = max(top + CLEARANCE, t[2] + release_height + 0.03, state["lo"][2] + 0.05)
                # the palm (wider than the object) must pass over everything on the way as well
                off = held_offset(e)
                palm_top = _path_top(e, obj, eef_pos(e), t + off, plan(e)["grasp"]["yaw"])
                state["carry"] = max(carry, palm_top + 0.01 - PALM[0][2] - state["bottom_offset"] - off[2])
        return state["carry"]

    def lift(e: Any) -> np.ndarray:
        if "lift_xy" not in state:
            state["lift_xy"] = eef_pos(e)[:2].copy()
        off = held_offset(e)
        return np.array([*state["lift_xy"], carry_z(e) + state["bottom_offset"] + off[2]])

    def above_target(e: Any) -> np.ndarray:
        off = held_offset(e)
        p = np.asarray(place_target(e), dtype=np.float64) + off
        p[2] = carry_z(e) + state["bottom_offset"] + off[2]
        return p

    def lower(e: Any) -> np.ndarray:
        t = np.asarray(place_target(e), dtype=np.float64)
        off = held_offset(e)
        p = t + off
        p[2] = t[2] + release_height + state["bottom_offset"] + off[2]
        return p

    def retreat(e: Any) -> np.ndarray:
        if "release" not in state:
            state["release"] = eef_pos(e).copy()
        return state["release"] + np.array([0.0, 0.0, 0.08])

    def lost(e: Any) -> list[Phase] | None:
        """After the lift or the carry: the object no longer hangs at the height below the gripper it had
        when the lift started (the grasp missed, or the object slipped out on the way): pick it again."""
        if "offset" not in state or abs((eef_pos(e) - body_pos(e, obj))[2] - state["offset"][2]) <= LOST:
            return None
        return pick_and_place(
            e,
            obj,
            place_target,
            release_height=release_height,
            carry_height=carry_height,
            clear_start=clear_start,
            crowded=crowded,
        )

    def rise(e: Any) -> np.ndarray:
        """Straight above the hand, high enough for the fingertips to pass over everything between
        the hand and the pre-grasp point (fixed when the skill starts); `traverse` then goes over at
        that height and `approach` comes down from above the object."""
        if "rise" not in state:
            here, goal = eef_pos(e), pre_grasp(e)
            top = _scene_top(
                e, {obj}, np.minimum(here[:2], goal[:2]) - 0.05, np.maximum(here[:2], goal[:2]) + 0.05
            )
            z = min(max(here[2], top + RISE_CLEARANCE - FINGERS[0][0][2]), here[2] + RISE_MAX)
            state["rise"] = np.array([here[0], here[1], z])
        return state["rise"]

    def traverse(e: Any) -> np.ndarray:
        p = pre_grasp(e)
        return np.array([p[0], p[1], max(rise(e)[2], p[2])])

    phases = [
        Phase("settle", None, OPEN, until=_at_rest(obj), timeout=40),
        *(
            [
                Phase("rise", rise, OPEN, tol=0.015, rotation=rotation, timeout=40),
                Phase("traverse", traverse, OPEN, tol=0.02, rotation=rotation, timeout=80),
            ]
            if clear_start
            else []
        ),
        Phase(
            "approach",
            pre_grasp,
            OPEN,
            tol=0.0,
            until=_reached(pre_grasp, rotation, 0.02, 0.08),
            rotation=rotation,
            timeout=80,
        ),
        Phase("descend", grasp_point, OPEN, tol=0.006, rotation=rotation, max_speed=0.6, timeout=40),
        Phase("grasp", None, CLOSE, until=_gripper_settled(), timeout=16, rotation=rotation),
        Phase(
            "lift",
            lift,
            CLOSE,
            tol=0.02,
            until=_stalled(lift, 0.04),
            rotation=rotation,
            timeout=60,
            recover=lost,
        ),
        Phase(
            "carry",
            above_target,
            CLOSE,
            tol=0.015,
            until=_stalled(above_target, 0.03),
            rotation=rotation,
            timeout=80,
            recover=lost,
        ),
        Phase("lower", lower, CLOSE, tol=0.01, rotation=rotation, max_speed=0.6, timeout=40),
        Phase("release", None, OPEN, steps=6, rotation=rotation),
        Phase("retreat", retreat, OPEN, tol=0.02, rotation=rotation, timeout=30),
    ]
    for phase in phases:
        phase.skill = skill
    return phases


def _path_top(env: Any, obj: str, start: np.ndarray, end: np.ndarray, yaw: float) -> float:
    """Highest obstacle (not `obj`) under the palm's footprint along the straight eef path."""
    obstacles = Obstacles([b for name in _others(env, {obj}) for b in geom_boxes(env, name)])
    frame = _gripper_frame(yaw)
    half = np.array([(PALM[1][0] - PALM[0][0]) / 2, (PALM[1][1] - PALM[0][1]) / 2, 5.0])
    top = -np.inf
    for f in np.linspace(0.0, 1.0, 9):
        center = start + f * (end - start)
        hit = obstacles.overlapping(np.array([center[0], center[1], 0.0]), frame, half)
        if hit.any():
            top = max(top, float(obstacles.top[hit].max()))
    return top


def _reached(
    target: Callable[[Any], np.ndarray], rot: Callable[[Any], np.ndarray], tol: float, rot_tol: float
) -> Callable[[Any], bool]:
    """`until`: the eef is within `tol` (m) of `target(env)` and `rot_tol` (rad) of `rot`."""

    def until(env: Any) -> bool:
        if np.linalg.norm(target(env) - eef_pos(env)) >= tol:
            return False
        return float(np.linalg.norm(rotation_error(quat_xyzw_to_mat(eef_quat(env)), rot(env)))) < rot_tol

    return until


def _at_rest(obj: str) -> Callable[[Any], bool]:
    """`until`: `obj` is not moving (some sampled layouts drop it from above its support)."""

    def until(env: Any) -> bool:
        joints = getattr(env.problem.get_object(obj), "joints", None) or []
        for joint in joints:
            qvel = np.asarray(env.sim.data.get_joint_qvel(joint))
            if np.linalg.norm(qvel[:3]) > 0.02:
                return False
        return True

    return until


def _stalled(target: Callable[[Any], np.ndarray], tol: float, steps: int = 3) -> Callable[[Any], bool]:
    """`until`: the eef is within `tol` of `target(env)` but has stopped getting closer (it moved
    less than 2 mm per step for `steps` steps), e.g. at the edge of the arm's reach."""
    state: dict[str, Any] = {"last": None, "n": 0}

    def until(env: Any) -> bool:
        p = eef_pos(env)
        last, state["last"] = state["last"], p
        slow = last is not None and np.linalg.norm(p - last) < 0.002
        near = np.linalg.norm(target(env) - p) < tol
        state["n"] = state["n"] + 1 if slow and near else 0
        return state["n"] >= steps

    return until


def _gripper_settled(min_steps: int = 4) -> Callable[[Any], bool]:
    """`until` for a closing gripper: true once the fingers stop moving (on the object or shut)."""
    state: dict[str, Any] = {"n": 0, "last": None}

    def until(env: Any) -> bool:
        w = gripper_opening(env)
        last, state["last"] = state["last"], w
        state["n"] += 1
        return state["n"] > min_steps and last is not None and abs(last - w) < 5e-4

    return until


def _grasp_plan(
    env: Any, obj: str, lo: np.ndarray, hi: np.ndarray, place: np.ndarray, *, crowded: bool = False
) -> dict[str, Any]:
    """Where (world eef point) and at which yaw to grasp `obj`; `top`: its highest point.

    Candidates are scored by how far the open gripper would have to be raised to clear everything
    else (less is better), then by a preference: small shifts from the object's center, rim points
    facing the robot, small wrist rotations from the current yaw. `crowded`: when no candidate is
    clear, also try every yaw at which the object fits the open hand (a flat box between tall
    neighbours is taken obliquely rather than from too high)."""
    obstacles = Obstacles([b for name in _others(env, {obj}) for b in geom_boxes(env, name)])
    top = float(hi[2])
    now = _eef_yaw(env)
    candidates: list[tuple[float, np.ndarray, float]] = []  # (yaw, eef point, preference: lower is better)
    if "bowl" in obj:
        # the rim wall: the fingers straddle it along a radius, the pads just below the rim
        mid = (lo + hi) / 2
        radius = min(hi[0] - lo[0], hi[1] - lo[1]) / 2 - 0.006
        for deg in range(0, 360, 15):
            a = np.deg2rad(deg)
            u = np.array([np.cos(a), np.sin(a)])
            for inset in (0.0, 0.006):  # the eef a little inside the wall brings the outer finger in
                r = radius - inset
                p = np.array([mid[0] + u[0] * r, mid[1] + u[1] * r, top - BOWL_GRASP_DEPTH])
                candidates.append((a - np.pi / 2, p, inset + 0.001 * u[0]))
    else:
        pts = collision_points(env, obj)[:, :2]
        z = max(lo[2] + MIN_EEF_ABOVE_BOTTOM, min(top - TOP_GRASP_DEPTH, (lo[2] + top) / 2))
        center = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, z])
        widths = {}
        oblique: list[tuple[float, float]] = []  # (deg, width): every yaw fitting the hand, for `crowded`
        for deg in np.arange(0.0, 180.0, 7.5):
            yaw = np.deg2rad(deg)
            finger_axis = np.array([-np.sin(yaw), np.cos(yaw)])
            proj = pts @ finger_axis
            widths[deg] = float(proj.max() - proj.min())
        narrowest = min(widths.values())
        for deg, width in widths.items():
            if crowded and width <= MAX_WIDTH - CROWDED_WIDTH_MARGIN:
                oblique.append((deg, width))
            if width > min(MAX_WIDTH, narrowest + 0.008):
                continue
            yaw = np.deg2rad(deg)
            long_axis = np.array([np.cos(yaw), np.sin(yaw)])  # the gripper's x: along the object
            proj = pts @ long_axis
            length = float(proj.max() - proj.min())
            max_shift = max(0.0, min(0.025, length / 2 - 0.02))
            for shift in (0.0, 0.01, -0.01, 0.02, -0.02):
                if abs(shift) <= max_shift + 1e-9:
                    p = center.copy()
                    p[:2] += shift * long_axis
                    pref = abs(shift) + 0.3 * (width - narrowest) + 0.005 * _half_turn(yaw - now)
                    candidates.append((yaw, p, pref))
    if not candidates:  # wider than the open hand everywhere (mugs, moka pots): grasp a thin part
        candidates = _straddle_candidates(env, obj, top, now)
    best = _least_raise(obstacles, candidates, None)
    if crowded and best is not None and best[3] > 0 and "bowl" not in obj:
        # oblique yaws, and the fingers as near an end of the object as still holds it
        oblique_candidates = []
        for deg, width in oblique:
            yaw = np.deg2rad(deg)
            long_axis = np.array([np.cos(yaw), np.sin(yaw)])
            proj = pts @ long_axis
            reach = max(0.0, float(proj.max() - proj.min()) / 2 - CROWDED_END_MARGIN)
            for shift in np.arange(-reach, reach + 1e-9, 0.004):
                p = center.copy()
                p[:2] += shift * long_axis
                pref = 1.0 + abs(shift) + 0.3 * (width - narrowest) + 0.005 * _half_turn(yaw - now)
                oblique_candidates.append((yaw, p, pref))
        best = _least_raise(obstacles, oblique_candidates, best)
    if best is None:
        raise RuntimeError(f"{env.task}: no grasp found for {obj}")
    _, yaw, point, need = best
    point = point.copy()
    if need > 0:  # nothing fully clear: grasp higher, but still below the top
        point[2] = min(point[2] + need + 0.003, top - 0.012)
    yaw = _choose_yaw(env, yaw, [point, place])
    return {"yaw": yaw, "point": point, "top": top}


def _least_raise(
    obstacles: Obstacles, candidates: list[tuple[float, np.ndarray, float]], best: tuple | None
) -> tuple | None:
    """The best of `best` and the (yaw, eef point, preference) `candidates`: least raise of the open hand
    over `obstacles` (to the mm), then the lower preference; as (key, yaw, point, raise)."""
    for yaw, p, pref in candidates:
        need = _hand_raise(obstacles, p, yaw)
        key = (round(need, 3), pref)
        if best is None or key < best[0]:
            best = (key, yaw, p, need)
    return best


# The space between the open fingers (eef frame, as PALM/FINGERS): what the closing fingers take.
GAP = (np.array([-0.012, -0.034, -0.011]), np.array([0.012, 0.034, 0.035]))
CROWDED_WIDTH_MARGIN = 0.008  # m the open fingers keep beside an obliquely taken object
CROWDED_END_MARGIN = 0.014  # m between the fingers' center line and the end of the object they hold
STRADDLE_STEP = 0.005  # m between the candidate points of a straddle grasp
STRADDLE_PALM_CLEARANCE = 0.004  # m between the palm and the object's top
STRADDLE_MAX_PART = 0.03  # m: the widest part (along the closing direction) a straddle grasp takes


def _overlap_grid(boxes: Obstacles, points: np.ndarray, rot: np.ndarray, half: np.ndarray) -> np.ndarray:
    """(M, N) mask: the box (points[m], rot, half) overlaps box n of `boxes` (separating axes over the
    15 candidate axes), for many centers of one box shape at once; `Obstacles.overlapping` is M = 1."""
    n = len(boxes.center)
    a_axes = np.broadcast_to(rot.T, (n, 3, 3))
    b_axes = np.transpose(boxes.rot, (0, 2, 1))
    cross = np.cross(a_axes[:, :, None, :], b_axes[:, None, :, :]).reshape(n, 9, 3)
    axes = np.concatenate([a_axes, b_axes, cross], axis=1)  # (n, 15, 3)
    norm = np.linalg.norm(axes, axis=2, keepdims=True)
    valid = norm[..., 0] > 1e-6
    axes = axes / np.maximum(norm, 1e-9)
    ra = np.einsum("nkj,j->nk", np.abs(axes @ rot), half)
    rb = np.einsum("nkj,nj->nk", np.abs(np.einsum("nki,nij->nkj", axes, boxes.rot)), boxes.half)
    proj_b = np.einsum("nki,ni->nk", axes, boxes.center)  # (n, 15)
    proj_p = np.einsum("nki,mi->mnk", axes, points)  # (m, n, 15)
    separated = (np.abs(proj_b[None] - proj_p) > (ra + rb)[None] + 1e-4) & valid[None]
    return ~separated.any(axis=2)


def _straddle_candidates(env: Any, obj: str, top: float, now: float) -> list[tuple[float, np.ndarray, float]]:
    """Top grasps of a thin part of `obj` (a mug's wall, a moka pot's handle), for objects too wide
    for the open hand: (yaw, eef point, preference) where the open fingers and the palm (just above
    the object's top) miss `obj` and the space between the fingers holds a part of it no wider than
    STRADDLE_MAX_PART along the closing direction.

    Preference (lower is better): the part centred between the fingers (the closing fingers then do
    not drag the object sideways), thin, near the object's body origin (less torque in the hand)."""
    own = Obstacles(geom_boxes(env, obj))
    if len(own.center) == 0:
        return []
    lo, hi = bounds(env, obj)
    origin = body_pos(env, obj)
    gx, gy = np.meshgrid(
        np.arange(lo[0], hi[0] + 1e-9, STRADDLE_STEP), np.arange(lo[1], hi[1] + 1e-9, STRADDLE_STEP)
    )
    z = top + STRADDLE_PALM_CLEARANCE - PALM[0][2]
    points = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], axis=1)  # (M, 3)
    out: list[tuple[float, np.ndarray, float]] = []
    for deg in range(0, 180, 15):
        yaw = np.deg2rad(deg)
        frame = _gripper_frame(yaw)
        axis = frame[:, 1]  # the direction the fingers close along
        free = np.ones(len(points), dtype=bool)
        for a, b in (PALM, *FINGERS):
            free &= ~_overlap_grid(own, points + frame @ ((a + b) / 2), frame, (b - a) / 2).any(axis=1)
        if not free.any():
            continue
        pts = points[free]
        held = _overlap_grid(own, pts + frame @ ((GAP[0] + GAP[1]) / 2), frame, (GAP[1] - GAP[0]) / 2)
        reach = np.einsum("nj,nj->n", np.abs(np.einsum("i,nij->nj", axis, own.rot)), own.half)  # (N,)
        c_proj = own.center @ axis  # (N,)
        for m in np.flatnonzero(held.any(axis=1)):
            h = held[m]
            rel = c_proj[h] - float(pts[m] @ axis)
            lo_part, hi_part = float((rel - reach[h]).min()), float((rel + reach[h]).max())
            width = hi_part - lo_part
            if width > STRADDLE_MAX_PART:
                continue
            pref = (
                abs(lo_part + hi_part) / 2
                + 0.3 * width
                + 0.2 * float(np.linalg.norm(pts[m, :2] - origin[:2]))
                + 0.005 * _half_turn(yaw - now)
            )
            out.append((yaw, pts[m].copy(), pref))
    return out


def _half_turn(a: float) -> float:
    """|a| modulo a half turn (the gripper is symmetric): the smallest wrist rotation to yaw a."""
    a = float(a % np.pi)
    return min(a, np.pi - a)


# -- goals -------------------------------------------------------------------------------------


def support_point(env: Any, obj: str, point: np.ndarray, radius: float = 0.02) -> np.ndarray:
    """`point`'s xy at the height of the highest surface (other than `obj`) within `radius` of it."""
    p = np.asarray(point, dtype=np.float64).copy()
    top = _scene_top(env, {obj}, p[:2] - radius, p[:2] + radius)
    if np.isfinite(top):
        p[2] = top
    return p


def place_target_for(env: Any, obj: str, target: str) -> tuple[Callable[[Any], np.ndarray], float] | None:
    """(place_target, release_height) for putting `obj` on/in `target`, a goal's second argument: an
    object (its body origin's xy) or a BDDL site/region (its center's xy), at the height of the
    surface found there; None if `target` is neither."""
    problem = env.problem
    if target in problem.object_sites_dict:

        def site_target(e: Any) -> np.ndarray:
            return support_point(e, obj, site_pos(e, target))

        return site_target, 0.02
    if target in problem.obj_body_id:

        def object_target(e: Any) -> np.ndarray:
            return support_point(e, obj, body_pos(e, target))

        return object_target, 0.015
    return None


def slot_target(
    env: Any, obj: str, region: str, sharing: list[str], *, contain: bool = True
) -> Callable[[Any], np.ndarray]:
    """A place target inside the BDDL site `region` that several goal objects (`sharing`, `obj` among
    them) go into (both cans into the basket, both moka pots on the stove): the spot is chosen when the
    skill first asks for it and then follows the region. The first object goes to the corner nearest
    to where it is now (leaving the rest of the region free); a later one to the spot farthest from the
    objects of `sharing` already inside. `contain`: the object's whole footprint stays inside the
    region (`In`: a basket's walls); else only its origin, SLOT_EDGE from the border (`On` a stove)."""
    state: dict[str, np.ndarray] = {}

    def choose(e: Any) -> np.ndarray:
        center, mat = site_pos(e, region), e.sim.data.get_site_xmat(region)
        half = np.abs(mat @ np.asarray(e.problem.object_sites_dict[region].size, dtype=np.float64))[:2]
        lo, hi = bounds(e, obj)
        origin = body_pos(e, obj)
        below, above = origin[:2] - lo[:2], hi[:2] - origin[:2]  # footprint around the origin
        if contain:
            lo_ok = center[:2] - half + below + SLOT_MARGIN
            hi_ok = center[:2] + half - above - SLOT_MARGIN
        else:
            lo_ok, hi_ok = center[:2] - half + SLOT_EDGE, center[:2] + half - SLOT_EDGE
        lo_ok, hi_ok = np.minimum(lo_ok, center[:2]), np.maximum(hi_ok, center[:2])
        gx, gy = np.meshgrid(np.linspace(lo_ok[0], hi_ok[0], 9), np.linspace(lo_ok[1], hi_ok[1], 9))
        cands = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (M, 2) origin positions
        inside = []
        for other in sharing:
            if other == obj:
                continue
            p = body_pos(e, other)
            if np.all(np.abs(p[:2] - center[:2]) < half):
                olo, ohi = bounds(e, other)
                inside.append((olo[:2], ohi[:2]))
        if inside:
            gap = np.full(len(cands), np.inf)
            for olo, ohi in inside:  # distance between the footprint at each candidate and `other`
                d = np.maximum(olo - (cands + above), (cands - below) - ohi)
                gap = np.minimum(
                    gap,
                    np.where(np.any(d > 0, axis=1), np.linalg.norm(np.maximum(d, 0), axis=1), d.max(axis=1)),
                )
            key = -np.minimum(gap, 0.03) + 0.01 * np.linalg.norm(cands - center[:2], axis=1)
        else:
            key = -np.linalg.norm(cands - center[:2], axis=1) + 0.1 * np.linalg.norm(
                cands - origin[:2], axis=1
            )
        best = cands[int(np.argmin(key))]
        return mat.T @ np.array([best[0] - center[0], best[1] - center[1], 0.0])  # in the site's frame

    def target(e: Any) -> np.ndarray:
        if "offset" not in state:
            state["offset"] = choose(e)
        p = site_pos(e, region) + e.sim.data.get_site_xmat(region) @ state["offset"]
        return support_point(e, obj, p)

    return target


def skill_for(env: Any, predicate: list[str]) -> list[Phase] | None:
    """Phases that achieve `predicate`, or None if this module has no skill for it."""
    if len(predicate) != 3 or predicate[0] not in ("on", "in"):
        return None
    _, obj, target = predicate
    if obj not in env.problem.objects_dict:
        return None
    found = place_target_for(env, obj, target)
    if found is None:
        return None
    place_target, release_height = found
    goal = ordered(goal_predicates(env))
    sharing = [p[1] for p in goal if len(p) == 3 and p[0] in ("in", "on") and p[2] == target]
    if len(sharing) > 1 and target in env.problem.object_sites_dict:
        place_target = slot_target(env, obj, target, sharing, contain=predicate[0] == "in")
    # after another skill of the same goal the hand may be low among things (in a basket)
    # several goals (LIBERO-10's long tasks): scenes are more crowded, the hand starts where the last
    # skill left it; single-goal suites keep the plain skill
    several = len(goal) > 1
    return pick_and_place(
        env,
        obj,
        place_target,
        release_height=release_height,
        clear_start=several and goal[0] != predicate,
        crowded=several,
    )
