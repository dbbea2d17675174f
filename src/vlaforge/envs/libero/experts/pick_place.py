"""Pick-and-place skills for LIBERO goals `(On obj target)` and `(In obj region)`.

`pick_and_place(env, obj, place_target)` grasps `obj` from above (vertical gripper, yawed so the
fingers close across the object's narrow side; bowls by their rim), lifts it to a height that clears
the scene, carries it above `place_target(env)`, lowers it until its bottom is `release_height` above
that point, opens and retreats upward. Targets are recomputed every step from the simulator state.
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
    site_pos,
    yaw_rotation,
)

# Gripper pointing straight down, fingers closing along world y (the reset orientation, levelled).
DOWN = np.diag([1.0, -1.0, -1.0])
FINGER_REACH = 0.075  # widest object (m) the open Panda fingers straddle with some margin
BOWL_GRASP_DEPTH = 0.022  # eef below the bowl rim
CLEARANCE = 0.06  # m between the carried object's bottom and the highest thing it passes over


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


def collision_points(env: Any, name: str) -> np.ndarray:
    """World corner points (N, 3) of the collision geoms of object/fixture `name` (tight for boxes)."""
    import mujoco

    model = env.sim.model._model
    data = env.sim.data._data
    bodies = _bodies_of(model, env.problem.obj_body_id[name])
    pts = []
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    for g in range(model.ngeom):
        if model.geom_bodyid[g] not in bodies or model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
            continue
        center, rot, size = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3), model.geom_size[g]
        t = model.geom_type[g]
        if t == mujoco.mjtGeom.mjGEOM_MESH:
            m = model.geom_dataid[g]
            verts = model.mesh_vert[model.mesh_vertadr[m] : model.mesh_vertadr[m] + model.mesh_vertnum[m]]
            pts.append(verts @ rot.T + center)
            continue
        if t == mujoco.mjtGeom.mjGEOM_BOX:
            half = size
        elif t == mujoco.mjtGeom.mjGEOM_SPHERE:
            half = np.full(3, size[0])
        elif t == mujoco.mjtGeom.mjGEOM_CYLINDER:
            half = np.array([size[0], size[0], size[1]])
        elif t == mujoco.mjtGeom.mjGEOM_CAPSULE:
            half = np.array([size[0], size[0], size[1] + size[0]])
        else:
            continue
        pts.append((signs * half) @ rot.T + center)
    if not pts:
        return body_pos(env, name)[None]
    return np.concatenate(pts)


def bounds(env: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = collision_points(env, name)
    return p.min(0), p.max(0)


def _narrow_yaw(points_xy: np.ndarray) -> tuple[float, float]:
    """(yaw of the gripper, width) so the fingers close across the narrowest horizontal extent."""
    best = (0.0, np.inf)
    for a in np.deg2rad(np.arange(0.0, 180.0, 3.0)):
        u = np.array([np.cos(a), np.sin(a)])
        proj = points_xy @ u
        w = proj.max() - proj.min()
        if w < best[1] - 1e-4:
            best = (a, w)
    a, w = best
    # finger axis at gripper yaw t is (-sin t, cos t); we want it along u = (cos a, sin a)
    return _wrap_half(a - np.pi / 2), float(w)


def _scene_top(env: Any, exclude: set[str], lo_xy: np.ndarray, hi_xy: np.ndarray) -> float:
    """Highest collision point of any object/fixture (not excluded) over the xy box [lo, hi]."""
    top = -np.inf
    names = list(env.problem.objects_dict) + list(env.problem.fixtures_dict)
    for name in names:
        if name in exclude or name not in env.problem.obj_body_id:
            continue
        p = collision_points(env, name)
        inside = np.all((p[:, :2] >= lo_xy) & (p[:, :2] <= hi_xy), axis=1)
        if inside.any():
            top = max(top, float(p[inside, 2].max()))
    return top


# -- the skill ---------------------------------------------------------------------------------


def pick_and_place(
    env: Any,
    obj: str,
    place_target: Callable[[Any], np.ndarray],
    *,
    release_height: float = 0.02,
    carry_height: float | None = None,
) -> list[Phase]:
    """Phases that grasp `obj` and put it down above `place_target(env)` (world xyz, recomputed
    every step): the object is carried so its body origin is above the target's xy and released
    when its lowest point is `release_height` (m) above the target's z. `carry_height` (world z of
    the object's bottom while carrying) defaults to a height that clears the scene between the
    object and the target."""
    start_pos = body_pos(env, obj)
    lo, hi = bounds(env, obj)
    bottom_offset = start_pos[2] - lo[2]  # body origin above the object's lowest point
    height = hi[2] - lo[2]
    grasp = _grasp_plan(env, obj, lo, hi)
    rot = yaw_rotation(grasp["yaw"]) @ DOWN
    grasp_offset = grasp["point"] - start_pos  # eef - object origin at the grasp (world frame)

    def rotation(_: Any) -> np.ndarray:
        return rot

    def grasp_point(e: Any) -> np.ndarray:
        return body_pos(e, obj) + grasp_offset

    def pre_grasp(e: Any) -> np.ndarray:
        p = grasp_point(e)
        p[2] = max(p[2], grasp["top"]) + 0.06
        return p

    held: dict[str, Any] = {}

    def offset(e: Any) -> np.ndarray:
        """eef - object origin, frozen when the lift starts (the grasp does not move after)."""
        if "offset" not in held:
            held["offset"] = eef_pos(e) - body_pos(e, obj)
        return held["offset"]

    def carry_z(e: Any) -> float:
        if "carry" not in held:
            if carry_height is not None:
                held["carry"] = carry_height
            else:
                t = np.asarray(place_target(e), dtype=np.float64)
                here = body_pos(e, obj)
                lo_xy = np.minimum(here[:2], t[:2]) - 0.05
                hi_xy = np.maximum(here[:2], t[:2]) + 0.05
                top = _scene_top(e, {obj}, lo_xy, hi_xy)
                held["carry"] = max(top + CLEARANCE, t[2] + release_height + 0.03, lo[2] + 0.05)
        return held["carry"]

    def lift(e: Any) -> np.ndarray:
        if "lift_xy" not in held:
            held["lift_xy"] = eef_pos(e)[:2].copy()
        p = np.empty(3)
        p[:2] = held["lift_xy"]
        p[2] = carry_z(e) + bottom_offset + offset(e)[2]
        return p

    def above_target(e: Any) -> np.ndarray:
        t = np.asarray(place_target(e), dtype=np.float64)
        p = t + offset(e)
        p[2] = carry_z(e) + bottom_offset + offset(e)[2]
        return p

    def lower(e: Any) -> np.ndarray:
        t = np.asarray(place_target(e), dtype=np.float64)
        p = t + offset(e)
        p[2] = t[2] + release_height + bottom_offset + offset(e)[2]
        return p

    def retreat(e: Any) -> np.ndarray:
        p = held.setdefault("release", eef_pos(e).copy()).copy()
        p[2] += 0.08
        return p

    del height
    return [
        Phase("approach", pre_grasp, OPEN, tol=0.02, rotation=rotation, timeout=80),
        Phase("descend", grasp_point, OPEN, tol=0.006, rotation=rotation, max_speed=0.6, timeout=40),
        Phase("grasp", None, CLOSE, steps=8, rotation=rotation),
        Phase("lift", lift, CLOSE, tol=0.02, rotation=rotation, timeout=60),
        Phase("carry", above_target, CLOSE, tol=0.015, rotation=rotation, timeout=80),
        Phase("lower", lower, CLOSE, tol=0.01, rotation=rotation, max_speed=0.6, timeout=40),
        Phase("release", None, OPEN, steps=6, rotation=rotation),
        Phase("retreat", retreat, OPEN, tol=0.02, rotation=rotation, timeout=30),
    ]


def _grasp_plan(env: Any, obj: str, lo: np.ndarray, hi: np.ndarray) -> dict[str, Any]:
    """Where (world eef point) and at which yaw to grasp `obj`; `top`: its highest point."""
    center = body_pos(env, obj)
    pts = collision_points(env, obj)
    top = float(hi[2])
    if "bowl" in obj:
        # grasp the rim wall: the fingers straddle the wall along a radius, pads just below the rim
        mid = (lo + hi) / 2
        radius = min(hi[0] - lo[0], hi[1] - lo[1]) / 2 - 0.006
        best = None
        for deg in range(0, 360, 30):
            a = np.deg2rad(deg)
            u = np.array([np.cos(a), np.sin(a)])
            p = np.array([mid[0] + u[0] * radius, mid[1] + u[1] * radius, top - BOWL_GRASP_DEPTH])
            clearance = _finger_clearance(env, obj, p, u)
            # prefer free space, then rim points facing the robot (negative x)
            key = (min(clearance, 0.03), -u[0] * 0.01 - abs(_wrap(a - np.pi / 2 - np.pi / 2)) * 1e-4)
            if best is None or key > best[0]:
                best = (key, a, p)
        _, a, point = best
        yaw = _wrap_half(a - np.pi / 2)
        return {"yaw": yaw, "point": point, "top": top}
    yaw, _ = _narrow_yaw(pts[:, :2])
    depth = min(0.035, 0.5 * (hi[2] - lo[2]))
    point = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, top - depth])
    del center
    return {"yaw": yaw, "point": point, "top": top}


def _wrap(a: float) -> float:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _wrap_half(a: float) -> float:
    """An angle modulo pi in [-pi/2, pi/2) (the gripper is symmetric under a half turn)."""
    return (a + np.pi / 2) % np.pi - np.pi / 2


def _finger_clearance(env: Any, obj: str, point: np.ndarray, axis: np.ndarray) -> float:
    """Horizontal distance from the open fingers (a segment along `axis` through `point`) to the
    nearest collision point of any other object or fixture above `point`'s height - 4 cm."""
    best = np.inf
    for name in list(env.problem.objects_dict) + list(env.problem.fixtures_dict):
        if name == obj or name not in env.problem.obj_body_id:
            continue
        p = collision_points(env, name)
        p = p[p[:, 2] > point[2] - 0.04]
        if not len(p):
            continue
        d = p[:, :2] - point[:2]
        along = np.clip(d @ axis, -0.05, 0.05)
        dist = np.linalg.norm(d - along[:, None] * axis[None], axis=1)
        best = min(best, float(dist.min()))
    return best


def support_point(env: Any, obj: str, point: np.ndarray, radius: float = 0.02) -> np.ndarray:
    """`point`'s xy at the height of the highest surface (other than `obj`) within `radius` of it."""
    p = np.asarray(point, dtype=np.float64).copy()
    top = _scene_top(env, {obj}, p[:2] - radius, p[:2] + radius)
    if np.isfinite(top):
        p[2] = top
    return p


# -- goals -------------------------------------------------------------------------------------


def _target_fn(env: Any, obj: str, target: str) -> tuple[Callable[[Any], np.ndarray], float] | None:
    """(place_target, release_height) for a goal's second argument: an object or a site."""
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


def skill_for(env: Any, predicate: list[str]) -> list[Phase] | None:
    """Phases that achieve `predicate`, or None if this module has no skill for it."""
    if len(predicate) != 3 or predicate[0] not in ("on", "in"):
        return None
    _, obj, target = predicate
    if obj not in env.problem.objects_dict:
        return None
    found = _target_fn(env, obj, target)
    if found is None:
        return None
    place_target, release_height = found
    return pick_and_place(env, obj, place_target, release_height=release_height)
