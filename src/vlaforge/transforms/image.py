"""Image transforms in pure torch (no torchvision: its PyPI build for our torch pin is CUDA-only).

Augmentation follows Octo's recipe in spirit: random resized crop (scale 0.8-1.0 of the area,
aspect 0.9-1.1, resized back to the input size) and color jitter (brightness, contrast,
saturation). It is applied only in training; evaluation and serving see the plain image.
All ops are batched: one affine_grid + grid_sample for the crops of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def to_float_image(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.movedim(-1, -3).float().div_(255.0)


def resize(images: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """float (B, 3, H, W) -> (B, 3, *size), antialiased ``mode`` (bilinear or bicubic); no-op when the
    size already matches. The one resize of the code base: Octo's stems, the vision towers'
    preprocessing (`models/vision/preprocess.py`), co-training's VL images (`data/cotrain.py`)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)


def resize_with_pad_top_left(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float (B, 3, H, W) -> (B, 3, *size): aspect-preserving bilinear resize (no antialiasing) so that the
    frame fits, then zero (black) padding on the top and the left, exactly as LeRobot 0.3's π0
    ``resize_with_pad`` (sizes truncated with ``int``; the interpolation runs even when nothing changes).
    π0 checkpoints trained by LeRobot 0.3 saw their frames this way (openpi pads centred instead)."""
    h, w = images.shape[-2:]
    th, tw = size
    ratio = max(w / tw, h / th)
    rh, rw = int(h / ratio), int(w / ratio)
    out = F.interpolate(images, size=(rh, rw), mode="bilinear", align_corners=False)  # (B, 3, rh, rw)
    return F.pad(out, (max(0, tw - rw), 0, max(0, th - rh), 0), value=0.0)  # (B, 3, th, tw)


def resize_with_pad_centred(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float (B, 3, H, W) in [0, 1] -> (B, 3, *size): aspect-preserving bilinear resize (no antialiasing),
    clamped to [0, 1], then zero (black) padding split between both sides (the odd pixel at the bottom /
    right), as openpi's and LeRobot >= 0.4's ``resize_with_pad_torch`` (sizes truncated with ``int``;
    frames already of ``size`` pass unchanged). π0 / π0.5 checkpoints from openpi and LeRobot >= 0.4 saw
    their frames this way."""
    h, w = images.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return images
    ratio = max(w / tw, h / th)
    rh, rw = int(h / ratio), int(w / ratio)
    out = F.interpolate(images, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    top, left = (th - rh) // 2, (tw - rw) // 2
    return F.pad(out, (left, tw - rw - left, top, th - rh - top), value=0.0)  # (B, 3, th, tw)


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.9, 1.1)
    saturation: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"AugmentConfig.crop_scale={self.crop_scale}: need 0 < lo <= hi <= 1")
        if self.brightness < 0:
            raise ValueError(f"AugmentConfig.brightness={self.brightness} must be >= 0")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def augment(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random resized crop + color jitter on float images (B, 3, H, W) in [0, 1]."""
    B, _, H, W = images.shape
    dev = images.device
    # Random resized crop as an affine map of normalized coordinates: out = scale * in + shift.
    area = _uniform(B, *cfg.crop_scale, generator, dev)
    log_r = _uniform(B, *torch.tensor(cfg.crop_ratio).log().tolist(), generator, dev)
    ratio = log_r.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)  # crop width as a fraction of W
    sy = (area / ratio).sqrt().clamp(max=1.0)
    tx = (torch.rand(B, generator=generator, device=dev) * 2 - 1) * (1 - sx)
    ty = (torch.rand(B, generator=generator, device=dev) * 2 - 1) * (1 - sy)
    theta = torch.zeros(B, 2, 3, device=dev, dtype=images.dtype)  # (B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, [B, 3, H, W], align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Color jitter: brightness (additive), contrast (around the per-image mean), saturation (around gray).
    shape = (B, 1, 1, 1)
    if cfg.brightness > 0:
        out = out + _uniform(B, -cfg.brightness, cfg.brightness, generator, dev).view(shape)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * _uniform(B, *cfg.contrast, generator, dev).view(shape) + mean
    gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]).expand_as(out)
    out = (out - gray) * _uniform(B, *cfg.saturation, generator, dev).view(shape) + gray
    return out.clamp_(0.0, 1.0)
