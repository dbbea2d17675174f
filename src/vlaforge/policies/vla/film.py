"""FiLM for OpenVLA-OFT: the mean language embedding modulates every vision-tower block.

OFT (arXiv 2502.19645) conditions the ViT on the instruction so the visual features depend on the
task: per block, ``x = (1 + γ) · x + β`` with ``γ, β = Linear(mean language embedding)``.

The towers are Hugging Face modules, and transformers records the per-layer hidden states (which
the tower returns) through its own machinery, so a forward *output* hook on a block would be
ignored. Instead FiLM of block i is applied to the input of block i + 1 (a forward pre-hook), and
FiLM of the last block to the tower's patch features (:meth:`FiLM.apply_last`). That is the same
function, and the towers' parameter names stay those of the checkpoint. γ and β start at zero, so
a pretrained tower is unchanged until training moves them.

Difference from OFT: OFT modulates inside each timm block (after its attention sub-block); here
the modulation sits at block boundaries. Prefix tokens (CLS, registers) are modulated too; they
are dropped from the output anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlaforge.models.vision.towers import VisionTower


def tower_blocks(tower: VisionTower) -> nn.ModuleList:
    """The transformer blocks of a tower (SigLIP: ``encoder.layers``, DINOv2: ``encoder.layer``)."""
    for name, module in tower.model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "layer"):
            return module
    raise ValueError(f"cannot find the transformer blocks of the {tower.kind} tower for FiLM")


class FiLM(nn.Module):
    """γ/β projections for each block of each tower; call :meth:`condition` before running the towers."""

    def __init__(self, towers: Mapping[str, VisionTower], cond_dim: int):
        super().__init__()
        self.order = list(towers)
        self.gamma = nn.ModuleDict()
        self.beta = nn.ModuleDict()
        self._cond: torch.Tensor | None = None
        self._hooks: list[Any] = []
        for name, tower in towers.items():
            blocks = tower_blocks(tower)
            self.gamma[name] = nn.ModuleList([nn.Linear(cond_dim, tower.width) for _ in blocks])
            self.beta[name] = nn.ModuleList([nn.Linear(cond_dim, tower.width) for _ in blocks])
            for lin in [*self.gamma[name], *self.beta[name]]:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
            for i in range(1, len(blocks)):  # block i's input = block i-1's output
                self._hooks.append(
                    blocks[i].register_forward_pre_hook(self._pre_hook(name, i - 1), with_kwargs=True)
                )

    def _modulate(self, name: str, i: int, x: torch.Tensor) -> torch.Tensor:
        if self._cond is None:
            raise RuntimeError("FiLM: condition(...) was not called before running the vision tower")
        cond = self._cond.to(x.dtype)  # (B, C)
        g = self.gamma[name][i](cond)[:, None]  # (B, 1, D)
        b = self.beta[name][i](cond)[:, None]  # (B, 1, D)
        return x * (1 + g) + b  # (B, N, D)

    def _pre_hook(self, name: str, i: int) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (self._modulate(name, i, args[0]), *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = self._modulate(name, i, kwargs["hidden_states"])
            return args, kwargs

        return hook

    def condition(self, cond: torch.Tensor | None) -> None:
        """cond (B, C): the mean language embedding of each sample (None clears it)."""
        self._cond = cond

    def apply_last(self, features: torch.Tensor) -> torch.Tensor:
        """FiLM of the last block of every tower on the (fused) patch features (B, N, sum D)."""
        parts, start = [], 0
        for name in self.order:
            width = self.gamma[name][-1].out_features
            parts.append(
                self._modulate(name, len(self.gamma[name]) - 1, features[..., start : start + width])
            )
            start += width
        return torch.cat(parts, dim=-1)  # (B, N, sum D)
