"""Binned (discretized) action head: RT-2 / OpenVLA-style classification over uniform bins.

Each normalized action dimension in [low, high] (default [-1, 1]; the policy normalizes with
q01/q99 and clips before) is cut into ``bins`` equal bins (RT-2: 256). Training is cross-entropy
on the bin index; acting decodes the arg-max bin to its centre (or samples a bin with a
temperature). A categorical per dimension can hold several modes, so — sampled with temperature
1 — the head reproduces multimodal data per dimension (not correlations across dimensions).

Unlike RT-2 the logits here come from a small MLP on the features rather than from a language
model's vocabulary; :class:`UniformBinner` is the shared discretizer for both uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.heads.base import RNG, ActionHead, LossAndMetrics, masked_mean


@dataclass(frozen=True)
class UniformBinner:
    """Uniform bins over [low, high]: values -> bin ids (long) and ids -> bin centres.

    Values outside the range are clamped into the first/last bin.
    """

    bins: int = 256
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"UniformBinner.bins must be an int >= 2, got {self.bins!r}")
        if not self.low < self.high:
            raise ValueError(f"UniformBinner needs low < high, got low={self.low}, high={self.high}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x - self.low) / (self.high - self.low) * self.bins  # (...,) in [0, bins]
        return scaled.floor().long().clamp(0, self.bins - 1)  # (...,)

    def centers(self, device: torch.device | str | None = None) -> torch.Tensor:
        width = (self.high - self.low) / self.bins
        return self.low + width * (
            torch.arange(self.bins, device=device, dtype=torch.float32) + 0.5
        )  # (bins,)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.centers(ids.device)[ids]  # (...,)


class BinnedHead(ActionHead):
    """features (B, F) -> logits (B, H, A, bins) -> bin centres (B, H, A).

    A dense layer to H * A * bins outputs would be huge for long chunks (π0's H = 50, A = 32 ->
    409,600 outputs), so each (h, a) slot gets a learned query embedding added to a projection
    of the features, and one shared MLP maps every slot to its ``bins`` logits.

    temperature: 0 = arg-max decoding (default, deterministic); > 0 samples bins.
    """

    name = "binned"

    def __init__(
        self,
        feature_dim: int,
        horizon: int,
        action_dim: int,
        *,
        bins: int = 256,
        low: float = -1.0,
        high: float = 1.0,
        hidden_dim: int = 256,
        temperature: float = 0.0,
    ):
        super().__init__(feature_dim, horizon, action_dim)
        self.binner = UniformBinner(bins, low, high)
        if temperature < 0:
            raise ValueError(f"BinnedHead: temperature must be >= 0, got {temperature}")
        self.temperature = temperature
        self.hparams = dict(bins=bins, low=low, high=high, hidden_dim=hidden_dim, temperature=temperature)
        self.feature_proj = nn.Linear(feature_dim, hidden_dim)
        self.slot_emb = nn.Parameter(torch.randn(horizon * action_dim, hidden_dim) * 0.02)  # (H*A, h)
        self.mlp = nn.Sequential(
            nn.GELU(),
            nn.LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bins),
        )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        b = features.shape[0]
        x = self.feature_proj(features)[:, None, :] + self.slot_emb[None]  # (B, H*A, h)
        return self.mlp(x).view(b, self.horizon, self.action_dim, self.binner.bins)  # (B, H, A, bins)

    def objective(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, generator: RNG
    ) -> LossAndMetrics:
        del generator  # deterministic loss
        logits = self.logits(features)  # (B, H, A, bins)
        target = self.binner.encode(actions)  # (B, H, A) long
        ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none").view_as(
            mask
        )  # (B, H, A)
        loss = masked_mean(ce, mask)
        acc = masked_mean((logits.argmax(-1) == target).to(mask.dtype), mask)
        return loss, {"loss": float(loss.detach()), "accuracy": float(acc)}

    @torch.no_grad()
    def sample(
        self,
        features: torch.Tensor,
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        del steps  # one-shot head
        logits = self.logits(features)  # (B, H, A, bins)
        temp = self.temperature if temperature is None else temperature
        if temp <= 0:
            ids = logits.argmax(-1)  # (B, H, A)
        else:
            probs = torch.softmax(logits.float() / temp, dim=-1).flatten(0, 2)  # (B*H*A, bins)
            ids = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])  # (B, H, A)
        return self.binner.decode(ids).to(features.dtype)  # (B, H, A)
