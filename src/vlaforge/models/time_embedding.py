"""Sinusoidal time embedding: the ONE implementation, used by Octo's diffusion/flow heads
(`heads/mlp_resnet.FourierFeatures`, float32, learnable frequencies), π0 / π0.5's action expert
(`sincos_time_embedding`, float64, openpi's ``posemb_sincos``) and the π0 checkpoint importer.

φ(t) = [sin(ω_j t), cos(ω_j t)], ω_j = 2π / p_j with the periods p_j log-spaced in [min, max]: the short
periods resolve small differences of t, the long ones give a smooth code of the whole range.
"""

from __future__ import annotations

import math

import torch


def sincos_frequencies(
    dim: int,
    min_period: float,
    max_period: float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """ω_j = 2π / p_j, p_j = min·(max/min)^(j / (dim/2 − 1)): (dim/2,) in ``dtype`` (default: torch's)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=device)  # (dim/2,)
    period = min_period * (max_period / min_period) ** fraction  # (dim/2,)
    return 2 * math.pi / period  # (dim/2,)


def sincos_embedding(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """t (B,), ω (dim/2,) -> [sin(ω t), cos(ω t)] (B, dim), computed in the inputs' dtype."""
    angles = t[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


def sincos_time_embedding(tau: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """φ(τ): (B,) -> (B, dim), fixed frequencies, computed in float64 and returned in τ's dtype.

    openpi's ``posemb_sincos`` (π0: min 4e-3, max 4.0).
    """
    if dim % 2:
        raise ValueError(f"sincos_time_embedding: dim must be even, got {dim}")
    freqs = sincos_frequencies(dim, min_period, max_period, dtype=torch.float64, device=tau.device)
    return sincos_embedding(tau.double(), freqs).to(tau.dtype)  # (B, dim)
