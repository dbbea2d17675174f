"""The shared math pieces: one flow-matching object, one time embedding, one greedy loop, one
per-sample cross-entropy (each used by Octo's heads and by the π0 family)."""

import math

import pytest
import torch

from vlaforge.models.heads.flow_matching import FlowMatching, pigdm_velocity, pigdm_weight
from vlaforge.models.heads.mlp_resnet import FourierFeatures
from vlaforge.models.lm.generate import greedy_loop
from vlaforge.models.lm.loss import per_sample_mean, token_cross_entropy
from vlaforge.models.time_embedding import sincos_time_embedding


def test_interpolation_is_the_same_for_any_trailing_shape():
    """FlowHead flattens the chunk (B, H*A), π0 keeps (B, H, 32): same τ, ε and A^τ for the same generator."""
    fm = FlowMatching(1.5, 0.999)
    a = torch.randn(4, 3, 2)
    tau, noise, x = fm.interpolate(a, torch.Generator().manual_seed(0))
    tau2, noise2, x2 = fm.interpolate(a.reshape(4, -1), torch.Generator().manual_seed(0))
    assert torch.equal(tau, tau2) and torch.equal(noise.reshape(4, -1), noise2)
    assert torch.equal(x.reshape(4, -1), x2)
    torch.testing.assert_close(x, tau[:, None, None] * a + (1 - tau[:, None, None]) * noise)
    assert torch.equal(fm.target(a, noise), a - noise)
    assert float(fm.loss(a - noise, a, noise, torch.ones_like(a))) == 0.0


def test_euler_follows_straight_lines_and_zero_guidance_changes_nothing():
    c = torch.randn(2, 3, 4)
    x0 = torch.randn(2, 3, 4)

    def velocity(x, tau):  # the exact velocity of the straight path from x0 to c
        return (c - x) / (1 - tau[:, None, None])

    torch.testing.assert_close(FlowMatching.sample(velocity, x0, 5), c)
    guided = FlowMatching.sample(velocity, x0, 5, guidance=(torch.zeros_like(c), torch.zeros(1, 3, 4), 5.0))
    torch.testing.assert_close(guided, FlowMatching.sample(velocity, x0, 5))


def test_pigdm_pulls_toward_the_target():
    x = torch.zeros(1, 2)
    target = torch.ones(1, 2)
    tau = torch.tensor([0.5])
    v = pigdm_velocity(lambda xt, t: torch.zeros_like(xt), x, tau, target, torch.ones(1, 2), 5.0)
    assert bool((v > 0).all())  # guidance = weight * (Y - Â¹) with ∂Â¹/∂x = I
    torch.testing.assert_close(v, pigdm_weight(tau, 5.0)[:, None] * target)


def test_one_time_embedding_for_octo_and_pi0():
    tau = torch.rand(6)
    fixed = FourierFeatures(32, learnable=False)(tau)  # Octo's heads, float32
    # float32 vs float64 angles (up to 2π·250 rad): equal to float32 rounding
    torch.testing.assert_close(fixed, sincos_time_embedding(tau, 32, 4e-3, 4.0), rtol=0, atol=5e-4)
    with pytest.raises(ValueError, match="even"):
        sincos_time_embedding(tau, 7, 4e-3, 4.0)


def test_greedy_loop_masks_ids_ends_rows_and_feeds_the_last_token_on_request():
    V = 5
    fed = []

    def feed(tok, t):
        fed.append(tok.clone())
        logits = torch.zeros(2, V)
        logits[0, 4] = 1.0  # row 0 ends at the next step
        logits[1, 1 if t < 2 else 4] = 1.0
        return logits

    first = torch.zeros(2, V)
    first[:, 0] = 2.0  # id 0 wins unless it is not allowed
    first[:, 2] = 1.0
    allowed = torch.tensor([False, True, True, True, True])
    out = greedy_loop(first, feed, lambda s: s, 6, allowed=allowed, eos_token_id=4)
    assert out.tokens.tolist() == [[2, 4, 4, 4], [2, 1, 1, 4]]
    assert torch.equal(out.logits[:, 0], first)  # raw logits, before the constraint
    assert len(fed) == 3  # the final token is not fed ...
    fed.clear()
    out = greedy_loop(first, feed, lambda s: s, 6, allowed=allowed, eos_token_id=4, feed_last=True)
    assert len(fed) == 4 and out.tokens.shape == (2, 4)  # ... unless asked (a cache that must hold it)


def test_per_sample_cross_entropy_weighs_samples_equally():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    logits = torch.zeros(int(mask.sum()), 3)
    targets = torch.zeros(int(mask.sum()), dtype=torch.long)
    ce, hit = token_cross_entropy(logits, targets, mask)
    assert ce.shape == mask.shape and bool((ce[~mask] == 0).all()) and bool(hit[~mask].logical_not().all())
    per = per_sample_mean(ce, mask)
    torch.testing.assert_close(per, torch.full((2,), math.log(3.0)))
    assert float(per_sample_mean(ce, torch.zeros_like(mask))[0]) == 0.0
