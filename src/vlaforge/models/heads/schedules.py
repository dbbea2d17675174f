"""Noise schedules and time distributions: the ONE implementation of each.

* :class:`CosineSchedule` — DDPM's cosine schedule (Nichol & Dhariwal 2021), used by Octo's
  diffusion head with s = 0.008 and 20 steps.
* :func:`sample_flow_time` — π0's flow-matching time distribution, τ = s·(1 − u) with
  u ~ Beta(α, 1): most training happens at noisy times (τ near 0 is pure noise in the π0 paper's
  convention ``A^τ = τ·A + (1 − τ)·ε``), where predicting the velocity is hardest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CosineSchedule:
    """Discrete-time DDPM schedule with ``steps`` noise levels t = 0 .. steps-1.

    alpha_bar(t) = f(t + 1) / f(0) with f(u) = cos²((u / T + s) / (1 + s) · π / 2), betas clipped to
    ``max_beta`` so the last step is not a division by zero.
    """

    steps: int = 20
    s: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"CosineSchedule.steps must be a positive int, got {self.steps!r}")
        if not 0.0 < self.max_beta < 1.0:
            raise ValueError(f"CosineSchedule.max_beta must be in (0, 1), got {self.max_beta}")
        u = torch.linspace(0, self.steps, self.steps + 1, dtype=torch.float64) / self.steps  # (T+1,)
        f = torch.cos((u + self.s) / (1 + self.s) * math.pi / 2) ** 2  # (T+1,)
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0.0, self.max_beta)  # (T,)
        alphas = 1 - betas  # (T,)
        object.__setattr__(self, "_betas", betas.float())
        object.__setattr__(self, "_alphas", alphas.float())
        object.__setattr__(self, "_alpha_bars", torch.cumprod(alphas, 0).float())

    def betas(self, device: torch.device | str | None = None) -> torch.Tensor:
        return self._betas.to(device)  # (T,)

    def alphas(self, device: torch.device | str | None = None) -> torch.Tensor:
        return self._alphas.to(device)  # (T,)

    def alpha_bars(self, device: torch.device | str | None = None) -> torch.Tensor:
        return self._alpha_bars.to(device)  # (T,)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x_0): sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε, with t (B,) long."""
        ab = self.alpha_bars(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ...)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def check_flow_time(alpha: float, s: float) -> None:
    """The parameters of `sample_flow_time`: alpha > 0 and 0 < s <= 1 (ValueError naming both)."""
    if alpha <= 0 or not 0 < s <= 1:
        raise ValueError(f"sample_flow_time: need alpha > 0 and 0 < s <= 1, got alpha={alpha}, s={s}")


def sample_flow_time(
    batch: int,
    *,
    alpha: float = 1.5,
    s: float = 0.999,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """τ (B,) = s·(1 − u), u ~ Beta(alpha, 1), sampled by inverse CDF (u = U^(1/alpha)) so a generator works.

    τ = 0 is noise and τ = 1 is data. Never reaching τ = 1 (s < 1) keeps the target well defined.
    """
    check_flow_time(alpha, s)
    u = torch.rand(batch, generator=generator, device=device) ** (1.0 / alpha)  # (B,) ~ Beta(alpha, 1)
    return s * (1.0 - u)
