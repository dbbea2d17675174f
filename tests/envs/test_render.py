"""CameraRenderer on a small MJCF scene: frames, orientation, freeing, bad input, llvmpipe threads."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from vlaforge.envs import render
from vlaforge.envs.render import CameraDef, CameraRenderer

SCENE = """
<mujoco>
  <worldbody>
    <light pos="0 0 3"/>
    <geom type="plane" size="2 2 0.1" rgba="0.3 0.3 0.3 1"/>
    <body name="box" pos="0 0 0.3">
      <freejoint/>
      <geom type="box" size="0.1 0.2 0.1" rgba="0.9 0.2 0.1 1"/>
      <geom type="sphere" size="0.08" pos="0 0.3 0" rgba="0.1 0.3 0.9 1"/>
    </body>
    <camera name="top" pos="0 0 2" xyaxes="1 0 0 0 1 0"/>
    <camera name="side" pos="1.5 0 0.4" xyaxes="0 1 0 -0.2 0 1"/>
  </worldbody>
</mujoco>
"""
DEFS = {
    "top": CameraDef("top", False, "above"),
    "top_turned": CameraDef("top", True, "above, turned 180 degrees"),
    "side": CameraDef("side", False, "beside"),
}


@pytest.fixture(scope="module")
def scene() -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_string(SCENE)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return model, data


def test_rasteriser_threads_default_to_the_drawing_thread_unless_the_user_chose():
    code = "import os, vlaforge.envs.render; print(os.environ['LP_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    env["LP_NUM_THREADS"] = "3"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_frames_are_upright_and_each_camera_has_its_size(scene):
    model, data = scene
    r = CameraRenderer(model, {"top": (48, 64), "top_turned": (48, 64), "side": (40, 40)}, camera_defs=DEFS)
    try:
        frames = r.render_all(data)
        assert {k: v.shape for k, v in frames.items()} == {
            "top": (48, 64, 3), "top_turned": (48, 64, 3), "side": (40, 40, 3)
        }  # fmt: skip
        top = frames["top"].astype(int)
        # the blue sphere sits at +y of the red box; the top camera's image y-axis is world +y, so
        # in the upright image (row 0 at the top) the sphere is above the box
        blue_rows = np.nonzero(top[..., 2] > top[..., 0] + 40)[0]
        red_rows = np.nonzero(top[..., 0] > top[..., 2] + 40)[0]
        assert blue_rows.size and red_rows.size and blue_rows.mean() < red_rows.mean()
        np.testing.assert_array_equal(frames["top_turned"], frames["top"][::-1, ::-1])
        np.testing.assert_array_equal(r.render(data, "side"), frames["side"])  # same state, same bytes
    finally:
        r.close()
    r.close()  # twice is fine
    with pytest.raises(RuntimeError, match="after close"):
        r.render(data, "top")


def test_a_dropped_renderer_is_freed_at_the_next_safe_point(scene):
    model, data = scene
    r = CameraRenderer(model, {"top": (32, 32)}, camera_defs=DEFS)
    expected = r.render(data, "top")
    del r
    gc.collect()
    assert render._DEFERRED  # not freed inside __del__
    other = CameraRenderer(model, {"top": (32, 32)}, camera_defs=DEFS)
    try:
        assert not render._DEFERRED
        np.testing.assert_array_equal(other.render(data, "top"), expected)
    finally:
        other.close()


def test_unknown_camera_and_bad_size_are_refused(scene):
    model, _ = scene
    with pytest.raises(ValueError, match="unknown camera 'front'; available: top, top_turned, side"):
        CameraRenderer(model, {"front": (32, 32)}, camera_defs=DEFS)
    with pytest.raises(ValueError, match="size must be"):
        CameraRenderer(model, {"top": (0, 32)}, camera_defs=DEFS)
    with pytest.raises(ValueError, match="cameras is empty"):
        CameraRenderer(model, {}, camera_defs=DEFS)
