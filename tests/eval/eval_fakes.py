"""A 1-D "reach the target" env and a policy that outputs a known chunk, for the eval tests.

ReachEnv: the gripper starts at x = 0 and moves by clip(a, -0.1, 0.1) per step; success when
|x - target| < 0.05; at most 7 steps. Targets:
    reach-easy:  0.3 for every seed                      -> always succeeds after 3 steps
    reach-mixed: 0.3 * (seed % 3 + 1) = 0.3, 0.6, 0.9     -> succeeds after 3 / 6 steps, fails at 0.9
ConstantPolicy always predicts +0.1 for every action of its chunk, so the outcome of each seed is
known in advance. Observations carry the step index in state[1] and in every image pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.types import ActionChunk, Observation, PolicySpec

MAX_STEPS = 7
IMAGE = 32


def target_for(task: str, seed: int) -> float:
    return 0.3 if task == "reach-easy" else 0.3 * (seed % 3 + 1)


def expected_length(task: str, seed: int) -> tuple[bool, int]:
    """(success, length) that ConstantPolicy and the expert must produce."""
    steps = int(round(target_for(task, seed) / 0.1))
    return (True, steps) if steps <= MAX_STEPS else (False, MAX_STEPS)


class ReachEnv:
    def __init__(
        self,
        task: str = "reach-mixed",
        *,
        split: str = "eval",
        cameras: tuple[str, ...] = ("corner", "gripper"),
        image_size: tuple[int, int] = (IMAGE, IMAGE),
        instruction: str | None = None,
    ) -> None:
        self.task = task
        self.split = split
        self.cameras = tuple(cameras)
        self.image_size = tuple(image_size)
        self._override = instruction
        self.instruction = instruction or f"move the gripper to the {task} target"
        self.fps = 10.0
        self.max_steps = MAX_STEPS
        self.closed = False
        self.x = 0.0
        self.t = 0
        self.target = 0.0

    def _obs(self) -> Observation:
        h, w = self.image_size
        images = {c: np.full((h, w, 3), self.t % 256, dtype=np.uint8) for c in self.cameras}
        images[self.cameras[0]][..., 0] = 200  # cameras differ, so side-by-side order is visible
        state = np.array([self.x, self.t], dtype=np.float32)
        return Observation(images=images, state=state, instruction=self.instruction)

    def reset(self, seed: int | None = None) -> Observation:
        self.x, self.t = 0.0, 0
        self.target = target_for(self.task, int(seed or 0))
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float32)
        assert a.shape == (1,), a.shape
        self.x += float(np.clip(a[0], -0.1, 0.1))
        self.t += 1
        success = abs(self.x - self.target) < 0.05
        return self._obs(), -abs(self.x - self.target), self.t >= self.max_steps, {"success": success}

    def expert_action(self) -> np.ndarray:
        return np.array([np.clip(self.target - self.x, -0.1, 0.1)], dtype=np.float32)

    def close(self) -> None:
        self.closed = True


def make_fake_env(
    task: str,
    *,
    split: str = "eval",
    cameras: tuple[str, ...] | None = None,
    image_size: tuple[int, int] | None = None,
    instruction: str | None = None,
) -> ReachEnv:
    return ReachEnv(
        task,
        split=split,
        cameras=cameras or ("corner", "gripper"),
        image_size=image_size or (IMAGE, IMAGE),
        instruction=instruction,
    )


class ConstantPolicy:
    """Predicts a chunk of H actions all equal to +0.1; records what it was given. A chunk for one of
    `failing_instructions` is flagged ``info["decode_failed"]`` (as π0-FAST flags its fallback chunk)."""

    def __init__(self, history: int = 3, chunk: int = 4, failing_instructions: tuple[str, ...] = ()) -> None:
        self.spec = PolicySpec(
            cameras={"corner": (IMAGE, IMAGE), "gripper": (IMAGE, IMAGE)},
            state_dim=2,
            action_dim=1,
            chunk=chunk,
            history=history,
            fps=10.0,
        )
        self.calls: list[list[int]] = []  # step index of each observation given, oldest first
        self.instructions: list[str] = []
        self.generators: list[Any] = []
        self.failing_instructions = set(failing_instructions)

    def predict(self, observations: Observation | list[Observation], **kwargs: Any) -> ActionChunk:
        obs = observations if isinstance(observations, list) else [observations]
        assert len(obs) == self.spec.history
        self.calls.append([int(o.state[1]) for o in obs])
        self.instructions.append(obs[-1].instruction)
        self.generators.append(kwargs.get("generator"))
        actions = np.full((self.spec.chunk, self.spec.action_dim), 0.1, dtype=np.float32)  # (H, A)
        failed = obs[-1].instruction in self.failing_instructions
        info = {"decode_failed": True, "decode_error": "no_end_token: scripted"} if failed else {}
        return ActionChunk(actions=actions, control_hz=self.spec.fps, info=info)
