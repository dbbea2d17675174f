"""Flow-matching head (π0's objective) over the flattened action chunk.

Training: τ from π0's Beta time distribution, A^τ = τ·A + (1 − τ)·ε, the network predicts the
velocity u = A − ε (MSE over valid entries). Sampling: Euler-integrate the predicted velocity
from noise (τ = 0) to data (τ = 1) in ``steps`` steps (π0: 10). Like diffusion it represents
multimodal action distributions, with fewer sampling steps and no noise schedule to tune. The math
is `flow_matching.FlowMatching`, the same object π0 and π0.5 use.

Inpainting (real-time chunking): ``sample(..., prefix=Y, prefix_weights=W)`` steers the new chunk
toward known actions Y (the previous chunk, aligned to the new chunk's time) with ΠGDM guidance
(`flow_matching.pigdm_velocity`). Entries with W = 1 (the actions due during the inference delay)
are returned exactly equal to Y; with W = 0 everywhere the sample equals the unguided one.
β = ``guidance_clip`` (paper: 5).
"""

from __future__ import annotations

import torch

from vlaforge.models.heads.base import RNG, ActionHead, LossAndMetrics, check_prefix
from vlaforge.models.heads.flow_matching import FlowMatching
from vlaforge.models.heads.mlp_resnet import TimeConditionedMLP
from vlaforge.models.heads.samplers import EulerSampler
from vlaforge.models.heads.schedules import sample_flow_time


class FlowHead(ActionHead):
    """features (B, F) -> actions (B, H, A) by integrating a learned velocity field.

    steps: default Euler steps at sampling (π0: 10).
    time_alpha, time_s: τ = s·(1 − u), u ~ Beta(time_alpha, 1) (π0: 1.5, 0.999).
    max_action: clip bound of the sampled normalized actions.
    hidden_dim, num_blocks, time_dim, dropout: the MLP-ResNet velocity net.
    """

    name = "flow"

    def __init__(
        self,
        feature_dim: int,
        horizon: int,
        action_dim: int,
        *,
        steps: int = 10,
        time_alpha: float = 1.5,
        time_s: float = 0.999,
        max_action: float = 5.0,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        time_dim: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__(feature_dim, horizon, action_dim)
        EulerSampler(steps)  # validate now
        # validate now; the draw from the global RNG is kept so that seeded builds keep their weights
        sample_flow_time(1, alpha=time_alpha, s=time_s)
        self.flow = FlowMatching(time_alpha, time_s)
        self.steps, self.time_alpha, self.time_s, self.max_action = steps, time_alpha, time_s, max_action
        self.hparams = dict(
            steps=steps,
            time_alpha=time_alpha,
            time_s=time_s,
            max_action=max_action,
            hidden_dim=hidden_dim,
            num_blocks=num_blocks,
            time_dim=time_dim,
            dropout=dropout,
        )
        self.net = TimeConditionedMLP(
            horizon * action_dim, feature_dim, time_dim, hidden_dim, num_blocks, dropout
        )

    def objective(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, generator: RNG
    ) -> LossAndMetrics:
        b = features.shape[0]
        a = actions.reshape(b, -1)  # (B, H*A)
        tau, noise, x_tau = self.flow.interpolate(a, generator)  # (B,), (B, H*A), (B, H*A)
        loss = self.flow.loss(self.net(x_tau, tau, features), a, noise, mask.reshape(b, -1))
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def sample(
        self,
        features: torch.Tensor,
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
        prefix_weights: torch.Tensor | None = None,
        guidance_clip: float = 5.0,
    ) -> torch.Tensor:
        """features (B, F) -> normalized actions (B, H, A).

        prefix (B, H, A) normalized actions to inpaint, prefix_weights (H,) in [0, 1], guidance_clip β
        (see the module docstring); entries with weight 1 come out equal to the prefix, weight 0 as
        without guidance. Guided sampling runs a backward pass, so it cannot run under
        ``torch.inference_mode()`` (``torch.no_grad()`` is fine).
        """
        self.check_features(features)
        guide = check_prefix(self, features, prefix, prefix_weights)
        b = features.shape[0]
        x = self.initial_noise(features, generator)  # (B, H*A) noise at τ = 0
        if guide is not None:
            features = features.clone()  # not an inference tensor: guidance needs autograd
        x = self.flow.sample(
            lambda xt, tau: self.net(xt, tau, features),
            x,
            steps or self.steps,
            guidance=None if guide is None else (*guide, guidance_clip),
            clip=self.max_action,
        )  # (B, H*A)
        if guide is not None:
            p, w = guide  # (B, H*A), (1, H*A)
            x = torch.where(w >= 1, p, x)  # frozen entries exactly, not up to the Euler round-off
        return x.view(b, self.horizon, self.action_dim)  # (B, H, A)
