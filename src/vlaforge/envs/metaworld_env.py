"""Meta-World tasks behind vlaforge's `Env` protocol: images + proprio in, 4-D Cartesian actions out.

The policy sees only what a real robot would: camera images, the end-effector position and the
gripper opening (the first 4 of Meta-World's 39-D observation) and a language instruction. The full
39-D observation (object poses, goal position) is kept privately for the task's scripted expert,
which `expert_action()` exposes for recording demonstrations and for baselines.

`reset(seed)` is reproducible. Under our protocol (the default) the seed picks configuration
`seed % 50` of the split's frozen list (see `configs.py`), seeds Meta-World's generators, and picks
the instruction phrasing. Under `protocol="lerobot"` (LeRobot's evaluation, `protocol.py`) the seed
alone draws the object and goal positions, as `lerobot-eval` does, the instruction is LeRobot's task
description and the camera is LeRobot's `corner2` at 480x480.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless GL for anything that uses mujoco.Renderer

import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from vlaforge.envs.configs import (  # noqa: E402
    N_CONFIGS,
    config_fingerprint,
    lerobot_task,
    split_seed,
    task_configs,
)
from vlaforge.envs.instructions import instruction_for_seed  # noqa: E402
from vlaforge.envs.protocol import PROTOCOLS, get_protocol  # noqa: E402
from vlaforge.envs.render import CameraRenderer, image_size_pair  # noqa: E402
from vlaforge.envs.tasks import canonical_task  # noqa: E402
from vlaforge.types import Observation  # noqa: E402

STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_opening"]
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]
DEFAULT_CAMERAS = PROTOCOLS["vlaforge"].cameras  # ("corner", "gripper")


class MetaWorldEnv:
    """One Meta-World task as a vlaforge `Env`.

    Attributes: task ('pick-place-v3'), instruction (current episode), fps (control rate, 80 Hz),
    max_steps (500), cameras (name -> (H, W)), state_dim (4), action_dim (4), protocol ('vlaforge' |
    'lerobot'), split and its benchmark_seed, config_id and seed of the current episode (under
    'lerobot' the layout is a function of the seed: config_id = seed, and the split does not apply).
    """

    state_dim = 4
    action_dim = 4

    def __init__(
        self,
        task: str,
        *,
        split: str = "train",
        cameras: tuple[str, ...] | list[str] | None = None,
        image_size: int | tuple[int, int] | None = None,
        instruction: str | None = None,
        protocol: str = "vlaforge",
    ) -> None:
        import metaworld.env_dict
        from metaworld.policies import ENV_POLICY_MAP

        self.task = canonical_task(task)
        spec = get_protocol(protocol)
        self.protocol = spec.name
        self.split = split
        self.benchmark_seed = split_seed(split)  # validates split
        # ours: the split's 50 frozen layouts; LeRobot's: the seed draws the layout (no list)
        self._configs = task_configs(self.task, split) if spec.splits else ()
        size = image_size_pair(spec.image_size if image_size is None else image_size)
        cameras = list(spec.cameras if cameras is None else cameras)
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras has duplicates: {cameras}")
        spec.check_cameras(cameras)
        if instruction is None:
            instruction = spec.instruction(self.task)  # LeRobot: its fixed task description
        self.cameras: dict[str, tuple[int, int]] = {name: size for name in cameras}
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ValueError(f"instruction must be a non-empty string or None, got {instruction!r}")
        self._fixed_instruction = instruction
        self.instruction = instruction if instruction is not None else instruction_for_seed(self.task, 0)

        self._env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[self.task]()
        if not spec.splits:
            # LeRobot's env (src/lerobot/envs/metaworld.py `_ensure_env`): MT1(task, seed=42)'s first task
            # sets the task's constants and partially_observable=False; then the layout is unfrozen and
            # drawn from env.np_random, which reset(seed) seeds.
            self._env.set_task(lerobot_task(self.task))
            self._env._freeze_rand_vec = False
            self._env.seeded_rand_vec = True
        self._expert = ENV_POLICY_MAP[self.task]()
        self._renderer = CameraRenderer(self._env.model, self.cameras)
        self.fps = float(1.0 / self._env.dt)  # frame_skip 5 x timestep 2.5 ms = 12.5 ms -> 80 Hz
        self.max_steps = int(self._env.max_path_length)

        # False: observations carry no images (a cheap physics-only pass, e.g. to find out whether the
        # expert succeeds on a layout before paying for rendering). Leave True for policies.
        self.render_images = True
        self.seed: int | None = None
        self.config_id: int | None = None
        self._full_obs: np.ndarray | None = None  # (39,) privileged Meta-World observation
        self._steps = 0
        self._closed = False

    # -- Env protocol -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode on configuration `seed % 50` (LeRobot's protocol: on the layout that seed draws);
        a None seed draws one at random."""
        self._check_open()
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        if self._configs:
            self.config_id = self.seed % N_CONFIGS
            self._env.set_task(self._configs[self.config_id])
        else:
            self.config_id = self.seed
        self._env.seed(self.seed)  # LeRobot: env.seed(seed) then env.reset(), as here
        full_obs, _ = self._env.reset()
        self._full_obs = np.asarray(full_obs, dtype=np.float64)
        self._steps = 0
        if self._fixed_instruction is None:
            self.instruction = instruction_for_seed(self.task, self.seed)
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        """Apply a 4-D action in [-1, 1] (clipped): Δxyz of the hand and gripper effort (+1 closes).

        done is True when the episode reaches max_steps. Success does not end the episode: callers
        decide (evaluation stops at the first success, recording a few steps later).
        """
        self._check_open()
        if self._full_obs is None:
            raise RuntimeError(f"{self.task}: call reset() before step()")
        if self._steps >= self.max_steps:
            raise RuntimeError(f"{self.task}: episode is over after {self.max_steps} steps; call reset()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action: expected shape ({self.action_dim},), got {tuple(action.shape)}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or Inf: {action}")
        full_obs, reward, _, truncated, mw_info = self._env.step(np.clip(action, -1.0, 1.0))
        self._full_obs = np.asarray(full_obs, dtype=np.float64)
        self._steps += 1
        done = bool(truncated) or self._steps >= self.max_steps
        info = {
            "success": bool(mw_info["success"]),
            "config_id": self.config_id,
            "seed": self.seed,
            "step": self._steps,
        }
        return self._observation(), float(reward), done, info

    def close(self) -> None:
        if not self._closed:
            self._renderer.close()
            self._env.close()
            self._closed = True

    # -- extras -------------------------------------------------------------------------------

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state: float32 (4,) in [-1, 1].

        It reads the privileged full observation (object and goal positions), which policies never see.
        """
        if self._full_obs is None:
            raise RuntimeError(f"{self.task}: call reset() before expert_action()")
        with warnings.catch_warnings():  # experts warn on every call that their gains exceed [-1, 1]
            warnings.simplefilter("ignore", UserWarning)
            action = self._expert.get_action(self._full_obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    @property
    def config_fingerprint(self) -> tuple[float, ...]:
        """Fingerprint (see configs.config_fingerprint) of the current episode's configuration."""
        if self.config_id is None:
            raise RuntimeError(f"{self.task}: call reset() first")
        if not self._configs:  # LeRobot's protocol: the layout the seed drew
            return config_fingerprint(np.asarray(self._env._last_rand_vec, dtype=np.float64))
        return config_fingerprint(self._configs[self.config_id])

    @property
    def privileged_state(self) -> np.ndarray:
        """Meta-World's full (39,) observation: for experts and debugging, never for policies."""
        if self._full_obs is None:
            raise RuntimeError(f"{self.task}: call reset() first")
        return self._full_obs.copy()

    def render(self) -> dict[str, np.ndarray]:
        """Current frames of all cameras: name -> uint8 (H, W, 3)."""
        self._check_open()
        return self._renderer.render_all(self._env.data)

    def __enter__(self) -> MetaWorldEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MetaWorldEnv(task={self.task!r}, protocol={self.protocol!r}, split={self.split!r}, cameras={self.cameras}, "
            f"config_id={self.config_id}, seed={self.seed})"
        )

    def _observation(self) -> Observation:
        assert self._full_obs is not None
        state = self._full_obs[: self.state_dim].astype(np.float32)  # (4,) hand xyz + gripper opening
        images = self.render() if self.render_images else {}
        return Observation(images=images, state=state, instruction=self.instruction)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.task}: the environment is closed")


def make_env(
    task: str,
    *,
    split: str = "train",
    cameras: tuple[str, ...] | list[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    instruction: str | None = None,
    protocol: str = "vlaforge",
) -> MetaWorldEnv:
    """Build a Meta-World env. split 'train' and 'eval' reset from disjoint configuration lists;
    `instruction` fixes the language instruction (default: a phrasing chosen from each reset's seed).
    cameras / image_size default to the protocol's (ours: corner + gripper at 128x128; 'lerobot':
    corner2 at 480x480, and no other camera)."""
    return MetaWorldEnv(
        task, split=split, cameras=cameras, image_size=image_size, instruction=instruction, protocol=protocol
    )
