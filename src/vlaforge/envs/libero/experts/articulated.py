"""Skills for articulated fixtures and pushing: `(Open drawer_region)`, `(Close ...)`, `(Turnon stove)`,
pushing an object into a table region, and putting an object into a drawer (open it first).

Drawers (slide joints, e.g. `wooden_cabinet_1_middle_level`): the gripper turns to point into the
cabinet with its fingers closing vertically, grasps the handle bar (the drawer's collision geom that
sticks out farthest along the opening direction) and pulls along the joint axis until the joint is
past LIBERO's open threshold; then it lets go and backs off. Closing pushes the drawer front with the
closed fingers.

Stove knobs (hinge joint about the vertical): the closed fingers come down beside the knob's lever
and push it tangentially (the direction that increases the joint) until it is on.

Pushing (`On plate_1 <table region>`): the closed gripper goes down behind the plate on the side
away from the region and pushes it, steering along the plate-to-region line, low over the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.envs.libero.experts import _articulated_geometry as geo
from vlaforge.envs.libero.experts.base import CLOSE, OPEN, Phase, body_pos, eef_pos

# Drawer
DRAWER_OPEN_QPOS = -0.145  # LIBERO: open when the slide joint < -0.14 (range [-0.16, 0.01])
DRAWER_TARGET_QPOS = -0.152
DRAWER_CLOSED_QPOS = 0.0  # LIBERO: closed when > 0.0 (close range [0, 0.005])
PRE_GRASP = 0.09  # m in front of the handle before going in
GRASP_DEPTH = 0.002  # m behind the handle's center for the grip site
# Knob
KNOB_ON_QPOS = 0.5  # LIBERO FlatStove: on when the knob joint >= 0.5 rad
# Push
PUSH_CLEARANCE = 0.03  # m between the plate's rim and the fingers before pushing


def skill_for(env: Any, predicate: list[str]) -> list[Phase] | None:
    """Phases that achieve `predicate`, or None if this module has no skill for it."""
    kind, args = predicate[0], predicate[1:]
    if kind in ("open", "close") and len(args) == 1:
        joints = geo.joints_of(env, args[0])
        if len(joints) == 1 and geo.joint_type(env, geo.joint_id(env, joints[0])) == geo.SLIDE:
            jid = geo.joint_id(env, joints[0])
            return drawer_open(env, jid) if kind == "open" else drawer_close(env, jid)
        return None
    if kind == "turnon" and len(args) == 1:
        joints = geo.joints_of(env, args[0])
        if len(joints) == 1 and geo.joint_type(env, geo.joint_id(env, joints[0])) == geo.HINGE:
            return knob_turn_on(env, geo.joint_id(env, joints[0]))
        return None
    if kind == "in" and len(args) == 2:
        joints = geo.joints_of(env, args[1])
        if len(joints) == 1 and geo.joint_type(env, geo.joint_id(env, joints[0])) == geo.SLIDE:
            jid = geo.joint_id(env, joints[0])
            return drawer_open(env, jid) + place_in_drawer(env, args[0], args[1])
        return None
    if kind == "on" and len(args) == 2 and args[0].startswith("plate") and _is_table_region(env, args[1]):
        return push_to_region(env, args[0], args[1])
    return None


def _is_table_region(env: Any, name: str) -> bool:
    site = env.problem.object_sites_dict.get(name)
    return site is not None and type(site).__name__ == "TargetZone"


# -- drawers -----------------------------------------------------------------------------------


class Drawer:
    """Live geometry of one drawer: its slide joint, opening direction and handle."""

    def __init__(self, env: Any, jid: int) -> None:
        import mujoco

        self.jid = jid
        model = env.sim.model._model
        self.body = int(model.jnt_bodyid[jid])
        self.geoms = geo.collision_geoms(env, geo.subtree_bodies(env, self.body))
        # opening decreases the joint (LIBERO's open range is negative)
        self.open_dir = -geo.joint_axis(env, jid)
        centers = np.array([geo.geom_center(env, g) for g in self.geoms])
        proj = centers @ self.open_dir
        self.handle_geom = self.geoms[int(np.argmax(proj))]
        self.name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, jid)

    def qpos(self, env: Any) -> float:
        return geo.joint_qpos(env, self.jid)

    def handle(self, env: Any) -> np.ndarray:
        return geo.geom_center(env, self.handle_geom)

    def grasp_rotation(self) -> np.ndarray:
        return geo.gripper_frame(-self.open_dir, np.array([0.0, 0.0, 1.0]))


def _rotation_close(env: Any, rotation: np.ndarray, tol: float) -> bool:
    from vlaforge.envs.libero.experts.base import eef_quat, quat_xyzw_to_mat, rotation_error

    return float(np.linalg.norm(rotation_error(quat_xyzw_to_mat(eef_quat(env)), rotation))) < tol


def _reached(target_fn: Any, rotation: np.ndarray | None, pos_tol: float, rot_tol: float = 0.08) -> Any:
    def until(env: Any) -> bool:
        if np.linalg.norm(target_fn(env) - eef_pos(env)) > pos_tol:
            return False
        return rotation is None or _rotation_close(env, rotation, rot_tol)

    return until


def drawer_open(env: Any, jid: int) -> list[Phase]:
    d = Drawer(env, jid)
    rot = d.grasp_rotation()
    fixed_rot = lambda e: rot  # noqa: E731

    def pre(e: Any) -> np.ndarray:
        return d.handle(e) + d.open_dir * PRE_GRASP

    def grasp(e: Any) -> np.ndarray:
        return d.handle(e) - d.open_dir * GRASP_DEPTH

    def pull(e: Any) -> np.ndarray:
        return d.handle(e) - d.open_dir * GRASP_DEPTH + d.open_dir * 0.05

    def back(e: Any) -> np.ndarray:
        return d.handle(e) + d.open_dir * 0.10 + np.array([0.0, 0.0, 0.04])

    return [
        Phase("drawer_pre", pre, OPEN, tol=0.0, until=_reached(pre, rot, 0.015), rotation=fixed_rot, timeout=100),
        Phase("drawer_in", grasp, OPEN, tol=0.006, rotation=fixed_rot, max_speed=0.6, timeout=40),
        Phase("drawer_grip", grasp, CLOSE, steps=8, rotation=fixed_rot),
        Phase("drawer_pull", pull, CLOSE, tol=0.0, until=lambda e: d.qpos(e) < DRAWER_TARGET_QPOS,
              rotation=fixed_rot, max_speed=0.6, timeout=80),  # fmt: skip
        Phase("drawer_release", None, OPEN, steps=6, rotation=fixed_rot),
        Phase("drawer_back", back, OPEN, tol=0.02, rotation=fixed_rot, timeout=40),
    ]


def drawer_close(env: Any, jid: int) -> list[Phase]:
    """Push the drawer front back in with the closed fingers pointing into the cabinet."""
    d = Drawer(env, jid)
    rot = d.grasp_rotation()
    fixed_rot = lambda e: rot  # noqa: E731
    up = np.array([0.0, 0.0, 0.0])

    def pre(e: Any) -> np.ndarray:
        return d.handle(e) + d.open_dir * 0.06 + up

    def push(e: Any) -> np.ndarray:
        return d.handle(e) - d.open_dir * 0.06 + up

    def back(e: Any) -> np.ndarray:
        return d.handle(e) + d.open_dir * 0.10

    return [
        Phase("close_pre", pre, CLOSE, tol=0.0, until=_reached(pre, rot, 0.015), rotation=fixed_rot, timeout=100),
        Phase("close_push", push, CLOSE, tol=0.0, until=lambda e: d.qpos(e) > DRAWER_CLOSED_QPOS + 0.002,
              rotation=fixed_rot, max_speed=0.6, timeout=80),  # fmt: skip
        Phase("close_back", back, CLOSE, tol=0.02, rotation=fixed_rot, timeout=30),
    ]


def place_in_drawer(env: Any, obj: str, region: str) -> list[Phase]:
    """Grasp `obj` (a bowl: by its rim) and lower it into the open drawer `region`."""
    down = geo.down_frame()
    fixed_rot = lambda e: down  # noqa: E731
    bodies = geo.subtree_bodies(env, env.problem.obj_body_id[obj])

    def rim(e: Any) -> np.ndarray:
        lo, hi = geo.bodies_bounds(e, bodies)
        c = body_pos(e, obj)
        # grasp the rim on the side toward the robot (-x), fingers across the rim wall
        return np.array([lo[0] + 0.015, c[1], hi[2] - 0.015])

    def above_rim(e: Any) -> np.ndarray:
        return rim(e) + np.array([0.0, 0.0, 0.10])

    lift = latched(lambda e: np.array([*eef_pos(e)[:2], 1.25]))
    retreat = latched(lambda e: eef_pos(e) + [0.0, 0.0, 0.08])

    def site(e: Any) -> np.ndarray:
        return geo_site(e, region)

    def offset(e: Any) -> np.ndarray:
        return rim(e) - body_pos(e, obj)

    held: dict[str, np.ndarray] = {}

    def above_drawer(e: Any) -> np.ndarray:
        if "off" not in held:
            held["off"] = offset(e)
        s = site(e)
        return np.array([s[0] + held["off"][0], s[1] + held["off"][1], 1.25])

    drawer_bodies = geo.subtree_bodies(env, Drawer(env, geo.joint_id(env, geo.joints_of(env, region)[0])).body)

    def lower(e: Any) -> np.ndarray:
        s = site(e)
        lo, _ = geo.bodies_bounds(e, drawer_bodies)
        return np.array([s[0] + held["off"][0], s[1] + held["off"][1], lo[2] + 0.06])

    return [
        Phase("bowl_above", above_rim, OPEN, tol=0.015, rotation=fixed_rot, timeout=80),
        Phase("bowl_down", rim, OPEN, tol=0.008, rotation=fixed_rot, max_speed=0.6, timeout=40),
        Phase("bowl_grip", None, CLOSE, steps=10, rotation=fixed_rot),
        Phase("bowl_lift", lift, CLOSE, tol=0.02, rotation=fixed_rot, timeout=40),
        Phase("bowl_carry", above_drawer, CLOSE, tol=0.015, rotation=fixed_rot, timeout=80),
        Phase("bowl_lower", lower, CLOSE, tol=0.01, rotation=fixed_rot, max_speed=0.5, timeout=40),
        Phase("bowl_release", None, OPEN, steps=8, rotation=fixed_rot),
        Phase("bowl_retreat", retreat, OPEN, tol=0.02, rotation=fixed_rot, timeout=30),
    ]


def latched(fn: Any) -> Any:
    """A target computed once, the first time the phase asks (the plan is rebuilt at every reset)."""
    memo: list[np.ndarray] = []

    def target(env: Any) -> np.ndarray:
        if not memo:
            memo.append(np.asarray(fn(env), dtype=np.float64))
        return memo[0]

    return target


def geo_site(env: Any, name: str) -> np.ndarray:
    from vlaforge.envs.libero.experts.base import site_pos

    return site_pos(env, name)


# -- stove knob --------------------------------------------------------------------------------


def knob_turn_on(env: Any, jid: int) -> list[Phase]:
    model = env.sim.model._model
    body = int(model.jnt_bodyid[jid])
    geoms = geo.collision_geoms(env, geo.subtree_bodies(env, body))
    axis = geo.joint_axis(env, jid)
    anchor = geo.joint_anchor(env, jid)
    # the lever: the tall part of the knob; push on the side where it reaches farthest from the axis
    pts = [geo.geom_world_corners(env, g) for g in geoms]
    tops = np.array([p[:, 2].max() for p in pts])
    top = float(tops.max())
    tall = np.concatenate([p for p, t in zip(pts, tops) if t > top - 0.03])
    radial = tall - anchor
    radial[:, 2] = 0
    r_hat = geo.horizontal(radial[int(np.argmax(np.linalg.norm(radial, axis=1)))])
    reach = float(np.max(radial @ r_hat))
    tangent = geo.horizontal(np.cross(axis, r_hat))  # motion of that side of the lever for +qpos
    lever_r = reach - 0.013  # contact radius: the finger block (~2.2 cm wide) ends at the lever's tip
    behind = 0.022  # finger block half thickness + half the lever's width
    contact_z = top - 0.022  # grip site height (fingertips ~1 cm lower)
    down = geo.down_frame()  # as at reset (turning the hand about z runs the wrist into its limit)
    fixed_rot = lambda e: down  # noqa: E731
    q0 = geo.joint_qpos(env, jid)
    sign = 1.0 if axis[2] >= 0 else -1.0  # +qpos turns counter-clockwise seen from above when axis is +z

    def lever_point(theta: float, back: float) -> np.ndarray:
        c, s_ = np.cos(sign * theta), np.sin(sign * theta)
        rot = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])
        p = anchor + rot @ (r_hat * lever_r) - (rot @ tangent) * back
        p[2] = contact_z
        return p

    start = lever_point(0.0, behind + 0.025)

    def above(e: Any) -> np.ndarray:
        return start + np.array([0.0, 0.0, 0.08])

    def push(e: Any) -> np.ndarray:
        theta = geo.joint_qpos(e, jid) - q0
        return lever_point(min(theta + 0.4, KNOB_ON_QPOS + 0.5), behind)

    return [
        Phase("knob_above", above, CLOSE, tol=0.015, rotation=fixed_rot, timeout=100),
        Phase("knob_down", lambda e: start, CLOSE, tol=0.008, rotation=fixed_rot, max_speed=0.6, timeout=40),
        Phase("knob_push", push, CLOSE, tol=0.0, until=lambda e: geo.joint_qpos(e, jid) > KNOB_ON_QPOS + 0.15,
              rotation=fixed_rot, gain=2.0, max_speed=0.5, timeout=80),  # fmt: skip
        Phase("knob_up", latched(lambda e: eef_pos(e) + [0, 0, 0.08]), CLOSE, tol=0.02,
              rotation=fixed_rot, timeout=30),  # fmt: skip
    ]


# -- pushing -----------------------------------------------------------------------------------


def push_to_region(env: Any, obj: str, region: str) -> list[Phase]:
    down = geo.down_frame()
    fixed_rot = lambda e: down  # noqa: E731
    bodies = geo.subtree_bodies(env, env.problem.obj_body_id[obj])
    lo, hi = geo.bodies_bounds(env, bodies)
    radius = float(max(hi[0] - lo[0], hi[1] - lo[1]) / 2)
    table_z = float(lo[2])
    push_z = table_z + 0.02  # grip site; the fingertips are ~1 cm lower

    def goal(e: Any) -> np.ndarray:
        return geo_site(e, region)

    def direction(e: Any) -> np.ndarray:
        return geo.horizontal(goal(e) - body_pos(e, obj))

    plan: dict[str, np.ndarray] = {}

    def behind(e: Any) -> np.ndarray:
        if "start" not in plan:
            c = body_pos(e, obj)
            plan["start"] = c - direction(e) * (radius + PUSH_CLEARANCE)
        return np.array([plan["start"][0], plan["start"][1], push_z])

    def above_behind(e: Any) -> np.ndarray:
        return behind(e) + np.array([0.0, 0.0, 0.08])

    def push(e: Any) -> np.ndarray:
        c = body_pos(e, obj)
        u = direction(e)
        contact = c - u * (radius + 0.005)
        p = contact + u * 0.04
        p[2] = push_z
        return p

    def done(e: Any) -> bool:
        return float(np.linalg.norm((goal(e) - body_pos(e, obj))[:2])) < 0.01

    return [
        Phase("push_above", above_behind, CLOSE, tol=0.015, rotation=fixed_rot, timeout=100),
        Phase("push_down", behind, CLOSE, tol=0.008, rotation=fixed_rot, max_speed=0.6, timeout=40),
        Phase("push", push, CLOSE, tol=0.0, until=done, rotation=fixed_rot, max_speed=0.5, timeout=150),
        Phase("push_up", latched(lambda e: eef_pos(e) + [0, 0, 0.08]), CLOSE, tol=0.02, rotation=fixed_rot, timeout=30),
    ]
