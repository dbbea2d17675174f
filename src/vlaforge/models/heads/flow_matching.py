"""Flow matching (π0's objective): the ONE implementation of its math, shared by Octo's `FlowHead`
(`heads/flow.py`, over the flattened chunk (B, H*A)) and π0 / π0.5 (`policies/pi0/`, over (B, H, 32)).

Convention of the π0 paper: τ = 0 is noise and τ = 1 is data.

* interpolation  A^τ = τ·A + (1 − τ)·ε, with τ from π0's Beta time distribution (`sample_flow_time`)
* target         u = A − ε, the velocity the network regresses (MSE over valid entries)
* sampling       forward Euler from τ = 0 to τ = 1 (`EulerSampler`; π0: 10 steps)
* guidance       ΠGDM inpainting for real-time chunking (Black et al. 2025, arXiv 2506.07339): with the
  one-step estimate Â¹ = x + (1 − τ)·v(x, τ) of the clean chunk,

      v' = v + min(β, (1 − τ) / (τ·r²)) · (Y − Â¹)ᵀ diag(W) ∂Â¹/∂x,   r² = (1 − τ)² / (τ² + (1 − τ)²)

  The vector-Jacobian product (one backward pass through the network per step) makes the *free* part
  of the chunk follow the guided entries, so the tail continues the prefix's mode.

Every function works on any trailing shape (B, ...): τ is (B,) and is broadcast over the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vlaforge.models.heads.base import masked_mean
from vlaforge.models.heads.samplers import EulerSampler
from vlaforge.models.heads.schedules import check_flow_time, sample_flow_time

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(x (B, ...), τ (B,)) -> (B, ...)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ...) broadcastable against x (B, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class FlowMatching:
    """π0's flow matching, configured by values: τ = s·(1 − u), u ~ Beta(time_alpha, 1) (π0: 1.5, 0.999)."""

    time_alpha: float = 1.5
    time_s: float = 0.999

    def __post_init__(self) -> None:
        check_flow_time(self.time_alpha, self.time_s)

    def interpolate(
        self, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean actions (B, ...) -> τ (B,), noise ε (B, ...), A^τ = τ·A + (1 − τ)·ε (B, ...).

        Draws τ, then ε, from ``generator`` (in that order), in the actions' dtype and device.
        """
        tau = sample_flow_time(
            actions.shape[0], alpha=self.time_alpha, s=self.time_s, generator=generator, device=actions.device
        ).to(actions.dtype)  # (B,)
        noise = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
        t = _per_sample(tau, actions)  # (B, 1, ...)
        return tau, noise, t * actions + (1 - t) * noise

    @staticmethod
    def target(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The velocity to regress: u = A − ε (B, ...)."""
        return actions - noise

    def loss(
        self, velocity: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """MSE between the predicted velocity and u = A − ε over the entries where ``mask`` (float 0/1) is 1."""
        return masked_mean((velocity - self.target(actions, noise)) ** 2, mask)

    @staticmethod
    def sample(
        velocity: Velocity,
        x_init: torch.Tensor,
        steps: int,
        *,
        guidance: tuple[torch.Tensor, torch.Tensor, float] | None = None,
        clip: float | None = None,
    ) -> torch.Tensor:
        """Euler-integrate ``velocity`` from the noise x_init (B, ...) at τ = 0 to τ = 1 -> (B, ...).

        guidance: ``(target Y (B, ...), weights W (broadcastable to Y), β)``: ΠGDM-guided velocity at every
        step (needs autograd: not under ``torch.inference_mode()``). clip: bound of the result.
        """
        fn = velocity
        if guidance is not None:
            target, weights, beta = guidance

            def fn(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
                return pigdm_velocity(velocity, x, tau, target, weights, beta)

        return EulerSampler(steps, clip=clip).sample(fn, x_init)


def pigdm_velocity(
    velocity: Velocity,
    x: torch.Tensor,
    tau: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """ΠGDM-guided velocity (module docstring): v + min(β, (1−τ)/(τ r²)) · (Y − Â¹)ᵀ diag(W) ∂Â¹/∂x (B, ...)."""
    x_in = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = velocity(x_in, tau)  # (B, ...)
        remaining = _per_sample(1 - tau, x)  # (B, 1, ...), >= 1/steps: Euler never evaluates τ = 1
        denoised = x_in + remaining * v  # (B, ...) Â¹, the one-step estimate of the clean chunk
        (vjp,) = torch.autograd.grad(denoised, x_in, grad_outputs=weights * (target - denoised.detach()))
    return v.detach() + _per_sample(pigdm_weight(tau, beta), x) * vjp  # (B, ...)


def pigdm_weight(tau: torch.Tensor, clip: float) -> torch.Tensor:
    """ΠGDM guidance weight min(β, (1 − τ) / (τ·r²)) = min(β, (τ² + (1 − τ)²) / (τ·(1 − τ))): (B,)."""
    tau = tau.clamp(0.0, 1.0)
    raw = (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau))  # (B,) inf at τ = 0
    return torch.nan_to_num(raw, posinf=clip).clamp(max=clip)
