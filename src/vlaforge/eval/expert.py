"""The environment's scripted expert wrapped as a `PolicyLike`: the sanity baseline of every table.

If the expert does not reach ~100 % on the eval split, the environment, the seeds or the success
check are wrong, not the learned policy. The expert reads the simulator's privileged state
through `env.expert_action()`, so `rollout` hands it the environment via `attach_env(env)`
before each episode (the only policy-side hook of the rollout loop).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from vlaforge.types import ActionChunk, Env, Observation, PolicySpec


class ExpertPolicy:
    """Acts with `env.expert_action()`, one action per call (chunk H = 1, history T = 1).

    cameras / image_size only decide what the environment renders (for videos); the expert
    ignores images (`reads_images = False`: the evaluation renders only the episodes it films).
    spec.fps and spec.action_dim follow the attached environment.
    """

    reads_images = False

    def __init__(
        self,
        cameras: tuple[str, ...] = ("corner", "gripper"),
        image_size: tuple[int, int] = (128, 128),
        action_dim: int = 4,
    ) -> None:
        self.spec = PolicySpec(
            cameras={c: (int(image_size[0]), int(image_size[1])) for c in cameras},
            state_dim=0,  # privileged: reads the simulator, not observation.state
            action_dim=action_dim,
            chunk=1,
            history=1,
            fps=10.0,
        )
        self._env: Env | None = None

    def attach_env(self, env: Env) -> None:
        if not callable(getattr(env, "expert_action", None)):
            raise TypeError(
                f"env '{getattr(env, 'task', env)}' has no expert_action(); cannot evaluate the expert"
            )
        self._env = env
        action_dim = getattr(env, "action_dim", None)  # optional extra of the Env protocol
        self.spec = replace(self.spec, fps=float(env.fps), action_dim=int(action_dim or self.spec.action_dim))

    def predict(self, observations: Observation | list[Observation], **kwargs: Any) -> ActionChunk:
        if self._env is None:
            raise RuntimeError("ExpertPolicy.predict before attach_env(env); rollout() attaches it")
        action = np.asarray(self._env.expert_action(), dtype=np.float32).reshape(1, -1)  # (1, A)
        if action.shape[1] != self.spec.action_dim:
            self.spec = replace(self.spec, action_dim=int(action.shape[1]))
        return ActionChunk(actions=action, control_hz=float(self._env.fps), info={"expert": True})
