"""RT-2 co-training: robot frames mixed with vision-language (VL) records at a fixed ratio.

RT-2 (REFERENCE.md) co-fine-tunes on robot data and web VL data (robot data ~50-66 % of the
mixture), which beats robot-only fine-tuning: the VLM keeps its language grounding. Here the VL stream
is a :class:`~vlaforge.data.vision_language.VisionLanguageDataset` and :class:`CoTrainingDataset`
interleaves it with a robot dataset so that the trainer's ordinary collate and step-indexed sampler
need no change:

* a *virtual epoch* of ``N = ceil(len(robot) / robot_fraction)`` indices: ``0 .. len(robot)-1`` are
  the robot frames (each once), the rest are VL records walked in seeded permutations. The trainer's
  sampler shuffles the epoch, so every batch holds robot and VL rows at the ratio on average, and
  index -> sample is a pure function of the seed (a resumed run sees the same data).
* every sample has the same keys (``default_collate`` needs that): robot samples gain
  ``is_vl = False`` and ``vl_target = ""``; a VL sample is a robot sample's layout with zero tensors,
  its image (resized to the camera) on the policy's main camera, ``task`` = the VL prompt,
  ``vl_target`` = the target text, zero actions whose ``action_is_pad`` is all True, ``is_vl = True``.

``VLAPolicy.loss`` (policies/vla/policy.py) trains VL rows with next-token cross-entropy on the target
after the prompt and robot rows on the action tokens as before; ``make_cotraining_policy``
(policies/vla/recipes.py) builds a policy whose vocabulary covers the VL texts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vlaforge.data.vision_language import VisionLanguageDataset
from vlaforge.transforms.image import resize
from vlaforge.types import IMAGE_PREFIX, IS_VL_KEY, VL_TARGET_KEY


def resize_image(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (h, w, 3) -> uint8 (height, width, 3), bilinear with antialiasing (identity if same size)."""
    if tuple(img.shape[:2]) == (height, width):
        return img
    x = resize(img.permute(2, 0, 1)[None].float(), (height, width))  # (1, 3, height, width) in [0, 255]
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)  # (height, width, 3)


class CoTrainingDataset(torch.utils.data.Dataset):
    """Robot samples and VL samples at ``robot_fraction`` : ``1 - robot_fraction`` (see the module docstring).

    robot: a `vlaforge.data.Dataset` (one dataset; mixtures are not supported by the VLA recipes).
    vl: the VL records. camera: the camera name the VL image goes to (the policy's main camera).
    """

    def __init__(
        self,
        robot: Any,
        vl: VisionLanguageDataset,
        robot_fraction: float = 0.5,
        seed: int = 0,
        *,
        camera: str,
    ):
        if not 0.0 < robot_fraction < 1.0:
            raise ValueError(
                f"robot_fraction={robot_fraction}: must be in (0, 1) (RT-2 used ~0.5-0.66; 1 = no co-training)"
            )
        if len(robot) < 1 or len(vl) < 1:
            raise ValueError(f"co-training needs non-empty datasets (robot {len(robot)}, VL {len(vl)})")
        key = IMAGE_PREFIX + camera
        if key not in robot.features:
            cams = [k.removeprefix(IMAGE_PREFIX) for k in robot.features if k.startswith(IMAGE_PREFIX)]
            raise ValueError(f"camera '{camera}' is not in the robot dataset (cameras: {cams})")
        self.robot, self.vl, self.seed = robot, vl, seed
        self.robot_fraction = float(robot_fraction)
        self.camera_key = key
        self.n_robot = len(robot)
        self.epoch_length = math.ceil(self.n_robot / self.robot_fraction - 1e-9)
        self.n_vl = self.epoch_length - self.n_robot
        rng = np.random.default_rng([seed, 0x766C])  # "vl"
        cycles = math.ceil(self.n_vl / len(vl))
        self._vl_order = np.concatenate([rng.permutation(len(vl)) for _ in range(cycles)])[: self.n_vl]
        self._template: dict[str, Any] | None = None

    # ------------------------------------------------------------------ passthrough for the CLI / trainer
    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.robot.features

    @property
    def stats(self) -> dict[str, Any]:
        return self.robot.stats

    @property
    def num_episodes(self) -> int:
        return int(self.robot.num_episodes)

    def __len__(self) -> int:
        return self.epoch_length

    def is_vl(self, i: int) -> bool:
        """Whether virtual index `i` reads a VL record (pure function of i; no I/O)."""
        return i >= self.n_robot

    # ------------------------------------------------------------------ samples
    def _vl_template(self) -> dict[str, Any]:
        """The layout of a robot sample with every tensor zeroed (built once per process)."""
        if self._template is None:
            item = self.robot[0]
            self._template = {
                k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in item.items()
            }
        return self._template

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.epoch_length:
            raise IndexError(f"co-training index {i} out of range for a virtual epoch of {self.epoch_length}")
        if not self.is_vl(i):
            item = dict(self.robot[i])
            item[IS_VL_KEY] = torch.tensor(False)
            item[VL_TARGET_KEY] = ""
            return item
        rec = self.vl[int(self._vl_order[i - self.n_robot])]
        out = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self._vl_template().items()}
        cam = out[self.camera_key]  # (H, W, 3) or (T, H, W, 3) with history
        h, w = cam.shape[-3], cam.shape[-2]
        out[self.camera_key] = resize_image(rec["image"], h, w).expand_as(cam).clone()
        for key in list(out):
            if key.startswith("action") and key.endswith("_is_pad"):
                out[key] = torch.ones_like(out[key], dtype=torch.bool)  # no action is supervised
        out["task"] = rec["prompt"]
        out[VL_TARGET_KEY] = rec["target"]
        out[IS_VL_KEY] = torch.tensor(True)
        return out

    def __repr__(self) -> str:
        return (
            f"CoTrainingDataset(robot {self.n_robot} frames, VL {len(self.vl)} records, "
            f"robot_fraction={self.robot_fraction}, epoch={self.epoch_length})"
        )
