"""The small typed contracts every part of vlaforge speaks.

Shapes are written in comments; symbols used throughout the code base:

    B  batch            T  history length (observation steps t-k..t, T = k + 1)
    H  action chunk     A  action dimension        S  state dimension
    N  tokens           D  model width             Hi, Wi  image height / width
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
# RT-2 co-training batches (data/cotrain.py): True on the vision-language rows, and their target text.
IS_VL_KEY = "is_vl"
VL_TARGET_KEY = "vl_target"


@dataclass
class Observation:
    """One observation of the robot, in the robot's own units.

    images: camera name -> uint8 (Hi, Wi, 3), upright RGB.
    state:  float32 (S,) proprioception (e.g. end-effector position + gripper opening).
    instruction: the natural-language task.
    image_masks: camera name -> False when that camera is missing/invalid this step.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    instruction: str
    image_masks: dict[str, bool] | None = None

    def validate(
        self, cameras: dict[str, tuple[int, int]] | None = None, state_dim: int | None = None
    ) -> None:
        """Raise ValueError naming the offending key if the observation does not match the spec."""
        if cameras is not None:
            for name, (h, w) in cameras.items():
                if name not in self.images:
                    raise ValueError(
                        f"observation is missing camera '{name}' (have {sorted(self.images)}); "
                        f"expected uint8 image of shape ({h}, {w}, 3)"
                    )
                img = self.images[name]
                if img.shape != (h, w, 3) or img.dtype != np.uint8:
                    raise ValueError(
                        f"camera '{name}': expected uint8 ({h}, {w}, 3), got {img.dtype} {tuple(img.shape)}; "
                        "resize the image or set the policy's image size"
                    )
        state = np.asarray(self.state)
        if state_dim is not None and state.shape != (state_dim,):
            raise ValueError(f"observation.state: expected shape ({state_dim},), got {tuple(state.shape)}")
        if not np.all(np.isfinite(state)):
            raise ValueError("observation.state contains NaN or Inf")


@dataclass
class ActionChunk:
    """A chunk of future actions in the robot's units: float32 (H, A) at `control_hz`."""

    actions: np.ndarray
    control_hz: float
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class FeatureSpec:
    """One dataset feature, as described in LeRobot's meta/info.json.

    dtype: "float32" | "int64" | "bool" | "string" | "video" | "image"; shape excludes the time axis.
    """

    dtype: str
    shape: tuple[int, ...]
    names: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape)}
        d["names"] = self.names
        return d


@runtime_checkable
class Env(Protocol):
    """A simulated (or real) robot task.

    `instruction` is the language instruction for the current episode; `info["success"]` is set
    on every step.
    """

    task: str
    instruction: str
    fps: float
    max_steps: int

    def reset(self, seed: int | None = None) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PolicySpec:
    """What a policy consumes and produces; sent to clients and checked on every observation.

    cameras: camera name (without the "observation.images." prefix) -> (height, width).
    history: T, number of observation steps the policy reads (oldest first).
    chunk:   H, number of actions it predicts per call.
    """

    cameras: dict[str, tuple[int, int]]
    state_dim: int
    action_dim: int
    chunk: int
    history: int = 1
    fps: float = 10.0


@runtime_checkable
class PolicyLike(Protocol):
    """Anything that can act: a trained `vlaforge.policies.octo.policy.Policy`, a scripted expert, a remote client.

    `predict` takes the last `spec.history` observations (oldest first; a single Observation is
    accepted when history == 1) and returns an ActionChunk in robot units.
    """

    spec: PolicySpec

    def predict(self, observations: Observation | list[Observation], **kwargs: Any) -> ActionChunk: ...
