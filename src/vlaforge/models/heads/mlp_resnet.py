"""The MLP-ResNet used by Octo's diffusion head (and OpenVLA-OFT's L1 head), and its time-conditioned form.

MLPResNet (Octo): Linear(in -> hidden), then ``num_blocks`` residual blocks
``x + Linear(4h -> h)(swish(Linear(h -> 4h)(LayerNorm(dropout(x)))))``, then swish and
Linear(hidden -> out).

:class:`TimeConditionedMLP` is the denoiser shared by the diffusion and flow heads: it embeds
the time with sinusoidal Fourier features (32) and a small MLP, concatenates it with the
conditioning features and the flattened noisy chunk (H * A), and predicts a vector of the same
size (noise for DDPM, velocity for flow matching).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.time_embedding import sincos_embedding, sincos_frequencies


class MLPResNetBlock(nn.Module):
    def __init__(self, hidden_dim: int, dropout: float = 0.0, use_layer_norm: bool = True):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_dim) if use_layer_norm else nn.Identity()
        self.fc1 = nn.Linear(hidden_dim, 4 * hidden_dim)
        self.fc2 = nn.Linear(4 * hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dropout(x))  # (B, h)
        return x + self.fc2(F.silu(self.fc1(h)))  # (B, h)


class MLPResNet(nn.Module):
    """(B, in_dim) -> (B, out_dim)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        dropout: float = 0.0,
        use_layer_norm: bool = True,
    ):
        super().__init__()
        if hidden_dim < 1 or num_blocks < 0:
            raise ValueError(
                f"MLPResNet: hidden_dim must be >= 1 and num_blocks >= 0, got {hidden_dim}, {num_blocks}"
            )
        self.inp = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            [MLPResNetBlock(hidden_dim, dropout, use_layer_norm) for _ in range(num_blocks)]
        )
        self.out = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)  # (B, h)
        for block in self.blocks:
            x = block(x)  # (B, h)
        return self.out(F.silu(x))  # (B, out)


class FourierFeatures(nn.Module):
    """Scalar time t in [0, 1] (B,) -> (B, dim) ``[sin(2π t / p), cos(2π t / p)]``.

    Periods are log-spaced in [4e-3, 4] (π0's choice for t in [0, 1]) so both the coarse and the
    fine structure of the ~10-20 sampling steps are visible to the network. With
    ``learnable=True`` the frequencies are trained, as in Octo's Fourier features.
    """

    def __init__(
        self, dim: int = 32, min_period: float = 4e-3, max_period: float = 4.0, learnable: bool = True
    ):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"FourierFeatures: dim must be an even int >= 2, got {dim}")
        freqs = sincos_frequencies(dim, min_period, max_period)  # (dim/2,)
        if learnable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return sincos_embedding(t.float(), self.freqs)  # (B, dim)


class TimeConditionedMLP(nn.Module):
    """Denoiser net: (x (B, X), t (B,) in [0, 1], cond (B, F)) -> (B, X)."""

    def __init__(
        self,
        x_dim: int,
        cond_dim: int,
        time_dim: int = 32,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.time_features = FourierFeatures(time_dim)
        # Octo: MLP((2 * time_dim, time_dim)) with swish over the Fourier features.
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, 2 * time_dim), nn.SiLU(), nn.Linear(2 * time_dim, time_dim)
        )
        self.net = MLPResNet(time_dim + cond_dim + x_dim, x_dim, hidden_dim, num_blocks, dropout)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(self.time_features(t))  # (B, time_dim)
        return self.net(torch.cat([temb, cond, x], dim=-1))  # (B, X)
