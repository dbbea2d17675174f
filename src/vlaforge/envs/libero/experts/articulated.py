"""Skills for articulated fixtures and pushing: `(Open drawer_region)`, `(Close ...)`, `(Turnon stove)`,
pushing an object into a table region, and putting an object into a drawer (open it first).

Drawers (slide joints, e.g. `wooden_cabinet_1_middle_level`): the gripper turns to point into the
cabinet with its fingers closing vertically, grasps the handle bar (the drawer's collision geom that
sticks out farthest along the opening direction) and pulls along the joint axis until the joint is
past LIBERO's open threshold; then it lets go and backs off. Closing pushes the drawer front with the
closed fingers.

Stove knobs (hinge joint about the vertical): the closed fingers come down beside the knob's lever
and push it tangentially (the direction that increases the joint) until it is on.

Hinged doors (`(Close microwave_1)`, vertical hinge): the hand comes down beside the door's outer face
near its free edge and pushes it shut along its arc.

Pushing (`On plate_1 <table region>`): the closed gripper goes down behind the plate on the side
away from the region and pushes it, steering along the plate-to-region line, low over the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import vlaforge.envs.libero.experts._articulated_geometry as geo
from vlaforge.envs.libero.experts.base import CLOSE, OPEN, Phase, body_pos, eef_pos

# Drawer
DRAWER_OPEN_QPOS = -0.145  # LIBERO: open when the slide joint < -0.14 (range [-0.16, 0.01])
DRAWER_TARGET_QPOS = -0.152
DRAWER_CLOSED_QPOS = 0.0  # LIBERO: closed when > 0.0 (close range [0, 0.005])
PRE_GRASP = 0.09  # m in front of the handle before going in
GRASP_DEPTH = 0.0  # m behind the handle's center for the grip site (the pads reach ~5 mm past it)
# Knob
KNOB_ON_QPOS = 0.5  # LIBERO FlatStove: on when the knob joint >= 0.5 rad
# Push
PUSH_REACH = 0.79  # m from the robot base (xy) that the pushing finger may go to at table height


def skill_for(env: Any, predicate: list[str]) -> list[Phase] | None:
    """Phases that achieve `predicate`, or None if this module has no skill for it."""
    kind, args = predicate[0], predicate[1:]
    if kind in ("open", "close") and len(args) == 1:
        joints = geo.joints_of(env, args[0])
        if len(joints) == 1 and geo.joint_type(env, geo.joint_id(env, joints[0])) == geo.SLIDE:
            jid = geo.joint_id(env, joints[0])
            return drawer_open(env, jid) if kind == "open" else drawer_close(env, jid)
        if (
            kind == "close"
            and len(joints) == 1
            and geo.joint_type(env, geo.joint_id(env, joints[0])) == geo.HINGE
        ):
            return door_close(env, geo.joint_id(env, joints[0]))
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
            return drawer_open(env, jid) + place_in_drawer(env, *args)
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

    def near(e: Any) -> np.ndarray:
        return grasp(e) + d.open_dir * 0.02

    def pull(e: Any) -> np.ndarray:
        return d.handle(e) - d.open_dir * GRASP_DEPTH + d.open_dir * 0.05

    def back(e: Any) -> np.ndarray:
        return d.handle(e) + d.open_dir * 0.10 + np.array([0.0, 0.0, 0.04])

    def opened(e: Any) -> bool:
        return d.qpos(e) < DRAWER_TARGET_QPOS

    def lost(e: Any) -> bool:  # the handle slipped out of the fingers
        return bool(np.linalg.norm(grasp(e) - eef_pos(e)) > 0.03)

    def attempt(tag: str, skip: Any) -> list[Phase]:
        def either(cond: Any) -> Any:
            return lambda e: skip(e) or cond(e)

        return [
            Phase(
                f"drawer_pre{tag}",
                pre,
                OPEN,
                tol=0.0,
                until=either(_reached(pre, rot, 0.015)),
                rotation=fixed_rot,
                timeout=100,
            ),  # fmt: skip
            Phase(
                f"drawer_in{tag}",
                near,
                OPEN,
                tol=0.0,
                until=either(_reached(near, None, 0.006)),
                rotation=fixed_rot,
                max_speed=0.6,
                timeout=40,
            ),  # fmt: skip
            Phase(
                f"drawer_in_slow{tag}",
                grasp,
                OPEN,
                tol=0.0,
                until=either(_reached(grasp, None, 0.004)),
                rotation=fixed_rot,
                max_speed=0.25,
                timeout=20,
            ),  # fmt: skip
            Phase(f"drawer_grip{tag}", grasp, CLOSE, steps=8, until=skip, rotation=fixed_rot),
            Phase(
                f"drawer_pull{tag}",
                pull,
                CLOSE,
                tol=0.0,
                until=lambda e: opened(e) or lost(e),
                rotation=fixed_rot,
                max_speed=0.7,
                timeout=80,
            ),  # fmt: skip
        ]

    return [
        *attempt("", lambda e: False),
        Phase("drawer_release", None, OPEN, steps=6, until=opened, rotation=fixed_rot),
        *attempt("_retry", opened),  # skipped when the drawer is open
        Phase("drawer_release2", None, OPEN, steps=6, rotation=fixed_rot),
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
        Phase(
            "close_pre", pre, CLOSE, tol=0.0, until=_reached(pre, rot, 0.015), rotation=fixed_rot, timeout=100
        ),
        Phase(
            "close_push",
            push,
            CLOSE,
            tol=0.0,
            until=lambda e: d.qpos(e) > DRAWER_CLOSED_QPOS + 0.002,
            rotation=fixed_rot,
            max_speed=0.6,
            timeout=80,
        ),  # fmt: skip
        Phase("close_back", back, CLOSE, tol=0.02, rotation=fixed_rot, timeout=30),
    ]


def place_in_drawer(env: Any, obj: str, region: str) -> list[Phase]:
    """After `drawer_open`: turn the hand back to pointing down in front of the open drawer, then (planned
    when it starts, `deferred`) pick `obj` and put it on the drawer's floor under the region's center
    (`bowl_into_drawer`)."""
    d = Drawer(env, geo.joint_id(env, geo.joints_of(env, region)[0]))
    # the floor: the drawer geom with the largest horizontal footprint
    footprints = []
    for g in d.geoms:
        pts = geo.geom_world_corners(env, g)
        ext = pts.max(0) - pts.min(0)
        footprints.append((float(ext[0] * ext[1]), g))
    floor_geom = max(footprints)[1]
    down = geo.down_frame()

    def target(e: Any) -> np.ndarray:
        s_ = geo_site(e, region)
        return np.array([s_[0], s_[1], float(geo.geom_world_corners(e, floor_geom)[:, 2].max())])

    def clear(e: Any) -> np.ndarray:
        return d.handle(e) + d.open_dir * 0.12 + np.array([0.0, 0.0, 0.10])

    return [
        Phase(
            "drawer_clear",
            clear,
            OPEN,
            tol=0.0,
            until=_reached(clear, down, 0.04, 0.3),
            rotation=lambda e: down,
            timeout=40,
        ),  # fmt: skip
        *deferred(env, lambda e: bowl_into_drawer(e, obj, target)),
    ]


# -- picking from under the open drawer ----------------------------------------------------------

COLUMN = 0.4  # m above the entry point that the open hand's vertical approach must find free
ESCAPE_MARGIN = 0.015  # m between the carried bowl and what overhangs it after sliding out
SIDE_MARGIN = 0.004  # m the sliding bowl keeps from what stands beside it (unless closer already)
DRAWER_CLEARANCE = 0.03  # m between the carried object's bottom and what it passes over
RIM_DEPTH = 0.024  # eef below the bowl's rim
SKEWS = (0, 15, -15, 30, -30, 45, -45)  # degrees between the finger axis and the rim's radius
HELD_SLACK = np.array([0.07, 0.07, 0.03])  # m the bowl may swing in the hand and still be followed
SLIDE_LIFT = 0.006  # m the bowl is raised while it slides out


def _box_xy(obstacles: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis-aligned xy bounds (lo, hi) and bottom z of each obstacle box."""
    ext = np.einsum("nij,nj->ni", np.abs(obstacles.rot), obstacles.half)
    lo, hi = obstacles.center - ext, obstacles.center + ext
    return lo[:, :2], hi[:, :2], lo[:, 2]


def _disk_gap(c: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance between the disk (c, r) and each xy box [lo, hi] (negative: overlap)."""
    d = np.maximum(lo - c, c - hi)
    outside = np.linalg.norm(np.maximum(d, 0.0), axis=1)
    return np.where(np.any(d > 0, axis=1), outside, d.max(axis=1)) - r


def plan_escape(
    c: np.ndarray, r: float, over: tuple[np.ndarray, np.ndarray], beside: tuple[np.ndarray, np.ndarray]
) -> list[np.ndarray]:
    """Horizontal shifts (xy), shortest first, that take the disk (c, r) ESCAPE_MARGIN away from every
    box of `over` (what overhangs it) without sliding into the boxes of `beside` (closer than
    SIDE_MARGIN, or than now if closer already); [zero] when nothing overhangs it."""
    if len(over[0]) == 0 or _disk_gap(c, r, *over).min() >= ESCAPE_MARGIN:
        return [np.zeros(2)]
    g0 = _disk_gap(c, r, *beside)
    found: list[tuple[float, int, np.ndarray]] = []
    for k, deg in enumerate(range(0, 360, 10)):
        u = np.array([np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))])
        for dist in np.arange(0.01, 0.121, 0.005):
            if _disk_gap(c + u * dist, r, *over).min() < ESCAPE_MARGIN:
                continue
            ok = True
            for t in np.linspace(0.0, dist, 8)[1:]:
                if len(g0) and (_disk_gap(c + u * t, r, *beside) < np.minimum(g0, SIDE_MARGIN)).any():
                    ok = False
            if ok:
                found.append((float(dist), k, u * dist))
            break
    return [v for _, _, v in sorted(found, key=lambda f: f[:2])]


def bowl_into_drawer(env: Any, obj: str, place_target: Any) -> list[Phase]:
    """Pick `obj` (a bowl, by its rim) from where an open drawer may overhang it and put it into the
    drawer. The open hand comes down where its vertical column is free (beside the bowl, shifted by
    the bowl's escape: the shortest slide that takes it out from under the drawer), moves in low to a
    rim point, grasps, slides the bowl out by the same shift, lifts it above the drawer, carries it
    above `place_target` (the drawer floor under the region's center) and lets go just above it."""
    from vlaforge.envs.libero.experts.base import yaw_rotation
    from vlaforge.envs.libero.experts.pick_place import (
        DOWN,
        FINGERS,
        PALM,
        Obstacles,
        _choose_yaw,
        _eef_yaw,
        _gripper_frame,
        _gripper_settled,
        _half_turn,
        _hand_raise,
        _others,
        bounds,
        geom_boxes,
    )

    obstacles = Obstacles([b for name in _others(env, {obj}) for b in geom_boxes(env, name)])
    lo, hi = bounds(env, obj)
    start = body_pos(env, obj)
    place = np.asarray(place_target(env), dtype=np.float64)
    top = float(hi[2])
    now = _eef_yaw(env)
    mid = (lo + hi) / 2
    radius = min(hi[0] - lo[0], hi[1] - lo[1]) / 2

    olo, ohi, obot = _box_xy(obstacles)
    above = obot > top + 0.005
    beside = (obot < top + 0.02) & (obot > lo[2] + 0.003)
    escapes = plan_escape(mid[:2], radius, (olo[above], ohi[above]), (olo[beside], ohi[beside]))[:6]

    def column_free(p: np.ndarray, yaw: float) -> bool:
        frame = _gripper_frame(yaw)
        for lo_, hi_ in (PALM, *FINGERS):
            hi_ = hi_ + np.array([0.0, 0.0, COLUMN])
            if obstacles.overlapping(p + frame @ ((lo_ + hi_) / 2), frame, (hi_ - lo_) / 2).any():
                return False
        return True

    shift = np.array([*escapes[0], 0.0]) if escapes else np.zeros(3)
    best = None
    for deg in range(0, 360, 15):
        a = np.deg2rad(deg)
        u = np.array([np.cos(a), np.sin(a)])
        for inset in (0.0, 0.006):
            r = radius - 0.006 - inset
            p = np.array([mid[0] + u[0] * r, mid[1] + u[1] * r, top - RIM_DEPTH])
            for skew in SKEWS:  # the fingers may pinch the wall obliquely where the palm must turn away
                yaw = a - np.pi / 2 + np.deg2rad(skew)
                key = (
                    0 if column_free(p, yaw) else 1,
                    round(_hand_raise(obstacles, p, yaw), 3),
                    abs(skew),
                    inset + 0.001 * u[0] + 0.002 * _half_turn(yaw - now),
                )
                if best is None or key < best[0]:
                    best = (key, yaw, p)
    assert best is not None
    _, yaw, point = best
    yaw = _choose_yaw(env, yaw, [point, place])
    rot = yaw_rotation(yaw) @ DOWN
    grasp_offset = point - start
    bottom_offset = start[2] - lo[2]

    # carry height: above everything the bowl passes over from the escaped spot to the target
    c0 = mid[:2] + shift[:2]
    over_top = float(lo[2])
    for t in np.linspace(0.0, 1.0, 11):
        hit = _disk_gap(c0 + (place[:2] - c0) * t, radius + 0.01, olo, ohi) < 0
        if hit.any():
            over_top = max(over_top, float(obstacles.top[hit].max()))
    carry_bottom = max(over_top + DRAWER_CLEARANCE, place[2] + 0.05)
    fixed = lambda e: rot  # noqa: E731
    state: dict[str, Any] = {}

    def grasp_pt(e: Any) -> np.ndarray:
        return body_pos(e, obj) + grasp_offset

    def entry(e: Any) -> np.ndarray:
        return grasp_pt(e) + np.array([0.0, 0.0, 0.015])

    # the open hand goes over at a height that clears what lies between it and the grasp (the drawer)
    here = eef_pos(env)[:2]
    pad = float(np.abs(PALM[0][1]))
    over_hand = float(top + 0.04)
    for t in np.linspace(0.0, 1.0, 11):
        c = here + (point[:2] - here) * t
        hit = _disk_gap(c, pad, olo, ohi) < 0
        if hit.any():
            over_hand = max(over_hand, float(obstacles.top[hit].max()) + 0.025)

    def pre(e: Any) -> np.ndarray:
        p = entry(e)
        p[2] = max(p[2] + 0.06, over_hand)
        return p

    def held(e: Any) -> np.ndarray:
        if "offset" not in state:
            state["offset"] = eef_pos(e) - body_pos(e, obj)
        return np.clip(
            eef_pos(e) - body_pos(e, obj), state["offset"] - HELD_SLACK, state["offset"] + HELD_SLACK
        )

    def slide(e: Any) -> np.ndarray:
        if "anchor" not in state:
            state["anchor"] = eef_pos(e).copy()
        return state["anchor"] + shift + np.array([0.0, 0.0, SLIDE_LIFT])

    def lift(e: Any) -> np.ndarray:
        p = slide(e)
        p[2] = carry_bottom + bottom_offset + held(e)[2]
        return p

    def over(e: Any) -> np.ndarray:
        p = np.asarray(place_target(e), dtype=np.float64) + held(e)
        p[2] = carry_bottom + bottom_offset + held(e)[2]
        return p

    def lower(e: Any) -> np.ndarray:
        t = np.asarray(place_target(e), dtype=np.float64)
        p = t + held(e)
        p[2] = t[2] + 0.012 + bottom_offset + held(e)[2]
        return p

    def retreat(e: Any) -> np.ndarray:
        if "release" not in state:
            state["release"] = eef_pos(e).copy()
        return state["release"] + np.array([0.0, 0.0, 0.08])

    return [
        Phase(
            "bowl_above", pre, OPEN, tol=0.0, until=_reached(pre, rot, 0.02, 0.1), rotation=fixed, timeout=70
        ),
        Phase("bowl_down", entry, OPEN, tol=0.008, rotation=fixed, timeout=40),
        Phase("bowl_in", grasp_pt, OPEN, tol=0.006, rotation=fixed, max_speed=0.4, timeout=20),
        Phase("bowl_grasp", None, CLOSE, until=_gripper_settled(), timeout=14, rotation=fixed),
        Phase("bowl_slide", slide, CLOSE, tol=0.01, rotation=fixed, max_speed=0.5, timeout=30),
        Phase("bowl_lift", lift, CLOSE, tol=0.02, rotation=fixed, timeout=40),
        Phase("bowl_carry", over, CLOSE, tol=0.015, rotation=fixed, timeout=50),
        Phase("bowl_lower", lower, CLOSE, tol=0.01, rotation=fixed, max_speed=0.6, timeout=35),
        Phase("bowl_release", None, OPEN, steps=6, rotation=fixed),
        Phase("bowl_retreat", retreat, OPEN, tol=0.02, rotation=fixed, timeout=30),
    ]


def deferred(env: Any, build: Any) -> list[Phase]:
    """The phases of `build(env)`, but built from the state when the first of them starts (not at
    reset): a grasp planned after the drawer opened sees the open drawer (as an obstacle) and the
    hand's yaw after the drawer skill. `build` must return phases of the same shape in any state."""
    template = build(env)
    live: list[list[Phase]] = []

    def get(e: Any, i: int) -> Phase:
        if not live:
            live.append(build(e))
        return live[0][i]

    def wrap(i: int, attr: str) -> Any:
        return lambda e: getattr(get(e, i), attr)(e)

    out = []
    for i, p in enumerate(template):
        out.append(
            Phase(
                p.name,
                wrap(i, "target") if p.target is not None else None,
                p.gripper,
                tol=p.tol,
                steps=p.steps,
                min_steps=p.min_steps,
                until=wrap(i, "until") if p.until is not None else None,
                rotation=wrap(i, "rotation") if p.rotation is not None else None,
                gain=p.gain,
                max_speed=p.max_speed,
                timeout=p.timeout,
            )
        )
    return out


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


# -- hinged doors ------------------------------------------------------------------------------

DOOR_CLOSED_QPOS = -0.005  # LIBERO Microwave: closed when the hinge > -0.005 (open range < -1.3)
DOOR_PUSH_AT = 0.75  # where along the door (fraction of its width from the hinge) the hand pushes
DOOR_LEAD = 0.3  # rad the push target runs ahead of the door
DOOR_STANDOFF = 0.05  # m between the door's plane and the eef (the palm, 3.4 cm, is what touches)


def door_close(env: Any, jid: int) -> list[Phase]:
    """Swing a vertical-hinged door (the microwave's) shut: the hand, pointing down with closed fingers,
    comes down beside the door's outer face near its free edge, on the side away from the closing
    motion, and pushes along the arc (its target leads the door by DOOR_LEAD) until the hinge is past
    LIBERO's closed threshold; then backs off."""
    model = env.sim.model._model
    body = int(model.jnt_bodyid[jid])
    geoms = geo.collision_geoms(env, geo.subtree_bodies(env, body))
    anchor = geo.joint_anchor(env, jid)
    axis = geo.joint_axis(env, jid)
    lo, hi = geo.bodies_bounds(env, geo.subtree_bodies(env, body))
    sign = 1.0 if axis[2] >= 0 else -1.0  # world yaw of +qpos; closing increases the joint
    pts = np.concatenate([geo.geom_world_corners(env, g) for g in geoms])
    radial = pts[:, :2] - anchor[:2]
    width = float(np.linalg.norm(radial, axis=1).max())
    z_push = float(lo[2] + hi[2]) / 2
    q_start = geo.joint_qpos(env, jid)
    tip = radial[int(np.argmax(np.linalg.norm(radial, axis=1)))]
    tip_dir0 = np.array([*(tip / np.linalg.norm(tip)), 0.0])  # from the hinge along the door, at reset

    def along(e: Any, lead: float) -> np.ndarray:
        """Horizontal unit vector from the hinge along the door, turned `lead` rad further closed."""
        return geo.yaw_matrix(sign * (geo.joint_qpos(e, jid) - q_start + lead)) @ tip_dir0

    def contact(e: Any, lead: float) -> np.ndarray:
        """The eef beside the door, DOOR_PUSH_AT of its width out, turned `lead` rad ahead of the door."""
        u = along(e, lead)
        t = geo.yaw_matrix(sign * np.pi / 2) @ u  # the direction the door's points move when closing
        p = anchor + u * width * DOOR_PUSH_AT - t * DOOR_STANDOFF
        return np.array([p[0], p[1], z_push])

    def hold(e: Any) -> np.ndarray:
        """Pointing down, the fingers (and the palm's long side) along the door."""
        return geo.down_frame(along(e, 0.0))

    start = latched(lambda e: contact(e, 0.0))
    down = geo.down_frame(tip_dir0)

    def above(e: Any) -> np.ndarray:
        return start(e) + np.array([0.0, 0.0, float(hi[2]) - z_push + 0.05])

    def shut(e: Any) -> bool:
        return geo.joint_qpos(e, jid) > DOOR_CLOSED_QPOS + 0.002

    return [
        Phase(
            "door_above",
            above,
            CLOSE,
            tol=0.0,
            until=_reached(above, down, 0.02, 0.15),
            rotation=hold,
            timeout=100,
        ),
        Phase("door_down", start, CLOSE, tol=0.015, rotation=hold, max_speed=0.6, timeout=50),
        Phase(
            "door_push",
            lambda e: contact(e, DOOR_LEAD),
            CLOSE,
            tol=0.0,
            until=shut,
            rotation=hold,
            max_speed=0.6,
            timeout=150,
        ),  # fmt: skip
        Phase(
            "door_back",
            latched(lambda e: eef_pos(e) + [0.0, 0.0, 0.08]),
            CLOSE,
            tol=0.02,
            rotation=hold,
            timeout=30,
        ),
    ]


# -- stove knob --------------------------------------------------------------------------------


def knob_turn_on(env: Any, jid: int) -> list[Phase]:
    """Grasp the knob's handle above its axis (fingers across its thin side) and twist the hand about
    the vertical until the joint is past LIBERO's "on" threshold; let go and lift."""
    model = env.sim.model._model
    body = int(model.jnt_bodyid[jid])
    geoms = geo.collision_geoms(env, geo.subtree_bodies(env, body))
    axis = geo.joint_axis(env, jid)
    anchor = geo.joint_anchor(env, jid)
    sign = 1.0 if axis[2] >= 0 else -1.0  # world yaw of +qpos
    # the handle: the tallest collision geom of the knob
    pts = [geo.geom_world_corners(env, g) for g in geoms]
    handle = max(pts, key=lambda p: float(p[:, 2].max()))
    lo, hi = handle.min(0), handle.max(0)
    thin = np.array([1.0, 0.0, 0.0]) if hi[0] - lo[0] < hi[1] - lo[1] else np.array([0.0, -1.0, 0.0])
    grasp = np.array(
        [
            np.clip(anchor[0], lo[0] + 0.01, hi[0] - 0.01),
            np.clip(anchor[1], lo[1] + 0.01, hi[1] - 0.01),
            hi[2] - 0.018,
        ]
    )
    base_rot = geo.down_frame(thin)
    q0 = geo.joint_qpos(env, jid)
    hold = lambda e: base_rot  # noqa: E731

    def twisted(theta: float) -> np.ndarray:
        return geo.yaw_matrix(sign * theta) @ base_rot

    def twist_rot(e: Any) -> np.ndarray:
        return twisted(min(geo.joint_qpos(e, jid) - q0 + 0.45, KNOB_ON_QPOS + 0.5))

    def twist_pos(e: Any) -> np.ndarray:
        theta = geo.joint_qpos(e, jid) - q0
        return anchor + geo.yaw_matrix(sign * theta) @ (grasp - anchor)

    above = grasp + np.array([0.0, 0.0, 0.08])
    done_rot: dict[str, np.ndarray] = {}

    def final_rot(e: Any) -> np.ndarray:
        if "r" not in done_rot:
            done_rot["r"] = twisted(geo.joint_qpos(e, jid) - q0)
        return done_rot["r"]

    return [
        Phase(
            "knob_above",
            lambda e: above,
            OPEN,
            tol=0.0,
            until=_reached(lambda e: above, base_rot, 0.012),
            rotation=hold,
            timeout=100,
        ),  # fmt: skip
        Phase("knob_down", lambda e: grasp, OPEN, tol=0.006, rotation=hold, max_speed=0.6, timeout=40),
        Phase("knob_grip", lambda e: grasp, CLOSE, steps=8, rotation=hold),
        Phase(
            "knob_twist",
            twist_pos,
            CLOSE,
            tol=0.0,
            until=lambda e: geo.joint_qpos(e, jid) > KNOB_ON_QPOS + 0.15,
            rotation=twist_rot,
            timeout=60,
        ),  # fmt: skip
        Phase("knob_release", None, OPEN, steps=6, rotation=final_rot),
        Phase(
            "knob_up",
            latched(lambda e: eef_pos(e) + [0, 0, 0.08]),
            OPEN,
            tol=0.02,
            rotation=final_rot,
            timeout=30,
        ),
    ]


# -- pushing -----------------------------------------------------------------------------------


def _robot_base_xy(env: Any) -> np.ndarray:
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "robot0_base")
    return np.asarray(data.xpos[bid][:2], dtype=np.float64).copy() if bid >= 0 else np.array([-0.66, 0.0])


def _obstacle_boxes(env: Any, skip: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """xy bounds of every object and fixture (but the table and `skip`)."""
    problem = env.problem
    boxes = []
    for name in list(problem.objects_dict) + list(problem.fixtures_dict):
        if name == skip or "table" in name or name not in problem.obj_body_id:
            continue
        lo, hi = geo.bodies_bounds(env, geo.subtree_bodies(env, problem.obj_body_id[name]))
        if np.all(np.isfinite(lo)):
            boxes.append((lo[:2], hi[:2]))
    return boxes


def _path_clearance(
    path: list[np.ndarray], radius: float, boxes: list[tuple[np.ndarray, np.ndarray]], base: np.ndarray
) -> float:
    """Smallest gap between a disk of `radius` swept along the polyline and the boxes (the first 3 cm
    not counted: the object may start touching a neighbour); -inf where the pushing finger would be
    out of the arm's comfortable reach."""
    worst = np.inf
    for p0, p1 in zip(path[:-1], path[1:]):
        n = max(2, int(np.linalg.norm(p1 - p0) / 0.01) + 1)
        u = (p1 - p0) / max(float(np.linalg.norm(p1 - p0)), 1e-9)
        for t in np.linspace(0.0, 1.0, n):
            p = p0 + (p1 - p0) * t
            if np.linalg.norm(p + u * radius - base) > PUSH_REACH:
                return -np.inf
            if np.linalg.norm(p - path[0]) < 0.03:
                continue
            for lo, hi in boxes:
                d = np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0.0))
                worst = min(worst, d - radius)
    return float(worst)


def plan_push_path(
    start: np.ndarray,
    center: np.ndarray,
    half: np.ndarray,
    radius: float,
    boxes: list[tuple[np.ndarray, np.ndarray]],
    base: np.ndarray,
) -> list[np.ndarray]:
    """Waypoints (xy) for the pushed object's center: straight or L-shaped, to a goal inside the region
    (at least 1.5 cm from its border), keeping the most clearance from the other objects (more than
    2 cm counts as clear) within the arm's reach, then the shortest."""
    margin = np.maximum(half - 0.015, 0.0)
    goals = [
        center + np.array([gx, gy]) * margin
        for gx in (-1.0, -0.5, 0.0, 0.5, 1.0)
        for gy in (-1.0, -0.5, 0.0, 0.5, 1.0)
    ]
    best, best_key = [center], (-np.inf, 0.0)
    for goal in goals:
        candidates = [[goal]]
        for off in (-0.06, -0.03, 0.0, 0.03, 0.06):
            candidates.append([np.array([start[0] + off, goal[1]]), goal])  # along y first, then x
            candidates.append([np.array([goal[0], start[1] + off]), goal])  # along x first, then y
        for path in candidates:
            full = [start, *path]
            length = sum(float(np.linalg.norm(b - a)) for a, b in zip(full[:-1], full[1:]))
            key = (
                min(_path_clearance(full, radius, boxes, base), 0.02),
                -length - 0.2 * float(np.linalg.norm(goal - center)),
            )
            if key > best_key:
                best, best_key = path, key
    return best


def push_to_region(env: Any, obj: str, region: str) -> list[Phase]:
    """Slide `obj` (a plate) into a table region: the closed fingers go down inside the plate and push
    the inside of its rim on the side facing the next waypoint, along a straight or L-shaped path that
    keeps clear of the other objects (there is no room behind the plate in front of the cabinet)."""
    fingers_x = geo.down_frame(np.array([1.0, 0.0, 0.0]))  # hand across the push: short in y (cabinet)
    fixed_rot = lambda e: fingers_x  # noqa: E731
    bodies = geo.subtree_bodies(env, env.problem.obj_body_id[obj])
    lo, hi = geo.bodies_bounds(env, bodies)
    radius = float(max(hi[0] - lo[0], hi[1] - lo[1]) / 2)
    push_z = (
        float(lo[2]) + 0.008
    )  # grip site aimed low: the fingertips (~1 cm lower) press on the plate floor
    reach = (
        radius - 0.03
    )  # finger center from the plate center when it touches the rim (which slopes up to r)
    site = env.problem.object_sites_dict[region]
    half = np.abs(np.asarray(site.size[:2], dtype=np.float64))
    center = geo_site(env, region)[:2]
    start = body_pos(env, obj)[:2]
    base = _robot_base_xy(env)
    waypoints = plan_push_path(start, center, half, radius, _obstacle_boxes(env, obj), base)
    state = {"i": 0}

    def waypoint(e: Any) -> np.ndarray:
        c = body_pos(e, obj)[:2]
        while state["i"] < len(waypoints) - 1 and np.linalg.norm(waypoints[state["i"]] - c) < 0.015:
            state["i"] += 1
        return waypoints[state["i"]]

    def push(e: Any) -> np.ndarray:
        c = body_pos(e, obj)[:2]
        w = waypoint(e)
        u = geo.horizontal(np.array([*(w - c), 0.0]))[:2]
        contact = c + u * reach
        if np.linalg.norm(eef_pos(e)[:2] - contact) > 0.02:  # turning a corner: move inside the plate first
            return np.array([contact[0], contact[1], push_z])
        p = contact + u * min(0.02, float(np.linalg.norm(w - c)) + 0.005)
        return np.array([p[0], p[1], push_z])

    first = latched(
        lambda e: (
            push(e) - np.array([*(geo.horizontal(np.array([*(waypoints[0] - start), 0.0]))[:2] * 0.05), 0.0])
        )
    )

    def above(e: Any) -> np.ndarray:
        return first(e) + np.array([0.0, 0.0, 0.08])

    def inside(e: Any) -> bool:
        c = body_pos(e, obj)[:2]
        return state["i"] == len(waypoints) - 1 and bool(np.all(np.abs(c - center) < half - 0.012))

    return [
        Phase(
            "push_above",
            above,
            CLOSE,
            tol=0.0,
            until=_reached(above, fingers_x, 0.015),
            rotation=fixed_rot,
            timeout=100,
        ),  # fmt: skip
        Phase(
            "push_down",
            first,
            CLOSE,
            tol=0.0,
            until=lambda e: eef_pos(e)[2] < push_z + 0.015,
            rotation=fixed_rot,
            max_speed=0.6,
            timeout=40,
        ),
        Phase("push", push, CLOSE, tol=0.0, until=inside, rotation=fixed_rot, max_speed=0.3, timeout=200),
        Phase(
            "push_up",
            latched(lambda e: eef_pos(e) + [0, 0, 0.08]),
            CLOSE,
            tol=0.02,
            rotation=fixed_rot,
            timeout=30,
        ),
    ]
