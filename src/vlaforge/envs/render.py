"""Fast, upright off-screen rendering of MuJoCo cameras on the CPU.

Gymnasium's default render path draws 480x480 frames with shadows, reflections and 4x multisampling
and takes ~75-90 ms per frame on llvmpipe (Mesa's CPU rasteriser). Policies want small frames, so we
render at the target size with shadows, reflections and multisampling off: ~7 ms per 128x128 frame,
most of it vertex work on the Sawyer meshes (a 32x32 frame still takes ~6 ms).

Meta-World's cameras do not all come out upright: `corner` (like `corner4`, LeRobot's `corner2`) is
mounted with its image y-axis pointing down in the world (xyaxes "-1 1 0 -0.2 -0.2 -1"), so its image
is rotated 180 degrees. Every camera we expose is listed in `CAMERAS` with the correction that makes it upright (checked by eye and by a
test that the table is at the bottom of the corner view).

We drive MuJoCo's low-level renderer ourselves instead of `mujoco.Renderer` so that the GL backend
follows MUJOCO_GL at render time (mujoco.Renderer freezes it when `mujoco` is first imported, which
breaks headless rendering whenever `metaworld` or `mujoco` was imported first) and so that one GL
context serves every camera of an env.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # for mujoco's own renderer, if anything else uses it
# llvmpipe rasterises in the drawing thread instead of handing small frames to helper threads (its
# default is one per core): the same pixels for ~20 % less time and CPU per LIBERO step here. Read
# when the GL driver starts, so it is set before the first context is made.
os.environ.setdefault("LP_NUM_THREADS", "0")

import atexit  # noqa: E402
import weakref  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class CameraDef:
    """A camera of our API: the MuJoCo camera it reads and how its image is oriented.

    OpenGL reads pixels bottom row first. `rotate_180=False` flips the rows (the camera's own upright
    image); `rotate_180=True` flips the columns instead, i.e. the upright image turned by 180 degrees.
    `convention="opengl_rot180"` flips both: robosuite's raw (bottom-row-first) image turned by 180
    degrees, which is what openpi's and LeRobot's LIBERO pipelines feed their policies.
    """

    mujoco_name: str
    rotate_180: bool
    description: str
    convention: str = "upright"  # "upright" (see rotate_180) | "opengl_rot180"

    def orient(self, pixels: np.ndarray) -> np.ndarray:
        """OpenGL read-back (bottom row first) -> the image our API returns (a view)."""
        if self.convention == "opengl_rot180":
            return pixels[::-1, ::-1]
        return pixels[:, ::-1] if self.rotate_180 else pixels[::-1]


CAMERAS: dict[str, CameraDef] = {
    "corner": CameraDef("corner", True, "third-person view of the table from the front corner"),
    "gripper": CameraDef("gripperPOV", False, "wrist view: the fingers and what is in front of them"),
    "behind_gripper": CameraDef("behindGripper", False, "third-person view that follows the gripper"),
    # LeRobot's Meta-World camera: it moves MuJoCo's `corner2` to (0.75, 0.075, 0.7)
    # (src/lerobot/envs/metaworld.py `_ensure_env`), which makes it MuJoCo's `corner4` exactly (same
    # position, orientation and fovy in xyz_base.xml), and turns the image by 180 degrees (np.flip(image,
    # (0, 1)) of gymnasium's upright read-back); the result is upright. Checked against LeRobot's
    # render path by tests/envs/test_metaworld_protocol.py.
    "corner2": CameraDef("corner4", True, "LeRobot's Meta-World view: robot and table from the front right"),
}


def image_size_pair(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """An env's `image_size` argument (N or (height, width), each >= 16) as (height, width)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s >= 16 for s in size):
        raise ValueError(f"image_size must be an int or (height, width) of ints >= 16, got {image_size!r}")
    return int(size[0]), int(size[1])


def _gl_context(width: int, height: int) -> Any:
    """A GL context for the backend named by MUJOCO_GL (egl | osmesa | glfw), made current."""
    backend = os.environ.get("MUJOCO_GL", "egl").strip().lower() or "egl"
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    elif backend in ("glfw", "glx"):
        from mujoco.glfw import GLContext
    else:
        raise RuntimeError(f"MUJOCO_GL={backend!r} is not supported for rendering; use egl, osmesa or glfw")
    context = GLContext(width, height)
    context.make_current()
    return context


# Renderers still open at exit are closed before EGL is torn down. atexit runs handlers last-in
# first-out and mujoco.egl registers eglTerminate when its first context is made, so ours is
# registered after that.
_LIVE: weakref.WeakSet[CameraRenderer] = weakref.WeakSet()
_EXIT_HOOK_REGISTERED = False
# GL resources of renderers that were garbage-collected without close(). They are freed at the next
# safe point (start of a render or of a new renderer), never inside __del__: the garbage collector
# can run between another renderer's make_current() and its mjr_readPixels(), and freeing a context
# there would leave no context current, so that renderer would silently read back garbage.
_DEFERRED: list[tuple[Any, Any]] = []


def _free(gl: Any, ctx: Any) -> None:
    gl.make_current()
    ctx.free()
    gl.free()


def _free_deferred() -> None:
    while _DEFERRED:
        _free(*_DEFERRED.pop())


def _close_live() -> None:
    for renderer in list(_LIVE):
        renderer.close()
    _free_deferred()


class CameraRenderer:
    """Renders named cameras of one MuJoCo model to uint8 (H, W, 3) upright RGB arrays.

    cameras: our camera name -> (height, width). The model's visual settings are changed in place
    (offsamples = 0, off-screen buffer = the largest camera), which only affects rendering.
    camera_defs: the camera table to read names from (default: Meta-World's `CAMERAS`).
    render_model: a copy of `model` whose meshes the GL context uploads (e.g. with fewer triangles,
    `vlaforge.envs.libero.meshes`); poses still come from `model` and the data passed to `render`.
    geom_groups: the geom groups drawn (default: MuJoCo's, groups 0-2); robosuite scenes draw only
    their visual group 1, not the collision meshes.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        cameras: dict[str, tuple[int, int]],
        *,
        camera_defs: dict[str, CameraDef] | None = None,
        render_model: mujoco.MjModel | None = None,
        geom_groups: tuple[int, ...] | None = None,
    ) -> None:
        global _EXIT_HOOK_REGISTERED
        if not cameras:
            raise ValueError("cameras is empty; give at least one camera, e.g. {'corner': (128, 128)}")
        defs = CAMERAS if camera_defs is None else camera_defs
        self._ids: dict[str, int] = {}
        for name, size in cameras.items():
            if name not in defs:
                raise ValueError(f"unknown camera '{name}'; available: {', '.join(defs)}")
            cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, defs[name].mujoco_name)
            if cam_id < 0:
                raise ValueError(
                    f"camera '{name}': MuJoCo camera '{defs[name].mujoco_name}' is not in the model"
                )
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"camera '{name}': size must be (height, width) >= 1, got {size}")
            self._ids[name] = cam_id
        self.cameras = {name: (int(h), int(w)) for name, (h, w) in cameras.items()}
        self._defs = {name: defs[name] for name in self.cameras}
        self._model = model

        _free_deferred()
        gl_model = model if render_model is None else render_model
        for m in {id(model): model, id(gl_model): gl_model}.values():
            m.vis.quality.offsamples = 0  # no multisampling: the single biggest cost on llvmpipe
            m.vis.global_.offheight = max(h for h, _ in self.cameras.values())
            m.vis.global_.offwidth = max(w for _, w in self.cameras.values())
        self._gl = _gl_context(gl_model.vis.global_.offwidth, gl_model.vis.global_.offheight)
        self._ctx = mujoco.MjrContext(gl_model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._ctx)
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._option = mujoco.MjvOption()
        if geom_groups is not None:
            for group in range(len(self._option.geomgroup)):
                self._option.geomgroup[group] = int(group in geom_groups)
        self._perturb = mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._closed = False
        _LIVE.add(self)
        if not _EXIT_HOOK_REGISTERED:
            atexit.register(_close_live)
            _EXIT_HOOK_REGISTERED = True

    def render(self, data: mujoco.MjData, name: str) -> np.ndarray:
        """One upright frame of camera `name`: uint8 (H, W, 3), a fresh array the caller owns."""
        if self._closed:
            raise RuntimeError("CameraRenderer.render called after close()")
        _free_deferred()
        height, width = self.cameras[name]
        self._camera.fixedcamid = self._ids[name]
        mujoco.mjv_updateScene(
            self._model,
            data,
            self._option,
            self._perturb,
            self._camera,
            mujoco.mjtCatBit.mjCAT_ALL.value,
            self._scene,
        )
        self._gl.make_current()
        rect = mujoco.MjrRect(0, 0, width, height)
        mujoco.mjr_render(rect, self._scene, self._ctx)
        pixels = np.empty((height, width, 3), dtype=np.uint8)  # OpenGL rows: bottom row first
        mujoco.mjr_readPixels(pixels, None, rect, self._ctx)
        return np.ascontiguousarray(self._defs[name].orient(pixels))

    def render_all(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        return {name: self.render(data, name) for name in self.cameras}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        _free(self._gl, self._ctx)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):  # dropped without close(): free at the next safe point
            self._closed = True
            _DEFERRED.append((self._gl, self._ctx))
