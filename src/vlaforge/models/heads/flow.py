"""Flow-matching head (π0's objective) over the flattened action chunk.

Training: τ from π0's Beta time distribution, A^τ = τ·A + (1 − τ)·ε, the network predicts the
velocity u = A − ε (MSE over valid entries). Sampling: Euler-integrate the predicted velocity
from noise (τ = 0) to data (τ = 1) in ``steps`` steps (π0: 10). Like diffusion it represents
multimodal action distributions, with fewer sampling steps and no noise schedule to tune.

Inpainting (real-time chunking, Black et al. 2025, arXiv 2506.07339): ``sample(..., prefix=Y,
prefix_weights=W)`` steers the new chunk toward known actions Y (the previous chunk, aligned to
the new chunk's time) with the paper's ΠGDM guidance. At every Euler step, with the denoised
estimate Â¹ = x + (1 − τ)·v(x, τ):

    v' = v + min(β, (1 − τ) / (τ·r²)) · (Y − Â¹)ᵀ diag(W) ∂Â¹/∂x,   r² = (1 − τ)² / (τ² + (1 − τ)²)

The vector-Jacobian product (one backward pass through the network per step) is what makes the
*free* part of the chunk follow: pulling the guided entries moves every entry the network
couples to them, so the tail continues the prefix's mode instead of picking its own. Entries
with W = 1 (the actions due during the inference delay) are returned exactly equal to Y; with
W = 0 everywhere the sample equals the unguided one. β = ``guidance_clip`` (paper: 5).
"""

from __future__ import annotations

import torch

from vlaforge.models.heads.base import ActionHead, check_prefix, masked_mean
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
        sample_flow_time(1, alpha=time_alpha, s=time_s)  # validate now
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

    def loss(
        self,
        features: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        actions, fmask = self.prepare_targets(features, actions, mask)  # (B, H, A), (B, H, A)
        b = features.shape[0]
        a = actions.reshape(b, -1)  # (B, H*A)
        tau = sample_flow_time(b, alpha=self.time_alpha, s=self.time_s, generator=generator, device=a.device)
        tau = tau.to(a.dtype)  # (B,)
        noise = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)  # (B, H*A)
        x_tau = tau[:, None] * a + (1 - tau[:, None]) * noise  # (B, H*A)
        err = (self.net(x_tau, tau, features) - (a - noise)) ** 2  # (B, H*A)
        loss = masked_mean(err, fmask.reshape(b, -1))
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
        x = torch.randn(
            (b, self.horizon * self.action_dim),
            generator=generator,
            device=features.device,
            dtype=features.dtype,
        )  # (B, H*A) noise at τ = 0
        if guide is not None:
            features = features.clone()  # not an inference tensor: guidance needs autograd
        sampler = EulerSampler(steps or self.steps, clip=self.max_action)
        if guide is None:
            x = sampler.sample(lambda xt, tau: self.net(xt, tau, features), x)  # (B, H*A)
            return x.view(b, self.horizon, self.action_dim)  # (B, H, A)
        p, w = guide  # (B, H*A), (1, H*A)

        def guided_velocity(xt: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            x_in = xt.detach().requires_grad_(True)
            with torch.enable_grad():
                v = self.net(x_in, tau, features)  # (B, H*A)
                remaining = (1 - tau)[:, None]  # (B, 1), >= 1/steps: Euler never evaluates τ = 1
                denoised = x_in + remaining * v  # (B, H*A) Â¹, the one-step estimate of the clean chunk
                (vjp,) = torch.autograd.grad(denoised, x_in, grad_outputs=w * (p - denoised.detach()))
            return v.detach() + pigdm_weight(tau, guidance_clip)[:, None] * vjp  # (B, H*A)

        x = sampler.sample(guided_velocity, x)  # (B, H*A)
        x = torch.where(w >= 1, p, x)  # frozen entries exactly, not up to the Euler round-off
        return x.view(b, self.horizon, self.action_dim)  # (B, H, A)


def pigdm_weight(tau: torch.Tensor, clip: float) -> torch.Tensor:
    """ΠGDM guidance weight min(β, (1 − τ) / (τ·r²)) = min(β, (τ² + (1 − τ)²) / (τ·(1 − τ))): (B,)."""
    tau = tau.clamp(0.0, 1.0)
    raw = (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau))  # (B,) inf at τ = 0
    return torch.nan_to_num(raw, posinf=clip).clamp(max=clip)
