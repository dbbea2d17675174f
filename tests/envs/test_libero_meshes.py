"""Vertex-clustering decimation of a render-only model copy (no LIBERO needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.extras import require

mujoco = require("mujoco", "sim")

from vlaforge.envs.libero.meshes import decimated_copy  # noqa: E402


def _sphere_model(n: int = 40) -> mujoco.MjModel:
    """A UV sphere mesh with 2 n (n - 1) triangles, plus a small box mesh left alone."""
    theta, phi = np.meshgrid(np.linspace(0, np.pi, n + 1)[1:-1], np.linspace(0, 2 * np.pi, n, endpoint=False))
    verts = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1).reshape(
        -1, 3
    )
    verts = np.concatenate([verts, [[0, 0, 1], [0, 0, -1]]])
    rows, cols = n - 1, n  # rings x segments
    idx = lambda r, c: (c % cols) * rows + r  # noqa: E731
    faces = []
    for c in range(cols):
        for r in range(rows - 1):
            faces += [
                [idx(r, c), idx(r + 1, c), idx(r + 1, c + 1)],
                [idx(r, c), idx(r + 1, c + 1), idx(r, c + 1)],
            ]
        faces += [
            [len(verts) - 2, idx(0, c + 1), idx(0, c)],
            [len(verts) - 1, idx(rows - 1, c), idx(rows - 1, c + 1)],
        ]
    v = " ".join(f"{x:.6f}" for x in verts.ravel())
    f = " ".join(str(i) for i in np.asarray(faces).ravel())
    xml = f"""<mujoco><asset>
      <mesh name="sphere" vertex="{v}" face="{f}"/>
      <mesh name="box" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/>
    </asset><worldbody>
      <geom type="mesh" mesh="sphere"/><geom type="mesh" mesh="box" pos="2 0 0"/>
    </worldbody></mujoco>"""
    return mujoco.MjModel.from_xml_string(xml)


def test_decimation_cuts_large_meshes_and_keeps_valid_faces():
    model = _sphere_model()
    faces = model.mesh_facenum.copy()
    out, stats = decimated_copy(model, cells=4, fine_cells=8)  # the sphere is not an arm mesh: fine_cells
    assert stats["faces_before"] == int(faces.sum())
    assert stats["faces_after"] < 0.5 * stats["faces_before"]
    np.testing.assert_array_equal(model.mesh_facenum, faces)  # the physics model is untouched
    assert out.mesh_facenum[1] == faces[1]  # small meshes are left alone
    n = int(out.mesh_facenum[0])
    tri = out.mesh_face[out.mesh_faceadr[0] : out.mesh_faceadr[0] + n]
    assert tri.min() >= 0 and tri.max() < out.mesh_vertnum[0]
    assert np.all((tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2]))
    assert len({tuple(sorted(t)) for t in tri.tolist()}) == n  # no duplicate triangles
    with pytest.raises(ValueError, match="cells"):
        decimated_copy(model, cells=1)
