"""Image preprocessing for pretrained vision towers: uint8 (B, H, W, 3) -> normalized float (B, 3, S, S).

Each tower was trained on one pixel distribution and must be fed exactly that:

* **SigLIP** (``google/siglip-*``, PaliGemma's encoder): resize to the model's square size
  (bicubic), scale to [0, 1], then ``(x - 0.5) / 0.5`` -> **[-1, 1]**.
* **DINOv2** (``facebook/dinov2-*``): resize (bicubic), scale to [0, 1], then ImageNet
  ``(x - mean) / std`` with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

OpenVLA (prismatic, ``resize-naive``) resizes the whole frame straight to 224 x 224 for both towers,
without the aspect-preserving resize + center crop of the Hugging Face DINOv2 processor; we do the
same. Resizing uses torch's antialiased bicubic, which is close to (not bit-identical with) PIL's
bicubic that the reference pipelines use; the result is clamped to [0, 1] before normalization, as
PIL's uint8 output is.

``resize="pad-top-left"`` instead fits the frame into the square without distortion and pads it with
black on the top and left (bilinear, not antialiased): LeRobot 0.3's π0 preprocessing, which the π0
converter selects for LeRobot 0.3 checkpoints (``resize_imgs_with_padding`` in their config).
``resize="pad-centre"`` is the same fit with the padding split between both sides (and frames already
of the size left alone): openpi's and LeRobot >= 0.4's ``resize_with_pad_torch``, selected for their π0
/ π0.5 checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlaforge.transforms.image import (
    resize,
    resize_with_pad_centred,
    resize_with_pad_top_left,
    to_float_image,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
RESIZE_MODES = ("stretch", "pad-top-left", "pad-centre")


@dataclass(frozen=True)
class ImagePreprocess:
    """What a tower expects: a ``size`` x ``size`` image normalized as ``(x / 255 - mean) / std``."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize: str = "stretch"  # "pad-top-left" (LeRobot 0.3's π0) or "pad-centre" (openpi, LeRobot >= 0.4)

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"ImagePreprocess.size must be a positive int, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"ImagePreprocess needs 3 means and 3 positive stds, got {self.mean}, {self.std}"
            )
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(
                f"ImagePreprocess.interpolation must be bicubic or bilinear, got {self.interpolation!r}"
            )
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"image resize must be one of {RESIZE_MODES}, got {self.resize!r}")

    @property
    def output_range(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (min, max) of the output: what uint8 0 and 255 map to."""
        lo = tuple((0.0 - m) / s for m, s in zip(self.mean, self.std, strict=True))
        hi = tuple((1.0 - m) / s for m, s in zip(self.mean, self.std, strict=True))
        return lo, hi


def siglip_preprocess(size: int = 224) -> ImagePreprocess:
    return ImagePreprocess(size, SIGLIP_MEAN, SIGLIP_STD)


def dinov2_preprocess(size: int = 224) -> ImagePreprocess:
    return ImagePreprocess(size, IMAGENET_MEAN, IMAGENET_STD)


def preprocess_images(images: torch.Tensor | np.ndarray, spec: ImagePreprocess) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float32 (B, 3, size, size) normalized for the tower."""
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x[None]
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 (B, H, W, 3) RGB frames, got {x.dtype} {tuple(x.shape)}; "
            "convert float images with (img * 255).round().to(torch.uint8) first"
        )
    return preprocess_float(to_float_image(x), spec)  # (B, 3, S, S)


def preprocess_float(x: torch.Tensor, spec: ImagePreprocess) -> torch.Tensor:
    """float (B, 3, H, W) in [0, 1] (e.g. augmented frames) -> float (B, 3, size, size) normalized for the
    tower: `preprocess_images` after its uint8 -> [0, 1] step."""
    if not x.is_floating_point() or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be float (B, 3, H, W) in [0, 1], got {x.dtype} {tuple(x.shape)}")
    if spec.resize == "pad-top-left":
        x = resize_with_pad_top_left(x, (spec.size, spec.size))  # (B, 3, S, S)
    elif spec.resize == "pad-centre":
        x = resize_with_pad_centred(x, (spec.size, spec.size))  # (B, 3, S, S)
    elif x.shape[-2:] != (spec.size, spec.size):
        x = resize(x, (spec.size, spec.size), spec.interpolation)  # (B, 3, S, S)
        x = x.clamp(0.0, 1.0)  # bicubic overshoots; PIL's uint8 output cannot
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # (B, 3, S, S)
