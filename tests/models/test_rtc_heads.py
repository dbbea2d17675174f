"""Inpainting (real-time chunking) in the flow and diffusion heads, against analytic denoisers.

The data distribution is two constant chunks, all +1 or all -1 (normalized units): a bimodal
policy, where two independent samples disagree half of the time. For it the exact flow velocity
and noise prediction are known in closed form, so the heads' own sampling code is tested
without training: with weights 1 the sample is the prefix, with weights 0 it is the unguided
sample, the frozen part is exact, the free tail continues the prefix's mode, and consecutive
chunks join without the jump an unguided resample makes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlaforge.models.heads import make_head
from vlaforge.models.heads.diffusion import DiffusionHead
from vlaforge.models.heads.flow import FlowHead
from vlaforge.runtime.rtc import rtc_weights

H, A, F = 8, 2, 4
MODES = torch.stack([torch.ones(H * A), -torch.ones(H * A)])  # (K=2, H*A) the two clean chunks


def _posterior_mean(x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[a | x] for x = scale * a + std * noise, a uniform over MODES: (B, H*A)."""
    d2 = ((x[:, None, :] - scale[:, None, None] * MODES[None]) ** 2).sum(-1)  # (B, K)
    w = torch.softmax(-d2 / (2 * std[:, None] ** 2), dim=1)  # (B, K)
    return w @ MODES  # (B, H*A)


class ExactVelocity(nn.Module):
    """Flow matching's optimal velocity for x_τ = τ·a + (1 − τ)·ε: v = (E[a | x_τ] − x_τ) / (1 − τ)."""

    def forward(self, x: torch.Tensor, tau: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        std = 1 - tau  # (B,)
        return (_posterior_mean(x, tau, std) - x) / std[:, None]


class ExactNoise(nn.Module):
    """The optimal ε-prediction for x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε (t arrives as t / T)."""

    def __init__(self, head: DiffusionHead) -> None:
        super().__init__()
        self.alpha_bars = head.schedule.alpha_bars()  # (T,)
        self.T = head.schedule.steps

    def forward(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bars[(t * self.T).round().long()]  # (B,)
        x0 = _posterior_mean(x, ab.sqrt(), (1 - ab).sqrt())  # (B, H*A)
        return (x - ab.sqrt()[:, None] * x0) / (1 - ab).sqrt()[:, None]


def analytic(kind: str):
    if kind == "flow":
        head = FlowHead(F, H, A, steps=10)
        head.net = ExactVelocity()
    else:
        sampler = kind.split("-")[1]
        head = DiffusionHead(F, H, A, train_steps=20, sampler=sampler, sample_steps=10)
        head.net = ExactNoise(head)
    return head


KINDS = ["flow", "diffusion-ddpm", "diffusion-ddim"]


def sample(head, b: int, seed: int, **kw) -> torch.Tensor:
    return head.sample(torch.zeros(b, F), generator=torch.Generator().manual_seed(seed), **kw)  # (B, H, A)


@pytest.mark.parametrize("kind", KINDS)
def test_unguided_analytic_heads_sample_both_modes(kind):
    x = sample(analytic(kind), 64, 0)
    means = x.mean(dim=(1, 2))  # (B,)
    assert torch.allclose(x, means[:, None, None].expand_as(x), atol=0.05)  # each chunk is one mode
    assert (means > 0.9).sum() > 10 and (means < -0.9).sum() > 10


@pytest.mark.parametrize("kind", KINDS)
def test_weights_one_return_the_prefix_and_weights_zero_the_unguided_sample(kind):
    head = analytic(kind)
    prefix = torch.linspace(-1.5, 1.5, H * A).reshape(1, H, A).expand(4, H, A)  # (B, H, A) not a mode
    ones = sample(head, 4, 1, prefix=prefix, prefix_weights=torch.ones(H))
    assert torch.equal(ones, prefix)
    zeros = sample(head, 4, 1, prefix=prefix, prefix_weights=torch.zeros(H))
    assert torch.equal(zeros, sample(head, 4, 1))


@pytest.mark.parametrize("kind", KINDS)
def test_frozen_part_is_exact_and_the_free_tail_continues_the_prefix_mode(kind):
    head = analytic(kind)
    d, s = 2, 4
    w = torch.from_numpy(rtc_weights(H, d, s))  # (H,) 1 1 decay decay 0 0 0 0
    b = 32
    sign = torch.where(torch.arange(b) % 2 == 0, 1.0, -1.0)  # (B,) half the prefixes in each mode
    prefix = sign[:, None, None] * torch.ones(b, H, A)  # (B, H, A)
    prefix[:, :d] += 0.05 * torch.randn(b, d, A, generator=torch.Generator().manual_seed(3))
    prefix[:, H - s :] = 7.0  # past the previous chunk's end: weight 0, must be ignored
    x = sample(head, b, 2, prefix=prefix, prefix_weights=w)
    assert torch.equal(x[:, :d], prefix[:, :d])
    tail = x[:, H - s :]  # (B, s, A) free part
    assert not torch.allclose(tail, prefix[:, H - s :])
    assert torch.allclose(tail, sign[:, None, None].expand_as(tail), atol=0.1)  # continues its mode


@pytest.mark.parametrize("kind", KINDS)
def test_consecutive_chunks_join_with_a_smaller_jump_under_rtc(kind):
    """Execute s actions of chunk n, then switch to chunk n + 1 (requested d ticks before it takes over)."""
    head = analytic(kind)
    b, d, s = 64, 2, 4
    w = torch.from_numpy(rtc_weights(H, d, s))
    prev = sample(head, b, 10)  # (B, H, A) the chunk being executed
    prefix = torch.cat(
        [prev[:, s:], prev[:, -1:].expand(b, s, A)], dim=1
    )  # (B, H, A) aligned to the new chunk
    free = sample(head, b, 11)
    guided = sample(head, b, 11, prefix=prefix, prefix_weights=w)

    def jump(new: torch.Tensor) -> float:  # last executed action of prev -> first executed action of new
        return float((new[:, d] - prev[:, s + d - 1]).norm(dim=-1).mean())

    assert jump(free) > 0.5  # independent samples switch modes about half of the time
    assert jump(guided) < 0.1 * jump(free)


@pytest.mark.parametrize("name", ["flow", "diffusion"])
def test_bad_prefix_arguments_are_rejected_with_the_argument_named(name):
    head = make_head(name, feature_dim=F, horizon=H, action_dim=A, hidden_dim=16, num_blocks=1)
    f = torch.zeros(2, F)
    with pytest.raises(ValueError, match="go together"):
        head.sample(f, prefix=torch.zeros(2, H, A))
    with pytest.raises(ValueError, match=r"prefix must be \(B, H, A\)"):
        head.sample(f, prefix=torch.zeros(2, H - 1, A), prefix_weights=torch.ones(H))
    with pytest.raises(ValueError, match=r"prefix_weights must be \(H,\)"):
        head.sample(f, prefix=torch.zeros(2, H, A), prefix_weights=torch.ones(H + 1))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        head.sample(f, prefix=torch.zeros(2, H, A), prefix_weights=torch.full((H,), 1.5))
    bad = torch.zeros(2, H, A)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        head.sample(f, prefix=bad, prefix_weights=torch.ones(H))
    bad_unused = torch.zeros(2, H, A)
    bad_unused[:, -1] = float("nan")  # weight 0 there: ignored
    w = torch.ones(H)
    w[-1] = 0.0
    assert torch.isfinite(head.sample(f, prefix=bad_unused, prefix_weights=w)).all()
