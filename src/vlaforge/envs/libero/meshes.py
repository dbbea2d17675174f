"""Fewer triangles for rendering: vertex clustering on a copy of a MuJoCo model's meshes.

LIBERO's scenes draw ~250k triangles (a 42k-triangle bowl, a 33k-triangle robot pedestal, the
Panda's ~130k) for 128-pixel frames. On llvmpipe (Mesa's CPU rasteriser) the cost is per vertex,
not per pixel: a 32 px frame costs as much as a 128 px one, ~35-45 ms per camera. Clustering each
mesh's vertices on a grid over its bounding box (coarse for the arm, finer for what the wrist camera
sees up close) and dropping the triangles that collapse leaves ~55k triangles and ~12 ms per
camera at 128 px (`benchmarks/bench_libero_env.py`, benchmarks/README.md).

Only a *copy* used by the GL context changes: physics, contacts and poses use the original model.
Triangle corners keep their original normal and texture-coordinate indices.
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np

MIN_FACES = 400  # meshes with fewer triangles are left alone
# The arm and its pedestal (~160k of LIBERO's ~250k triangles) are seen from afar; the objects, fixtures
# and the gripper are what the wrist camera sees up close, so they keep a finer grid.
COARSE_PREFIXES = ("robot0_", "mount0_")
FINE_FACTOR = 2.5


def decimated_copy(
    model: mujoco.MjModel, cells: int, fine_cells: int | None = None
) -> tuple[mujoco.MjModel, dict[str, int]]:
    """A copy of `model` whose large meshes are simplified to about `cells`³ vertex clusters (the arm
    and pedestal meshes, `COARSE_PREFIXES`) or `fine_cells`³ (every other mesh; default 2.5 x cells).

    Returns the copy and {"faces_before", "faces_after"}.
    """
    if cells < 2:
        raise ValueError(f"cells must be >= 2, got {cells}")
    fine_cells = int(round(cells * FINE_FACTOR)) if fine_cells is None else fine_cells
    out = copy.copy(model)
    before = after = 0
    for i in range(out.nmesh):
        name = mujoco.mj_id2name(out, mujoco.mjtObj.mjOBJ_MESH, i) or ""
        grid = cells if name.startswith(COARSE_PREFIXES) else fine_cells
        face_adr, face_num = int(out.mesh_faceadr[i]), int(out.mesh_facenum[i])
        vert_adr, vert_num = int(out.mesh_vertadr[i]), int(out.mesh_vertnum[i])
        before += face_num
        if face_num < MIN_FACES:
            after += face_num
            continue
        verts = out.mesh_vert[vert_adr : vert_adr + vert_num]  # (V, 3)
        lo, hi = verts.min(0), verts.max(0)
        cell = max(float((hi - lo).max()) / grid, 1e-9)
        faces = out.mesh_face[face_adr : face_adr + face_num]  # (F, 3) local vertex ids
        key = np.floor((verts - lo) / cell).astype(np.int64)  # (V, 3) grid cell of each vertex
        flat = (key[:, 0] * (grid + 2) + key[:, 1]) * (grid + 2) + key[:, 2]
        # Split each cell by the octant of the vertex normal, so that the two sides of a thin wall (a
        # bowl's inside and outside) never merge into one crumpled surface.
        flat = flat * 8 + _normal_octant(verts, faces)
        _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        representative = first[inverse]  # (V,) the first vertex of each vertex's cell
        merged = representative[faces]  # (F, 3)
        alive = (
            (merged[:, 0] != merged[:, 1]) & (merged[:, 1] != merged[:, 2]) & (merged[:, 0] != merged[:, 2])
        )
        _, unique = np.unique(np.sort(merged[alive], axis=1), axis=0, return_index=True)
        keep = np.flatnonzero(alive)[np.sort(unique)]  # (F',) surviving faces, original order
        n = len(keep)
        out.mesh_face[face_adr : face_adr + n] = merged[keep]
        out.mesh_facenormal[face_adr : face_adr + n] = out.mesh_facenormal[face_adr + keep]
        if out.mesh_facetexcoord.size:
            out.mesh_facetexcoord[face_adr : face_adr + n] = out.mesh_facetexcoord[face_adr + keep]
        out.mesh_facenum[i] = n
        after += n
    return out, {"faces_before": before, "faces_after": after}


def _normal_octant(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) int in 0..7: the signs of each vertex's area-weighted normal."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    face_normal = np.cross(b - a, c - a)  # (F, 3), length = 2 x area
    normal = np.zeros_like(verts)
    for corner in range(3):
        np.add.at(normal, faces[:, corner], face_normal)
    return ((normal[:, 0] > 0) * 4 + (normal[:, 1] > 0) * 2 + (normal[:, 2] > 0)).astype(np.int64)
