"""The one small contract every action head follows.

A head turns a feature vector per sample (e.g. Octo's mean-pooled readout tokens) into an
action chunk, in the *normalized* action space (the policy's transforms normalize before and
unnormalize after). It knows how to be trained (``loss``) and how to act (``sample``):

    loss(features (B, F), actions (B, H, A), mask (B, H, A) bool | None) -> (loss scalar, metrics)
    sample(features (B, F), *, steps=None, generator=None) -> actions (B, H, A)

``mask`` is False for padded entries (chunk steps past the episode end, padded action dims):
they contribute nothing to the loss. ``steps`` overrides the number of denoising/integration
steps for iterative heads and is ignored by one-shot heads. ``generator`` makes sampling
reproducible; it must live on the features' device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ActionHead(nn.Module):
    """Base class: stores the sizes, validates inputs, and records hyperparameters for ``config()``."""

    name: str = "base"

    def __init__(self, feature_dim: int, horizon: int, action_dim: int):
        super().__init__()
        for field_name, value in (
            ("feature_dim", feature_dim),
            ("horizon", horizon),
            ("action_dim", action_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {field_name} must be a positive int, got {value!r}")
        self.feature_dim = feature_dim
        self.horizon = horizon  # H
        self.action_dim = action_dim  # A
        self.hparams: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        """JSON-serializable description; ``make_head(**head.config())`` rebuilds the same architecture."""
        return {
            "name": self.name,
            "feature_dim": self.feature_dim,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            **self.hparams,
        }

    # -- input checks shared by every head ---------------------------------------------------------

    def check_features(self, features: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"{type(self).__name__}: features must be (B, {self.feature_dim}), got {tuple(features.shape)}"
            )

    def prepare_targets(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes; return (actions with padded entries zeroed (B, H, A), float mask (B, H, A))."""
        self.check_features(features)
        expected = (features.shape[0], self.horizon, self.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: actions must be {expected} (B, H, A), got {tuple(actions.shape)}"
            )
        if mask is None:
            mask = torch.ones(expected, dtype=torch.bool, device=actions.device)  # (B, H, A)
        elif tuple(mask.shape) != expected or mask.dtype != torch.bool:
            raise ValueError(
                f"{type(self).__name__}: mask must be bool {expected} (True = valid), got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        actions = actions.to(features.dtype).masked_fill(~mask, 0.0)  # padding may hold garbage
        if not bool(torch.isfinite(actions).all()):
            raise ValueError(f"{type(self).__name__}: actions contain NaN/Inf at unmasked entries")
        return actions, mask.to(features.dtype)

    # -- the contract --------------------------------------------------------------------------------

    def loss(
        self,
        features: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def sample(
        self, features: torch.Tensor, *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``mask`` (same shape, float 0/1) is 1; 0 if none are."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
