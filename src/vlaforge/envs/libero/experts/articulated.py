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
            return clear_drawer_path(env, args[0], jid) + drawer_open(env, jid) + place_in_drawer(env, *args)
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
    """After `drawer_open`: turn the hand back to pointing down above the open drawer, then pick `obj`
    and put it on the drawer's floor under the region's center (pick_place.pick_and_place)."""
    from vlaforge.envs.libero.experts.pick_place import pick_and_place

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
            until=_reached(clear, down, 0.03, 0.15),
            rotation=lambda e: down,
            timeout=60,
        ),  # fmt: skip
        *deferred(env, lambda e: pick_and_place(e, obj, target, release_height=0.015)),
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


# -- clearing the drawer's way -------------------------------------------------------------------

CLEAR_MARGIN = 0.012  # m between the object and the open drawer's footprint after the push
CLEAR_OTHERS = 0.002  # m the pushed object keeps from the other objects' boxes (unless already closer)


def _box_gap(lo1: np.ndarray, hi1: np.ndarray, lo2: np.ndarray, hi2: np.ndarray) -> float:
    """Distance between two xy boxes (negative: overlap depth, the smaller of the two axes)."""
    d = np.maximum(lo2 - hi1, lo1 - hi2)
    if np.any(d > 0):
        return float(np.linalg.norm(np.maximum(d, 0.0)))
    return float(d.max())


def plan_clear_push(
    lo: np.ndarray,
    hi: np.ndarray,
    keep_out: tuple[np.ndarray, np.ndarray],
    others: list[tuple[np.ndarray, np.ndarray]],
    finger_start: np.ndarray,
    base: np.ndarray,
) -> tuple[np.ndarray, float] | None:
    """(unit direction, distance) of the shortest straight push (xy) that takes the box [lo, hi] at
    least CLEAR_MARGIN away from `keep_out` without running into `others`, the pushing finger staying
    within reach; None when it is clear already or no push works."""
    if _box_gap(lo, hi, *keep_out) >= CLEAR_MARGIN:
        return None
    best: tuple[float, int, np.ndarray, float] | None = None
    for k, deg in enumerate(range(0, 360, 15)):
        a = np.deg2rad(deg)
        u = np.array([np.cos(a), np.sin(a)])
        for d in np.arange(0.01, 0.121, 0.005):
            if _box_gap(lo + u * d, hi + u * d, *keep_out) < CLEAR_MARGIN:
                continue
            ok = np.linalg.norm(finger_start + u * d - base) <= PUSH_REACH
            for olo, ohi in others:
                g0 = _box_gap(lo, hi, olo, ohi)
                for t in np.linspace(0.0, d, 6)[1:]:
                    if _box_gap(lo + u * t, hi + u * t, olo, ohi) < min(CLEAR_OTHERS, g0):
                        ok = False
            if ok and (best is None or (float(d), k) < best[:2]):
                best = (float(d), k, u, float(d))
            break  # the shortest distance for this direction
    return None if best is None else (best[2], best[3])


def clear_drawer_path(env: Any, obj: str, jid: int) -> list[Phase]:
    """Before opening: if the open drawer would reach over `obj` (a bowl under it cannot be grasped nor
    lifted), push `obj` out of its footprint with the closed fingers on the inside of its wall."""
    d = Drawer(env, jid)
    dlo, dhi = geo.bodies_bounds(env, geo.subtree_bodies(env, d.body))
    shift = d.open_dir * (d.qpos(env) - DRAWER_TARGET_QPOS)
    keep_out = (np.minimum(dlo, dlo + shift)[:2], np.maximum(dhi, dhi + shift)[:2])
    root = env.problem.obj_body_id[obj]
    lo, hi = geo.bodies_bounds(env, geo.subtree_bodies(env, root))
    others = []
    for name in list(env.problem.objects_dict) + list(env.problem.fixtures_dict):
        if name == obj or "table" in name or name not in env.problem.obj_body_id:
            continue
        bodies = geo.subtree_bodies(env, env.problem.obj_body_id[name])
        if d.body in bodies:  # the cabinet itself
            continue
        olo, ohi = geo.bodies_bounds(env, bodies)
        if np.all(np.isfinite(olo)):
            others.append((olo[:2], ohi[:2]))
    center = (lo[:2] + hi[:2]) / 2
    radius = float(min(hi[0] - lo[0], hi[1] - lo[1]) / 2)
    reach = radius - 0.012  # finger center from the object's center before it touches the inner wall
    base = _robot_base_xy(env)
    plan = plan_clear_push(lo[:2], hi[:2], keep_out, others, center, base)
    if plan is None:
        return []
    u, dist = plan
    push_z = float(lo[2]) + 0.03  # the fingertips ~2 cm above the floor, against the wall
    top = float(hi[2])
    start_xy = center.copy()
    down = geo.down_frame()
    hold = lambda e: down  # noqa: E731

    def center_now(e: Any) -> np.ndarray:
        blo, bhi = geo.bodies_bounds(e, geo.subtree_bodies(e, root))
        return (blo[:2] + bhi[:2]) / 2

    def contact(e: Any) -> np.ndarray:
        c = center_now(e) - u * reach
        return np.array([c[0], c[1], push_z])

    def above(e: Any) -> np.ndarray:
        return np.array([*(start_xy - u * reach), top + 0.05])

    def push(e: Any) -> np.ndarray:
        return contact(e) + np.array([*(u * 0.025), 0.0])

    def pushed(e: Any) -> bool:
        return float((center_now(e) - start_xy) @ u) >= dist

    return [
        Phase(
            "clear_above", above, CLOSE, tol=0.0, until=_reached(above, down, 0.015), rotation=hold, timeout=60
        ),
        Phase(
            "clear_down",
            contact,
            CLOSE,
            tol=0.0,
            until=lambda e: eef_pos(e)[2] < push_z + 0.012,
            rotation=hold,
            max_speed=0.6,
            timeout=30,
        ),
        Phase("clear_push", push, CLOSE, tol=0.0, until=pushed, rotation=hold, max_speed=0.4, timeout=40),
        Phase(
            "clear_up",
            latched(lambda e: eef_pos(e) + [0, 0, 0.06]),
            CLOSE,
            tol=0.02,
            rotation=hold,
            timeout=20,
        ),
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
