"""LIBERO tasks behind vlaforge's `Env` protocol, laid out as LeRobot's LIBERO datasets are.

    env = LiberoEnv("libero_goal/turn_on_the_stove", split="eval")
    obs = env.reset(seed=3)        # official initial state 3 of 50, then 10 settling no-op steps
    obs, reward, done, info = env.step(np.zeros(7))       # info["success"]: the BDDL goal holds

Observation (what openpi's and LeRobot's LIBERO pipelines feed a policy):
- images `image` (robosuite's `agentview`) and `wrist_image` (`robot0_eye_in_hand`), uint8
  (H, W, 3), both turned 180 degrees from robosuite's raw OpenGL image (`raw[::-1, ::-1]`);
- state float32 (8,): end-effector position (3), axis-angle of the end-effector quaternion (3), the
  two gripper finger joints (2);
- the task's language instruction (the benchmark's, as openpi and LeRobot use it; for the LIBERO-PRO
  paraphrase suites `*_lan`, the reworded sentence of their BDDL files).
Action float32 (7,) in [-1, 1]: Δposition (3) and Δaxis-angle (3) of robosuite's OSC_POSE
controller (delta mode; 1.0 = 5 cm / 0.5 rad per step), gripper (-1 open, +1 close). 20 Hz.

Splits: `eval` resets to the official initial state `seed % 50` (`get_task_init_states`);
`train` samples a fresh layout from the task's BDDL placement regions with `seed` (the same seed
gives the same layout) and rejects any layout within 1 mm of an official state, so recorded
demonstrations never contain an evaluation scene.

Rendering: our own off-screen renderer (no shadows/reflections, no multisampling, only the visual
geom groups robosuite draws, llvmpipe rasterising in the drawing thread) on a copy of the model whose
meshes have fewer triangles (`meshes.decimated_copy`; `mesh_cells=None` keeps the full meshes).
Frames are rendered only when an observation is returned with `render_images=True`.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import contextlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from vlaforge.envs.libero.suites import (  # noqa: E402
    CONTROL_HZ,
    INSTALL_HINT,
    NOOP_ACTION,
    SETTLE_STEPS,
    LiberoNotInstalled,
    get_task,
    load_init_states,
    max_steps_for,
    quiet_robosuite,
)
from vlaforge.envs.render import CameraDef, CameraRenderer, image_size_pair  # noqa: E402
from vlaforge.types import Observation  # noqa: E402

CAMERAS: dict[str, CameraDef] = {
    "image": CameraDef("agentview", True, "front view of the scene", convention="opengl_rot180"),
    "wrist_image": CameraDef("robot0_eye_in_hand", True, "wrist camera", convention="opengl_rot180"),
}
DEFAULT_CAMERAS = ("image", "wrist_image")
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
               "gripper_qpos_left", "gripper_qpos_right"]  # fmt: skip
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
ROBOT_TYPE = "panda"
DEFAULT_MESH_CELLS = 16
RENDER_GEOM_GROUPS = (1, 2)  # robosuite hides group 0 (collision meshes)
LAYOUT_TOLERANCE = 1e-3  # a training layout this close (m) to an official state is rejected


class LazyFrames(Mapping[str, np.ndarray]):
    """The camera frames of one simulator state, rendered when first read and then kept.

    A rollout asks the policy for a new chunk only every few steps (openpi replans every 5), so most
    observations are never looked at: rendering them on demand makes those steps cost physics only.
    Reading a frame after the env has moved on renders the saved joint positions on a scratch
    `MjData` (kinematics only), so the frame is always the one of the step it belongs to.
    """

    def __init__(self, env: LiberoEnv) -> None:
        self._env = env
        self._qpos = env.sim.data._data.qpos.copy()  # (nq,) the state these frames show
        self._frames: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._frames:
            if name not in self._env.cameras:
                raise KeyError(name)
            self._frames[name] = self._env._render_camera(name, self._qpos)
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env.cameras)

    def __len__(self) -> int:
        return len(self._env.cameras)

    def __repr__(self) -> str:
        return f"LazyFrames({list(self._env.cameras)}, rendered={list(self._frames)})"


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite's (x, y, z, w) quaternion -> axis-angle (3,), as robosuite's `quat2axisangle`."""
    q = np.asarray(quat_xyzw, dtype=np.float64).copy()
    q[3] = min(max(q[3], -1.0), 1.0)
    den = math.sqrt(1.0 - q[3] * q[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(q[3]) / den


def _control_env_class() -> Any:
    quiet_robosuite()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import robosuite  # noqa: F401  (prints macro warnings through its logger)
            from libero.libero.envs.env_wrapper import ControlEnv
    except ImportError as e:
        raise LiberoNotInstalled(INSTALL_HINT) from e
    return ControlEnv


class LiberoEnv:
    """One LIBERO task as a vlaforge `Env`.

    Attributes: task ('libero_goal/turn_on_the_stove'), suite, instruction, fps (20), max_steps
    (the suite's limit, settling steps not counted), cameras (name -> (H, W)), state_dim 8,
    action_dim 7, split, seed and config_id (the official state index, or the seed of a sampled layout).
    """

    state_dim = 8
    action_dim = 7

    def __init__(
        self,
        task: str,
        *,
        split: str = "train",
        cameras: tuple[str, ...] | list[str] = DEFAULT_CAMERAS,
        image_size: int | tuple[int, int] = (128, 128),
        instruction: str | None = None,
        mesh_cells: int | None = DEFAULT_MESH_CELLS,
        max_steps: int | None = None,
        watch_tasks: tuple[str, ...] | list[str] = (),
        physics: str = "fast",
    ) -> None:
        if physics not in ("fast", "robosuite"):
            raise ValueError(f"physics must be 'fast' or 'robosuite', got {physics!r}")
        self.physics = physics
        if split not in ("train", "eval"):
            raise ValueError(
                f"split must be 'train' (sampled layouts) or 'eval' (official states), got {split!r}"
            )
        self.spec_task = get_task(task)
        self.task = self.spec_task.full_name
        self.suite = self.spec_task.suite
        self.split = split
        size = image_size_pair(image_size)
        cameras = list(cameras)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(
                f"cameras {cameras} do not exist in LIBERO; its cameras are {', '.join(CAMERAS)} "
                "(a policy trained on another simulator's data cannot run here)"
            )
        self.cameras: dict[str, tuple[int, int]] = {name: size for name in cameras}
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError(f"instruction must be a string or None, got {instruction!r}")
        # "" is allowed on purpose: the empty-instruction language test
        self._fixed_instruction = instruction
        self.instruction = instruction if instruction is not None else self.spec_task.instruction
        self.fps = CONTROL_HZ
        self.max_steps = int(max_steps) if max_steps is not None else max_steps_for(self.suite)

        started = time.perf_counter()
        ControlEnv = _control_env_class()
        with contextlib.redirect_stdout(io.StringIO()):
            self._env = ControlEnv(
                bddl_file_name=self.spec_task.bddl_file,
                has_offscreen_renderer=False,
                use_camera_obs=False,
                hard_reset=False,  # keep one MjModel for the whole life of the env (and of our GL context)
                horizon=100_000,  # we count steps ourselves
                ignore_done=True,
            )
        self._init_states = load_init_states(self.spec_task)
        self.sim = self._env.sim
        self._watched = self._watched_goals(watch_tasks)
        self._reached: set[str] = set()
        model = self.sim.model._model
        render_model, self.mesh_stats = None, None
        if mesh_cells:
            from vlaforge.envs.libero.meshes import decimated_copy

            render_model, self.mesh_stats = decimated_copy(model, int(mesh_cells))
        self.mesh_cells = mesh_cells
        try:
            self._renderer = CameraRenderer(
                model,
                self.cameras,
                camera_defs=CAMERAS,
                render_model=render_model,
                geom_groups=RENDER_GEOM_GROUPS,
            )
        except Exception as e:  # EGL missing or no display: say what to install
            self._env.close()
            raise RuntimeError(
                f"could not create an off-screen GL context for LIBERO ({type(e).__name__}: {e}); "
                "install the Debian packages libegl1 libgl1-mesa-dri and set MUJOCO_GL=egl"
            ) from e
        self.build_seconds = time.perf_counter() - started

        # False: observations carry no images (experts, previews). True: frames are rendered when
        # first read (`LazyFrames`); `eager_render=True` renders every step up front instead.
        self.render_images = True
        self.eager_render = False
        self._scratch: Any = None  # MjData for rendering a past state
        self.seed: int | None = None
        self.config_id: int | None = None
        self._raw: dict[str, np.ndarray] | None = None
        self._steps = 0
        self._closed = False
        self._expert: Any = None

    # -- Env protocol -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode (see the module docstring for the two splits) and let objects settle."""
        self._check_open()
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        saved = np.random.get_state()  # robosuite's placement samplers draw from numpy's global RNG
        try:
            np.random.seed(self.seed % 2**32)
            if self.split == "eval":
                self.config_id = self.seed % len(self._init_states)
                self._reset_sim()
                self._env.set_init_state(self._init_states[self.config_id])
                raw = self._settle()
            else:
                self.config_id = self.seed  # a sampled layout is named by its seed
                for attempt in range(100):
                    raw = self._sample_layout((self.seed + 7919 * attempt) % 2**32)
                    if self._near_official_state():
                        continue
                    raw = self._settle()
                    if self._layout_is_at_rest():
                        break
                else:  # pragma: no cover - the placement regions are continuous
                    raise RuntimeError(
                        f"{self.task}: could not sample a resting layout away from the official states"
                    )
        finally:
            np.random.set_state(saved)
        self._raw = raw
        self._steps = 0
        self._reached = set()
        if self._expert is not None:
            self._expert.reset(self)
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        """Apply a 7-D action (clipped to [-1, 1]). done: the step limit is reached. Success does
        not end the episode: callers decide (evaluation stops at the first success)."""
        self._check_open()
        if self._raw is None:
            raise RuntimeError(f"{self.task}: call reset() before step()")
        if self._steps >= self.max_steps:
            raise RuntimeError(f"{self.task}: episode is over after {self.max_steps} steps; call reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action: expected shape ({self.action_dim},), got {tuple(action.shape)}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or Inf: {action}")
        action = np.clip(action, -1.0, 1.0)
        raw, reward = self._fast_step(action) if self.physics == "fast" else self._env.step(action)[:2]
        self._raw = raw
        self._steps += 1
        for name, goal in self._watched.items():
            if name not in self._reached and all(self.problem._eval_predicate(p) for p in goal):
                self._reached.add(name)
        info = {
            "success": bool(self._env.check_success()),
            "config_id": self.config_id,
            "seed": self.seed,
            "step": self._steps,
        }
        return self._observation(), float(reward), self._steps >= self.max_steps, info

    def close(self) -> None:
        if not self._closed:
            self._renderer.close()
            with contextlib.suppress(Exception):
                self._env.close()
            self._closed = True

    # -- extras -------------------------------------------------------------------------------

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action (privileged simulator state): float32 (7,) in [-1, 1]."""
        if self._raw is None:
            raise RuntimeError(f"{self.task}: call reset() before expert_action()")
        if self._expert is None:
            from vlaforge.envs.libero.experts import make_expert

            self._expert = make_expert(self.task)
            self._expert.reset(self)
        return np.clip(np.asarray(self._expert.act(self), dtype=np.float32), -1.0, 1.0)

    def episode_outcomes(self) -> dict[str, Any] | None:
        """With `watch_tasks`: {"goals_reached": the watched goals that held at some step of this episode,
        "goals_watched": all of them}. The language tests give a task another task's instruction and count
        how often the policy does *that* task instead (LIBERO-Goal: ten goals in one scene), or this
        task's goal with another object of the same kind (``"<task>:<object>-><twin>"``, LIBERO-Spatial)."""
        if not self._watched:
            return None
        return {"goals_reached": sorted(self._reached), "goals_watched": sorted(self._watched)}

    def check_success(self) -> bool:
        return bool(self._env.check_success())

    @property
    def problem(self) -> Any:
        """LIBERO's problem object (objects, fixtures, BDDL predicates): for experts, never for policies."""
        return self._env.env

    @property
    def raw_observation(self) -> dict[str, np.ndarray]:
        """robosuite's observation dict of the current step (privileged; images not included)."""
        if self._raw is None:
            raise RuntimeError(f"{self.task}: call reset() first")
        return self._raw

    @property
    def steps(self) -> int:
        return self._steps

    def render(self) -> dict[str, np.ndarray]:
        """Current frames of all cameras: name -> uint8 (H, W, 3)."""
        qpos = self.sim.data._data.qpos.copy()
        return {name: self._render_camera(name, qpos) for name in self.cameras}

    def _render_camera(self, name: str, qpos: np.ndarray) -> np.ndarray:
        """Frame of camera `name` for joint positions `qpos`, posed by kinematics on a scratch MjData.

        After `mj_step` the live data's body poses are those of the state *before* the last
        integration substep (2 ms behind qpos); posing from qpos makes a frame depend on the state
        alone, whenever it is rendered."""
        self._check_open()
        import mujoco

        model = self.sim.model._model
        if self._scratch is None:
            self._scratch = mujoco.MjData(model)
        self._scratch.qpos[:] = qpos
        mujoco.mj_kinematics(model, self._scratch)
        mujoco.mj_camlight(model, self._scratch)
        return self._renderer.render(self._scratch, name)

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LiberoEnv(task={self.task!r}, split={self.split!r}, cameras={self.cameras}, seed={self.seed})"
        )

    # -- internals ----------------------------------------------------------------------------

    def _fast_step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """robosuite's `MujocoEnv.step` (+ LIBERO's) without its redundant forward passes.

        robosuite runs `sim.forward()` before every 2 ms substep and then its OSC controller runs
        `sim.forward()` again on the same state before reading it (`Controller.update`), so each of the
        25 substeps costs two full forward passes plus `mj_step`. We drop the first, and give the
        controller only the stages whose results it reads (`_controller_forward`: kinematics, the
        mass matrix, velocities and bias forces, ~10x cheaper; `mj_step` runs its own full forward
        pass anyway): ~45 % less time per control step. Trajectories agree with
        `physics="robosuite"` to ~1e-11 m over 150 steps (floating-point, tested), not bit for bit;
        choose "robosuite" for bit-exact parity with robosuite's loop. robosuite's force-torque
        history buffers (`recent_ee_forcetorques`, read by no LIBERO observation) see sensor values
        one substep old."""
        env = self._env.env
        env.timestep += 1
        policy_step = True
        sim = env.sim
        sim.forward = self._controller_forward  # an instance attribute shadows MjSim.forward
        try:
            for _ in range(int(env.control_timestep / env.model_timestep)):
                env._pre_action(action, policy_step)  # the controller calls sim.forward() before reading
                sim.step()
                env._update_observables()
                policy_step = False
        finally:
            del sim.forward
        env.cur_time += env.control_timestep
        reward, _, _ = env._post_action(action)
        return env._get_observations(), float(reward)

    def _controller_forward(self) -> None:
        """The part of `mj_forward` that robosuite's OSC controller reads (site poses, Jacobians,
        the mass matrix `qM`, `qfrc_bias`), computed by the same MuJoCo stages, so bit-identical."""
        import mujoco

        model, data = self.sim.model._model, self.sim.data._data
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_crb(model, data)
        mujoco.mj_comVel(model, data)
        mujoco.mj_rne(model, data, 0, data.qfrc_bias)

    def _reset_sim(self) -> dict[str, np.ndarray]:
        with contextlib.redirect_stdout(io.StringIO()):
            raw = self._env.reset()
        # robosuite keeps the gripper's last command across a soft reset (its PandaGripper integrates
        # commands in `current_action`); a hard reset, which openpi and LeRobot use, builds a fresh
        # gripper with zeros. Zero it so that every episode is a function of its seed alone.
        for robot in self._env.robots:
            if getattr(robot, "gripper", None) is not None:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
        return raw

    def _sample_layout(self, seed: int) -> dict[str, np.ndarray]:
        """A fresh layout drawn with `seed` from the BDDL placement regions.

        LIBERO places an object that sits on or in a fixture (a bowl on the cabinet, in a drawer) at
        `fixture position + fixture rotation @ site position`, reading the site position from the
        simulator. That is right only while the fixture is still at the origin, as it is on LIBERO's
        hard reset (the model freshly built from XML); on the soft reset used here the fixture already
        stands where the previous episode put it, its offset is counted twice and the object is
        dropped from mid-air (a bowl 1 m above the cabinet). Putting the fixtures back at the origin
        first reproduces the hard reset's placement.
        """
        if self._places_on_fixtures:
            model = self.sim.model._model
            for fixture in self._env.env.fixtures_dict.values():
                body = model.body(fixture.root_body).id
                model.body_pos[body] = 0.0
                model.body_quat[body] = (1.0, 0.0, 0.0, 0.0)
        np.random.seed(seed)
        return self._reset_sim()

    def _settle(self) -> dict[str, np.ndarray]:
        """SETTLE_STEPS no-op steps (openpi's and LeRobot's evaluations wait the same)."""
        noop = np.asarray(NOOP_ACTION)
        for _ in range(SETTLE_STEPS):
            raw = self._fast_step(noop)[0] if self.physics == "fast" else self._env.step(noop)[0]
        return raw

    def _layout_is_at_rest(self) -> bool:
        """After settling, no object still moves faster than 5 cm/s, and none lies 15 cm below the
        lowest object of every official state (those are recorded before settling, a few cm above
        their support): now and then a sampled layout knocks an object off the table."""
        import mujoco

        model, data = self.sim.model._model, self.sim.data._data
        free = np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE)  # the movable objects
        heights = model.jnt_qposadr[free] + 2  # z of each object in qpos
        floor = self._init_states[:, 1 + heights].min() - 0.15  # state = (time, qpos, qvel)
        speeds = [np.linalg.norm(data.qvel[v : v + 3]) for v in model.jnt_dofadr[free]]
        return bool(max(speeds, default=0.0) <= 0.05 and (data.qpos[heights] >= floor).all())

    @property
    def _places_on_fixtures(self) -> bool:
        sampler = getattr(self._env.env, "conditional_placement_initializer", None)
        return bool(getattr(sampler, "samplers", None))

    def _near_official_state(self) -> bool:
        """True when every object joint is within LAYOUT_TOLERANCE of some official state."""
        qpos = self.sim.data.qpos
        n_robot = 9  # 7 arm joints + 2 fingers come first in LIBERO's state vector
        current = np.asarray(qpos[n_robot:], dtype=np.float64)
        official = self._init_states[:, 1 + n_robot : 1 + len(qpos)]  # state = (time, qpos, qvel)
        return bool(np.any(np.all(np.abs(official - current) < LAYOUT_TOLERANCE, axis=1)))

    def _watched_goals(self, tasks: tuple[str, ...] | list[str]) -> dict[str, list[list[str]]]:
        """Other tasks' BDDL goals (those that differ from this task's and whose objects are all in this scene:
        a LIBERO-Object scene holds only some of the ten groceries), checked every step, and this task's
        goal reached with the wrong object (`_twin_goals`). `episode_outcomes()["goals_watched"]` lists them."""
        if not tasks:
            return {}
        from libero.libero.envs.bddl_utils import robosuite_parse_problem

        names = (
            set(self.problem.objects_dict)
            | set(self.problem.fixtures_dict)
            | set(self.problem.object_sites_dict)
        )
        own = self.problem.parsed_problem["goal_state"]
        goals: dict[str, list[list[str]]] = {}
        for task in tasks:
            other = get_task(task)
            goal = robosuite_parse_problem(other.bddl_file)["goal_state"]
            if any(arg not in names for pred in goal for arg in pred[1:]):
                continue  # cannot be done in this scene: not watched (the benchmarks then report n/a)
            if (
                goal != own
            ):  # LIBERO-Spatial: every task's goal is "bowl 1 on the plate"; nothing to tell apart
                goals[other.full_name] = goal
        goals.update(self._twin_goals(own))
        return goals

    def _twin_goals(self, goal: list[list[str]]) -> dict[str, list[list[str]]]:
        """This task's goal with one object swapped for another of its kind in the scene, keyed
        ``"<task>:<object>-><twin>"``: LIBERO-Spatial's "put the *other* black bowl on the plate", the
        mistake a policy makes when it reads the instruction's spatial description wrong (or not at all)."""
        objects = sorted(self.problem.objects_dict)
        kind = {name: name.rsplit("_", 1)[0] for name in objects}  # akita_black_bowl_2 -> akita_black_bowl
        twins: dict[str, list[list[str]]] = {}
        for arg in sorted({a for pred in goal for a in pred[1:] if a in kind}):
            for twin in (n for n in objects if n != arg and kind[n] == kind[arg]):
                twins[f"{self.task}:{arg}->{twin}"] = [
                    [pred[0], *(twin if a == arg else a for a in pred[1:])] for pred in goal
                ]
        return twins

    def state_vector(self) -> np.ndarray:
        raw = self.raw_observation
        return np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)  # (8,)

    def _observation(self) -> Observation:
        images: Mapping[str, np.ndarray] = {}
        if self.render_images:
            images = self.render() if self.eager_render else LazyFrames(self)
        return Observation(images=images, state=self.state_vector(), instruction=self.instruction)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.task}: the environment is closed")
