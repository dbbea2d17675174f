"""`torchvision.transforms.v2`: the `Transform` base class and `Identity`.

LeRobot's `lerobot/datasets/transforms.py` subclasses `Transform` (RandomSubsetApply, SharpnessJitter,
ImageTransforms) at import time and, with image transforms disabled (its default, and this benchmark's
setting), runs ``v2.Identity()``. ColorJitter and the other augmentations are not provided: enabling
LeRobot's image transforms with this stub fails with an AttributeError instead of running something else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from torchvision.transforms.v2 import functional


class Transform(nn.Module):
    """torchvision's v2 protocol, for tensors: forward(x) = transform(x, make_params([x]))."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        del flat_inputs
        return {}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement transform(inpt, params)")

    def _call_kernel(self, kernel: Callable[..., Any], inpt: Any, *args: Any, **kwargs: Any) -> Any:
        return kernel(inpt, *args, **kwargs)

    def forward(self, *inputs: Any) -> Any:
        params = self.make_params(list(inputs))
        out = tuple(self.transform(x, params) for x in inputs)
        return out[0] if len(out) == 1 else out


class Identity(Transform):
    """Returns its input unchanged."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return inpt


__all__ = ["Identity", "Transform", "functional"]
