"""Regression heads (Octo's L1/MSE heads, OpenVLA-OFT's L1 head): one deterministic chunk per input.

Simple and fast (one forward pass), but a regression head predicts the conditional mean (MSE)
or median (L1) of the demonstrations: with multimodal data it lands between the modes.
Outputs are softly bounded, ``max_action · tanh(x / max_action)``, as in Octo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlaforge.models.heads.base import RNG, ActionHead, LossAndMetrics, masked_mean
from vlaforge.models.heads.mlp_resnet import MLPResNet

LOSSES = ("l1", "mse")


class RegressionHead(ActionHead):
    """features (B, F) -> MLP-ResNet -> actions (B, H, A); trained with L1 or MSE over valid entries."""

    def __init__(
        self,
        feature_dim: int,
        horizon: int,
        action_dim: int,
        *,
        loss: str = "l1",
        hidden_dim: int = 256,
        num_blocks: int = 2,
        dropout: float = 0.0,
        max_action: float = 5.0,
    ):
        super().__init__(feature_dim, horizon, action_dim)
        if loss not in LOSSES:
            raise ValueError(f"RegressionHead: loss must be one of {LOSSES}, got {loss!r}")
        if max_action <= 0:
            raise ValueError(f"RegressionHead: max_action must be > 0, got {max_action}")
        self.name = loss  # registry name: "l1" or "mse"
        self.loss_type = loss
        self.max_action = max_action
        self.hparams = dict(
            hidden_dim=hidden_dim, num_blocks=num_blocks, dropout=dropout, max_action=max_action
        )
        self.net = MLPResNet(feature_dim, horizon * action_dim, hidden_dim, num_blocks, dropout)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        x = self.net(features)  # (B, H*A)
        x = self.max_action * torch.tanh(x / self.max_action)
        return x.view(features.shape[0], self.horizon, self.action_dim)  # (B, H, A)

    def objective(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, generator: RNG
    ) -> LossAndMetrics:
        del generator  # deterministic loss
        pred = self.predict(features)  # (B, H, A)
        fn = F.l1_loss if self.loss_type == "l1" else F.mse_loss
        err = fn(pred, actions, reduction="none")  # (B, H, A)
        loss = masked_mean(err, mask)
        mae = masked_mean((pred - actions).abs(), mask)
        return loss, {"loss": float(loss.detach()), "mae": float(mae.detach())}

    @torch.no_grad()
    def sample(
        self, features: torch.Tensor, *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        del steps, generator  # one deterministic pass
        return self.predict(features)  # (B, H, A)
