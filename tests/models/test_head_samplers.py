"""Schedules and samplers against analytic denoisers (known data distributions)."""

from __future__ import annotations

import math

import pytest
import torch

from vlaforge.models.heads import (
    CosineSchedule,
    DDIMSampler,
    DDPMSampler,
    EulerSampler,
    UniformBinner,
    sample_flow_time,
)


def test_cosine_schedule_matches_the_formula():
    sch = CosineSchedule(steps=20, s=0.008)
    ab = sch.alpha_bars()

    def f(t: float) -> float:
        return math.cos((t / 20 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 5, 10, 18):
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert (ab[1:] < ab[:-1]).all() and ab[0] > 0.99
    assert sch.betas().max().item() == pytest.approx(0.999)  # last beta is clipped
    x0, eps = torch.ones(3, 2), torch.zeros(3, 2)
    xt = sch.add_noise(x0, eps, torch.tensor([0, 10, 19]))
    torch.testing.assert_close(xt[:, 0], ab[[0, 10, 19]].sqrt())


def _gaussian_eps(sch: CosineSchedule, mu: float, sigma: float):
    """Exact E[ε | x_t] for data x0 ~ N(mu, sigma²)."""
    ab = sch.alpha_bars()

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].view(-1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * sigma**2 + 1 - a)

    return fn


@pytest.mark.parametrize(
    ("sampler", "std_tol"),
    [
        (DDPMSampler(CosineSchedule(100), clip=None), 0.06),
        (DDPMSampler(CosineSchedule(100), clip=None, variance="small"), 0.06),
        (DDIMSampler(CosineSchedule(100), steps=100, clip=None), 0.06),
        (DDPMSampler(CosineSchedule(20), clip=None), 0.12),  # Octo's setting
        # few deterministic steps shrink the spread (a known discretization bias of DDIM)
        (DDIMSampler(CosineSchedule(100), steps=10, clip=None), 0.3),
    ],
    ids=["ddpm-large-100", "ddpm-small-100", "ddim-100", "ddpm-large-20", "ddim-10-of-100"],
)
def test_diffusion_samplers_recover_a_gaussian(sampler, std_tol):
    mu, sigma = 0.7, 0.3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8000, 1, generator=g)
    out = sampler.sample(_gaussian_eps(sampler.schedule, mu, sigma), x, generator=g)
    assert out.mean().item() == pytest.approx(mu, abs=0.03)
    assert out.std().item() == pytest.approx(sigma, rel=std_tol)


def test_ddim_recovers_a_point_mass_exactly():
    sch = CosineSchedule(20)
    c = torch.tensor([[0.3, -1.2]])
    ab = sch.alpha_bars()

    def fn(x, t):  # exact noise for data = c
        a = ab[t].view(-1, 1)
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(DDIMSampler(sch, steps=5).sample(fn, x), c.expand(16, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(DDPMSampler(sch).sample(fn, x), c.expand(16, -1), atol=1e-4, rtol=0)


def test_ddim_timesteps():
    sch = CosineSchedule(20)
    assert DDIMSampler(sch, steps=20).timesteps() == list(range(19, -1, -1))
    ts = DDIMSampler(sch, steps=5).timesteps()
    assert len(ts) == 5 and ts[0] == 18 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match="steps"):
        DDIMSampler(sch, steps=21)


def test_euler_exact_on_a_point_mass_and_close_on_a_gaussian():
    c = torch.tensor([[0.5, -0.25]])
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    out = EulerSampler(steps=4).sample(lambda x, tau: (c - x) / (1 - tau[:, None]), x)  # straight lines
    torch.testing.assert_close(out, c.expand(8, -1), atol=1e-5, rtol=0)

    mu, sigma = -0.4, 0.5

    def velocity(x, tau):  # E[x1 - ε | x_τ] for x1 ~ N(mu, sigma²), x_τ = τ x1 + (1 - τ) ε
        t = tau[:, None]
        var = t**2 * sigma**2 + (1 - t) ** 2
        return mu + (t * sigma**2 - (1 - t)) / var * (x - t * mu)

    x = torch.randn(4000, 1, generator=torch.Generator().manual_seed(1))
    out = EulerSampler(steps=50).sample(velocity, x)
    assert out.mean().item() == pytest.approx(mu, abs=0.03)
    assert out.std().item() == pytest.approx(sigma, rel=0.1)


def test_samplers_are_deterministic_given_a_generator():
    sch = CosineSchedule(10)
    fn = _gaussian_eps(sch, 0.0, 1.0)
    x = torch.randn(4, 3)
    a = DDPMSampler(sch).sample(fn, x, generator=torch.Generator().manual_seed(5))
    b = DDPMSampler(sch).sample(fn, x, generator=torch.Generator().manual_seed(5))
    c = DDPMSampler(sch).sample(fn, x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flow_time_distribution_emphasises_noise():
    tau = sample_flow_time(200_000, generator=torch.Generator().manual_seed(0))
    # τ = s (1 - u), u ~ Beta(1.5, 1): E[τ] = 0.999 * (1 - 1.5 / 2.5)
    assert tau.mean().item() == pytest.approx(0.999 * 0.4, abs=0.005)
    assert tau.min() >= 0 and tau.max() <= 0.999
    assert (tau < 0.5).float().mean() > 0.6  # most samples are noisier than halfway


def test_uniform_binner():
    b = UniformBinner(256)
    x = torch.linspace(-1, 1, 1001)
    ids = b.encode(x)
    assert ids.min() == 0 and ids.max() == 255
    assert (b.decode(ids) - x).abs().max() <= 1 / 256 + 1e-6  # within half a bin width (2/256)
    assert b.encode(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]  # out of range clamps
