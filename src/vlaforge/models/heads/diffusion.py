"""Octo's diffusion head: DDPM over the flattened action chunk, conditioned on the features.

Why diffusion: demonstrations are multimodal (go left or right around an obstacle); a
regression head averages the modes into an action that is neither, a denoising model samples
one of them. Training: pick t ~ U{0..T-1}, noise the chunk with the cosine schedule, predict
the noise (ε-prediction), MSE over valid entries. Sampling: DDPM through all T steps (Octo) or
DDIM on fewer steps; the result is clipped to ±max_action.

Inpainting (real-time chunking, arXiv 2506.07339; see ``flow.py``): with ``prefix=Y,
prefix_weights=W`` every denoising step adds ΠGDM guidance (Song et al. 2023) to the noise
prediction, with r_t² = 1 − ᾱ_t for this variance-preserving process:

    ε̂' = ε̂ − min(β, 1 / sqrt(1 − ᾱ_t)) · (Y − x̂0)ᵀ diag(W) ∂x̂0/∂x_t,   x̂0 = (x_t − sqrt(1 − ᾱ_t)·ε̂) / sqrt(ᾱ_t)

i.e. the guided score is the score plus ∇ log N(Y; x̂0, r_t²/W), with the weight clipped to β like
the flow head's. The samplers (DDPM, DDIM) then use ε̂' unchanged. Entries with W = 1 come out
exactly equal to Y; with W = 0 everywhere the sample equals the unguided one.
"""

from __future__ import annotations

import torch

from vlaforge.models.heads.base import RNG, ActionHead, LossAndMetrics, check_prefix, masked_mean
from vlaforge.models.heads.mlp_resnet import TimeConditionedMLP
from vlaforge.models.heads.samplers import DDIMSampler, DDPMSampler
from vlaforge.models.heads.schedules import CosineSchedule

SAMPLERS = ("ddpm", "ddim")


class DiffusionHead(ActionHead):
    """features (B, F) -> actions (B, H, A) by denoising.

    train_steps: T, diffusion steps of the schedule (Octo: 20).
    sampler: "ddpm" (all T steps, stochastic) or "ddim" (``sample_steps`` steps, eta = ``eta``).
    sample_steps: default number of DDIM steps (ignored by DDPM, which always uses T).
    eta: DDIM stochasticity (0 = deterministic).
    ddpm_variance: "large" (σ² = β, Octo) or "small" (posterior variance, diffusers' default).
    max_action: clip bound of the normalized actions while sampling (Octo: 5).
    hidden_dim, num_blocks, time_dim, dropout: the MLP-ResNet denoiser (Octo: 256, 3, 32, 0).
    """

    name = "diffusion"

    def __init__(
        self,
        feature_dim: int,
        horizon: int,
        action_dim: int,
        *,
        train_steps: int = 20,
        sampler: str = "ddpm",
        sample_steps: int = 10,
        eta: float = 0.0,
        ddpm_variance: str = "large",
        cosine_s: float = 0.008,
        max_action: float = 5.0,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        time_dim: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__(feature_dim, horizon, action_dim)
        if sampler not in SAMPLERS:
            raise ValueError(f"DiffusionHead: sampler must be one of {SAMPLERS}, got {sampler!r}")
        if max_action <= 0:
            raise ValueError(f"DiffusionHead: max_action must be > 0, got {max_action}")
        self.schedule = CosineSchedule(train_steps, cosine_s)
        self.sampler = sampler
        self.sample_steps = sample_steps
        self.eta = eta
        self.ddpm_variance = ddpm_variance
        self.max_action = max_action
        self._make_sampler(sampler, sample_steps)  # validate now, not at the first rollout
        self.hparams = dict(
            train_steps=train_steps,
            sampler=sampler,
            sample_steps=sample_steps,
            eta=eta,
            ddpm_variance=ddpm_variance,
            cosine_s=cosine_s,
            max_action=max_action,
            hidden_dim=hidden_dim,
            num_blocks=num_blocks,
            time_dim=time_dim,
            dropout=dropout,
        )
        self.net = TimeConditionedMLP(
            horizon * action_dim, feature_dim, time_dim, hidden_dim, num_blocks, dropout
        )

    def _make_sampler(self, sampler: str, steps: int | None) -> DDPMSampler | DDIMSampler:
        if sampler == "ddpm":
            return DDPMSampler(self.schedule, clip=self.max_action, variance=self.ddpm_variance)
        if sampler == "ddim":
            return DDIMSampler(
                self.schedule, steps=steps or self.sample_steps, eta=self.eta, clip=self.max_action
            )
        raise ValueError(f"DiffusionHead: sampler must be one of {SAMPLERS}, got {sampler!r}")

    def _eps(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        # The net sees t / T in [0, 1) so the same time features work for any number of steps.
        return self.net(x, t.float() / self.schedule.steps, features)  # (B, H*A)

    def objective(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, generator: RNG
    ) -> LossAndMetrics:
        b = features.shape[0]
        x0 = actions.reshape(b, -1)  # (B, H*A)
        t = torch.randint(0, self.schedule.steps, (b,), generator=generator, device=x0.device)  # (B,)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)  # (B, H*A)
        xt = self.schedule.add_noise(x0, noise, t)  # (B, H*A)
        err = (self._eps(xt, t, features) - noise) ** 2  # (B, H*A)
        loss = masked_mean(err, mask.reshape(b, -1))
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def sample(
        self,
        features: torch.Tensor,
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        prefix: torch.Tensor | None = None,
        prefix_weights: torch.Tensor | None = None,
        guidance_clip: float = 5.0,
    ) -> torch.Tensor:
        """steps: DDIM steps (a DDPM request with steps != T switches to DDIM); sampler overrides the default.

        prefix (B, H, A) normalized actions to inpaint, prefix_weights (H,) in [0, 1], guidance_clip β
        (module docstring). Guided sampling runs a backward pass: not under ``torch.inference_mode()``.
        """
        self.check_features(features)
        guide = check_prefix(self, features, prefix, prefix_weights)
        name = sampler or self.sampler
        if name == "ddpm" and steps is not None and steps != self.schedule.steps:
            name = "ddim"  # DDPM cannot skip steps; DDIM on the same trained model can
        smp = self._make_sampler(name, steps)
        b = features.shape[0]
        x = self.initial_noise(features, generator)  # (B, H*A) noise
        if guide is None:
            x = smp.sample(lambda xt, t: self._eps(xt, t, features), x, generator=generator)  # (B, H*A)
            return x.clamp(-self.max_action, self.max_action).view(b, self.horizon, self.action_dim)
        p, w = guide  # (B, H*A), (1, H*A)
        alpha_bars = self.schedule.alpha_bars(features.device).to(features.dtype)  # (T,)

        features = features.clone()  # not an inference tensor: guidance needs autograd

        def guided_eps(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ab = alpha_bars[t][:, None]  # (B, 1)
            x_in = xt.detach().requires_grad_(True)
            with torch.enable_grad():
                eps = self._eps(x_in, t, features)  # (B, H*A)
                x0 = (x_in - (1 - ab).sqrt() * eps) / ab.sqrt()  # (B, H*A) predicted clean chunk
                (vjp,) = torch.autograd.grad(x0, x_in, grad_outputs=w * (p - x0.detach()))
            weight = (1 - ab).rsqrt().clamp(max=guidance_clip)  # (B, 1) min(β, 1 / r_t)
            return eps.detach() - weight * vjp  # (B, H*A)

        x = smp.sample(guided_eps, x, generator=generator)  # (B, H*A)
        x = x.clamp(-self.max_action, self.max_action)
        x = torch.where(w >= 1, p, x)  # frozen entries exactly, not up to the sampler's round-off
        return x.view(b, self.horizon, self.action_dim)  # (B, H, A)
