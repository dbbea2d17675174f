"""`torchvision.transforms.functional`: ``InterpolationMode`` (timm imports the module and the enum at module
level) and ``pil_to_tensor`` (transformers' ``image_utils`` imports it once torchvision is importable).
No other kernel: any of them is an AttributeError."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchvision.transforms import InterpolationMode


def pil_to_tensor(pic: Any) -> torch.Tensor:
    """PIL image -> tensor (C, H, W) of the image's own dtype (no scaling), as torchvision's."""
    arr = np.array(pic, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


__all__ = ["InterpolationMode", "pil_to_tensor"]
