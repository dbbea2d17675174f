"""Fewer triangles for rendering: vertex clustering on a copy of a MuJoCo model's meshes.

LIBERO's scenes draw ~250k triangles (a 42k-triangle bowl, a 33k-triangle robot pedestal, the
Panda's ~130k) for 128-pixel frames. On llvmpipe (Mesa's CPU rasteriser) the cost is per vertex,
not per pixel: a 32 px frame costs as much as a 128 px one, ~35-45 ms per camera. Clustering each
mesh's vertices on a `cells`³ grid over its bounding box and dropping the triangles that collapse
leaves ~30-50k triangles and ~8-12 ms per camera, with images within a few grey levels of the full
meshes (mean absolute difference ~2-4 / 255 at cells=20).

Only a *copy* used by the GL context changes: physics, contacts and poses use the original model.
Triangle corners keep their original normal and texture-coordinate indices.
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np

MIN_FACES = 400  # meshes with fewer triangles are left alone


def decimated_copy(model: mujoco.MjModel, cells: int) -> tuple[mujoco.MjModel, dict[str, int]]:
    """A copy of `model` whose large meshes are simplified to about `cells`³ vertex clusters.

    Returns the copy and {"faces_before", "faces_after"}.
    """
    if cells < 2:
        raise ValueError(f"cells must be >= 2, got {cells}")
    out = copy.copy(model)
    before = after = 0
    for i in range(out.nmesh):
        face_adr, face_num = int(out.mesh_faceadr[i]), int(out.mesh_facenum[i])
        vert_adr, vert_num = int(out.mesh_vertadr[i]), int(out.mesh_vertnum[i])
        before += face_num
        if face_num < MIN_FACES:
            after += face_num
            continue
        verts = out.mesh_vert[vert_adr : vert_adr + vert_num]  # (V, 3)
        lo, hi = verts.min(0), verts.max(0)
        cell = max(float((hi - lo).max()) / cells, 1e-9)
        key = np.floor((verts - lo) / cell).astype(np.int64)  # (V, 3) grid cell of each vertex
        flat = (key[:, 0] * (cells + 2) + key[:, 1]) * (cells + 2) + key[:, 2]
        _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        representative = first[inverse]  # (V,) the first vertex of each vertex's cell
        faces = out.mesh_face[face_adr : face_adr + face_num]  # (F, 3) local vertex ids
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
