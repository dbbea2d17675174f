"""Model queries for the articulated skills: joints of fixtures and regions, collision geoms and their
world bounds, gripper orientations. Everything reads the live MuJoCo model/data of `env.sim`."""

from __future__ import annotations

from typing import Any

import numpy as np

SLIDE, HINGE = 2, 3  # mujoco.mjtJoint values


def _mj(env: Any) -> tuple[Any, Any]:
    return env.sim.model._model, env.sim.data._data


def joint_id(env: Any, name: str) -> int:
    import mujoco

    model, _ = _mj(env)
    jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if jid < 0:
        raise KeyError(f"no joint named {name!r}")
    return int(jid)


def joint_qpos(env: Any, jid: int) -> float:
    model, data = _mj(env)
    return float(data.qpos[model.jnt_qposadr[jid]])


def joint_type(env: Any, jid: int) -> int:
    return int(_mj(env)[0].jnt_type[jid])


def joint_axis(env: Any, jid: int) -> np.ndarray:
    """World direction of the joint axis (slide direction of +qpos, or rotation axis of +qpos)."""
    return np.asarray(_mj(env)[1].xaxis[jid], dtype=np.float64).copy()


def joint_anchor(env: Any, jid: int) -> np.ndarray:
    return np.asarray(_mj(env)[1].xanchor[jid], dtype=np.float64).copy()


def joints_of(env: Any, name: str) -> list[str]:
    """Joint names behind a BDDL name: a region site of a fixture (its `joints`) or the fixture itself."""
    problem = env.problem
    site = problem.object_sites_dict.get(name)
    if site is not None:
        return list(getattr(site, "joints", None) or [])
    obj = problem.objects_dict.get(name) or problem.fixtures_dict.get(name)
    if obj is None:
        return []
    return [j for j in (getattr(obj, "joints", None) or []) if _is_named_joint(env, j)]


def _is_named_joint(env: Any, name: str) -> bool:
    try:
        jid = joint_id(env, name)
    except KeyError:
        return False
    return joint_type(env, jid) in (SLIDE, HINGE)


def subtree_bodies(env: Any, root: int) -> set[int]:
    model, _ = _mj(env)
    out = {root}
    for b in range(root + 1, model.nbody):
        parent = int(model.body_parentid[b])
        if parent in out:
            out.add(b)
    return out


def collision_geoms(env: Any, bodies: set[int]) -> list[int]:
    model, _ = _mj(env)
    return [
        g
        for g in range(model.ngeom)
        if int(model.geom_bodyid[g]) in bodies and (model.geom_contype[g] or model.geom_conaffinity[g])
    ]


def geom_world_corners(env: Any, g: int) -> np.ndarray:
    """World points that bound geom `g` (mesh vertices, box corners, or a sphere's bounding box)."""
    import mujoco

    model, data = _mj(env)
    center = np.asarray(data.geom_xpos[g], dtype=np.float64)
    rot = np.asarray(data.geom_xmat[g], dtype=np.float64).reshape(3, 3)
    if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
        mesh = model.geom_dataid[g]
        start = model.mesh_vertadr[mesh]
        verts = np.asarray(model.mesh_vert[start : start + model.mesh_vertnum[mesh]], dtype=np.float64)
        return verts @ rot.T + center
    if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
        size = np.asarray(model.geom_size[g], dtype=np.float64)
        signs = np.array(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64
        )
        return (signs * size) @ rot.T + center
    r = float(model.geom_rbound[g])
    return np.array([center - r, center + r])


def bodies_bounds(env: Any, bodies: set[int]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for g in collision_geoms(env, bodies):
        pts = geom_world_corners(env, g)
        lo, hi = np.minimum(lo, pts.min(0)), np.maximum(hi, pts.max(0))
    return lo, hi


def geom_center(env: Any, g: int) -> np.ndarray:
    pts = geom_world_corners(env, g)
    return (pts.min(0) + pts.max(0)) / 2


def horizontal(v: np.ndarray) -> np.ndarray:
    out = np.array([v[0], v[1], 0.0])
    n = np.linalg.norm(out)
    return out / n if n > 1e-9 else out


def gripper_frame(approach: np.ndarray, fingers: np.ndarray) -> np.ndarray:
    """3x3 world rotation of the end effector whose z axis (approach) and y axis (finger closing
    direction) are given (robosuite's Panda gripper frame)."""
    ez = approach / np.linalg.norm(approach)
    ey = fingers - ez * float(fingers @ ez)
    ey /= np.linalg.norm(ey)
    ex = np.cross(ey, ez)
    return np.stack([ex, ey, ez], axis=1)


def down_frame(yaw_fingers: np.ndarray | None = None) -> np.ndarray:
    """Gripper pointing down, fingers closing along the horizontal `yaw_fingers` (default world -y, as
    at reset)."""
    fingers = np.array([0.0, -1.0, 0.0]) if yaw_fingers is None else horizontal(yaw_fingers)
    return gripper_frame(np.array([0.0, 0.0, -1.0]), fingers)


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
