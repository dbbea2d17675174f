"""`torchvision.transforms`: the three classic transforms LeRobot 0.3.2 uses, on tensors.

* ``ToTensor``: PIL image / uint8 (H, W, C) array -> float32 (C, H, W) in [0, 1]
  (`lerobot/datasets/utils.py: hf_transform_to_torch`, for datasets that store images, not videos);
* ``CenterCrop`` / ``RandomCrop``: the diffusion policy's image crop (``crop_shape``), on (..., H, W)
  tensors, one crop for the whole batch (torchvision's behaviour); no padding (crop must fit);
* ``InterpolationMode``: the enum alone (transformers' image-processing modules import it when
  torchvision is importable; π0's Gemma import path goes through them). Nothing here resizes with it.
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from torchvision.transforms import v2


class InterpolationMode(enum.Enum):
    """torchvision's interpolation names (values as torchvision's)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    if len(size) == 1:
        return int(size[0]), int(size[0])
    if len(size) != 2:
        raise ValueError(f"crop size must be an int or (h, w), got {size!r}")
    return int(size[0]), int(size[1])


def _check_fits(x: torch.Tensor, th: int, tw: int, what: str) -> tuple[int, int]:
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if th > h or tw > w:
        raise ValueError(
            f"{what}: crop ({th}, {tw}) is larger than the image ({h}, {w}); the stub does not pad"
        )
    return h, w


class CenterCrop(nn.Module):
    """Crop the centre (th, tw) of (..., H, W); offsets round((H - th) / 2), as torchvision."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _size_pair(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self.size
        h, w = _check_fits(x, th, tw, "CenterCrop")
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return x[..., top : top + th, left : left + tw]


class RandomCrop(nn.Module):
    """Crop (th, tw) at a uniformly random offset, the same offset for every image of the tensor."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _size_pair(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self.size
        h, w = _check_fits(x, th, tw, "RandomCrop")
        top = int(torch.randint(0, h - th + 1, size=(1,)).item())
        left = int(torch.randint(0, w - tw + 1, size=(1,)).item())
        return x[..., top : top + th, left : left + tw]


class ToTensor:
    """PIL image or uint8 numpy (H, W, C) -> float32 tensor (C, H, W) / 255; other dtypes keep their values."""

    def __call__(self, pic: Any) -> torch.Tensor:
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise TypeError(f"ToTensor: expected an (H, W[, C]) image, got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()  # (C, H, W)
        return t.float().div(255) if t.dtype == torch.uint8 else t


__all__ = ["CenterCrop", "RandomCrop", "ToTensor", "v2"]
