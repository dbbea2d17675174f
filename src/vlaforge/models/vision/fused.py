"""OpenVLA's fused vision encoder: DINOv2 + SigLIP patch features side by side, projected into the LM.

Prismatic (the VLM under OpenVLA) runs both towers on the same 224 px frame (each with its own
normalization), takes both sets of 16 x 16 = 256 patch features and concatenates them **per patch**
along the channel axis, DINOv2 first: (B, 256, 1024 + 1152 = 2176). Its "fused-gelu-mlp"
projector then maps every patch to one LM token::

    Linear(2176 -> 4 * 2176) -> GELU -> Linear(8704 -> 4096) -> GELU -> Linear(4096 -> 4096)

(exact erf GELU; module names ``fc1/fc2/fc3`` as in the openvla/openvla-7b Hugging Face port, so
its ``projector.*`` weights load by name). Per-patch fusion needs both towers on the same patch
grid: SigLIP/14 and DINOv2/14 at 224 px both give 16 x 16; anything else is refused.

π0 / PaliGemma use a single SigLIP and one Linear projector: ``VisionEncoder(tower, LinearProjector(...))``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from vlaforge.models.vision.preprocess import preprocess_images
from vlaforge.models.vision.towers import VisionTower


class FusedVisionTower(nn.Module):
    """Several towers on one image, features concatenated per patch in the given order.

    towers: name -> VisionTower, e.g. ``{"dino": dino, "siglip": siglip}`` (OpenVLA's order).
    forward(images uint8 (B, H, W, 3)) -> (B, N, sum of widths).
    """

    def __init__(self, towers: Mapping[str, VisionTower]):
        super().__init__()
        if not towers:
            raise ValueError("FusedVisionTower needs at least one tower")
        grids = {name: t.grid for name, t in towers.items()}
        if len(set(grids.values())) != 1:
            detail = ", ".join(
                f"{n}: {t.image_size} px / patch {t.patch_size} = {t.grid[0]}x{t.grid[1]}"
                for n, t in towers.items()
            )
            raise ValueError(
                f"per-patch fusion needs the same patch grid in every tower, got {detail}. Choose image "
                "sizes so that image_size / patch_size agree (OpenVLA: 224 px with patch 14 in both)."
            )
        self.towers = nn.ModuleDict(dict(towers))
        first = next(iter(towers.values()))
        self.grid = first.grid
        self.num_patches = first.num_patches
        self.width = sum(t.width for t in towers.values())

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> fused patch features (B, N, D_1 + D_2 + ...)."""
        pixels = {name: preprocess_images(images, t.preprocess) for name, t in self.towers.items()}
        return self.forward_pixels(pixels)

    def forward_pixels(self, pixels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-tower preprocessed pixels {name: (B, 3, S, S)} -> (B, N, sum D)."""
        missing = [n for n in self.towers if n not in pixels]
        if missing:
            raise ValueError(f"FusedVisionTower.forward_pixels: no pixels for tower(s) {missing}")
        feats = [tower(pixels[name]) for name, tower in self.towers.items()]  # each (B, N, D_i)
        return torch.cat(feats, dim=-1)  # (B, N, sum D_i)


class FusedMLPProjector(nn.Module):
    """Prismatic's "fused-gelu-mlp": vision_dim -> 4 * vision_dim -> llm_dim -> llm_dim, GELU between."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        hidden = 4 * vision_dim
        self.fc1 = nn.Linear(vision_dim, hidden)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(hidden, llm_dim)
        self.act_fn2 = nn.GELU()
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(x)))))  # (B, N, llm_dim)


class LinearProjector(nn.Module):
    """PaliGemma's projector (π0): one Linear from the SigLIP width to the LM width."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.linear = nn.Linear(vision_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)  # (B, N, llm_dim)


class VisionEncoder(nn.Module):
    """Tower (single or fused) + projector: uint8 frames (B, H, W, 3) -> image tokens (B, N, llm_dim).

    The output is fed to :class:`~vlaforge.models.lm.decoder.DecoderLM` as part of ``inputs_embeds``.
    """

    def __init__(self, tower: VisionTower | FusedVisionTower, projector: nn.Module):
        super().__init__()
        self.tower = tower
        self.projector = projector
        self.num_patches = tower.num_patches

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        feats = self.tower.encode(images) if isinstance(self.tower, VisionTower) else self.tower(images)
        p = next(self.projector.parameters())
        return self.projector(feats.to(p.dtype))  # (B, N, llm_dim)


def prismatic_vision_encoder(dino: VisionTower, siglip: VisionTower, llm_dim: int) -> VisionEncoder:
    """OpenVLA's encoder: FusedVisionTower({"dino", "siglip"}) + FusedMLPProjector into ``llm_dim``."""
    if dino.kind != "dinov2" or siglip.kind != "siglip":
        raise ValueError(
            f"prismatic_vision_encoder(dino, siglip): got towers of kind {dino.kind!r}, {siglip.kind!r}"
        )
    tower = FusedVisionTower({"dino": dino, "siglip": siglip})
    return VisionEncoder(tower, FusedMLPProjector(tower.width, llm_dim))
