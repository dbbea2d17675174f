"""One shared suite that every action head passes (diffusers-style), plus per-head behaviour.

Tiny nets and a few hundred Adam steps, so the whole file runs in seconds on one thread.
"""

from __future__ import annotations

import json

import pytest
import torch

from vlaforge.models.heads import HEADS, ActionHead, make_head

TINY: dict[str, dict] = {
    "diffusion": dict(hidden_dim=64, num_blocks=2),
    "flow": dict(hidden_dim=64, num_blocks=2),
    "binned": dict(hidden_dim=64),
    "l1": dict(hidden_dim=64, num_blocks=1),
    "mse": dict(hidden_dim=64, num_blocks=1),
}
STOCHASTIC = ("diffusion", "flow")
# mean |sample - target| after overfitting; random guessing is ~0.6 on U(-0.9, 0.9)
MAX_SAMPLE_ERR = {"diffusion": 0.2, "flow": 0.2, "binned": 0.02, "l1": 0.05, "mse": 0.05}


def test_registry_covers_all_heads():
    assert sorted(HEADS) == sorted(TINY)


def _train(head: ActionHead, batches, steps: int, lr: float = 3e-3) -> None:
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        features, actions = batches(i, g)
        loss, metrics = head.loss(features, actions, generator=g)
        assert torch.isfinite(loss) and set(metrics) >= {"loss"}
        opt.zero_grad()
        loss.backward()
        opt.step()


def _eval_loss(head: ActionHead, features, actions) -> float:
    with torch.no_grad():  # average over the noise draws of stochastic losses
        losses = [
            head.loss(features, actions, generator=torch.Generator().manual_seed(k))[0] for k in range(8)
        ]
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("name", sorted(TINY))
def test_overfits_a_fixed_batch(name):
    torch.manual_seed(0)
    head = make_head(name, feature_dim=16, horizon=4, action_dim=2, **TINY[name])
    features = torch.randn(8, 16)  # (B, F)
    actions = torch.rand(8, 4, 2) * 1.8 - 0.9  # (B, H, A) in the normalized range
    before = _eval_loss(head, features, actions)
    _train(head, lambda i, g: (features, actions), steps=300)
    after = _eval_loss(head, features, actions)
    assert after < before / 5, f"{name}: loss {before:.3f} -> {after:.3f}"
    samples = head.sample(features, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (8, 4, 2)
    err = (samples - actions).abs().mean().item()
    assert err < MAX_SAMPLE_ERR[name], f"{name}: mean abs sample error {err:.3f}"


def _bimodal_batches(i: int, g: torch.Generator):
    sign = torch.randint(0, 2, (256, 1, 1), generator=g) * 2 - 1  # (B, 1, 1) either mode
    actions = 0.8 * sign + 0.05 * torch.randn(256, 1, 1, generator=g)  # modes at ±0.8
    return torch.ones(256, 4), actions  # constant features: the head must represent p(a) itself


@pytest.mark.parametrize("name", sorted(TINY))
def test_bimodal_target(name):
    torch.manual_seed(0)
    head = make_head(name, feature_dim=4, horizon=1, action_dim=1, **TINY[name])
    _train(head, _bimodal_batches, steps=400)
    kw = {"temperature": 1.0} if name == "binned" else {}  # the binned head samples its categorical
    s = head.sample(torch.ones(2000, 4), generator=torch.Generator().manual_seed(0), **kw).flatten()
    near_pos = ((s - 0.8).abs() < 0.25).float().mean().item()
    near_neg = ((s + 0.8).abs() < 0.25).float().mean().item()
    middle = (s.abs() < 0.4).float().mean().item()
    if name in ("diffusion", "flow", "binned"):
        # multimodal heads reproduce both modes and rarely land between them
        assert near_pos >= 0.3 and near_neg >= 0.3 and middle <= 0.1, (name, near_pos, near_neg, middle)
    else:
        # regression heads give one answer for one input: at most one mode, usually the middle
        assert s.std() < 1e-4 and min(near_pos, near_neg) < 0.3, (name, near_pos, near_neg)
        assert s.abs().max() < 0.8  # strictly between the modes (mean for MSE, a median for L1)
        if name == "mse":
            assert s.mean().abs() < 0.15  # the conditional mean of ±0.8 is 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_sampling_is_deterministic_given_a_generator(name):
    torch.manual_seed(0)
    head = make_head(name, feature_dim=6, horizon=3, action_dim=2, **TINY[name])
    f = torch.randn(5, 6)
    kw = {"temperature": 1.0} if name == "binned" else {}
    a = head.sample(f, generator=torch.Generator().manual_seed(7), **kw)
    b = head.sample(f, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a, b)
    c = head.sample(f, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, c) != (name in STOCHASTIC or name == "binned")


@pytest.mark.parametrize("name", sorted(TINY))
def test_masked_entries_do_not_matter(name):
    torch.manual_seed(0)
    head = make_head(name, feature_dim=6, horizon=3, action_dim=2, **TINY[name])
    f = torch.randn(4, 6)
    actions = torch.rand(4, 3, 2) - 0.5
    mask = torch.ones(4, 3, 2, dtype=torch.bool)
    mask[:, 2] = False  # last chunk step is past the episode end
    mask[1, :, 1] = False  # a padded action dimension
    garbage = actions.clone()
    garbage[~mask] = float("nan")
    l1, _ = head.loss(f, actions, mask, generator=torch.Generator().manual_seed(3))
    l2, _ = head.loss(f, garbage, mask, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(l1, l2)
    l2.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(TINY))
def test_config_roundtrip_and_shape_errors(name):
    head = make_head(name, feature_dim=6, horizon=3, action_dim=2, **TINY[name])
    cfg = json.loads(json.dumps(head.config()))
    clone = make_head(**cfg)
    clone.load_state_dict(head.state_dict())  # same architecture, strict
    assert cfg["name"] == name
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        head.sample(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(2, 3, 2\)"):
        head.loss(torch.randn(2, 6), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="NaN"):
        head.loss(torch.randn(2, 6), torch.full((2, 3, 2), float("nan")))


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"valid heads: \['binned', 'diffusion', 'flow', 'l1', 'mse'\]"):
        make_head("difusion", 4, 1, 1)
    with pytest.raises(TypeError, match="valid options"):
        make_head("flow", 4, 1, 1, num_steps=3)
    with pytest.raises(ValueError, match="sampler"):
        make_head("diffusion", 4, 1, 1, sampler="euler")


def test_diffusion_ddim_and_step_override():
    torch.manual_seed(0)
    head = make_head("diffusion", 4, 2, 2, hidden_dim=32, num_blocks=1, train_steps=20)
    f = torch.randn(3, 4)
    calls = []
    orig = head.net.forward
    head.net.forward = lambda *a: calls.append(1) or orig(*a)  # count denoiser evaluations
    head.sample(f)
    assert len(calls) == 20  # DDPM: every training step
    calls.clear()
    head.sample(f, steps=5)  # DDPM cannot skip steps -> DDIM with 5
    assert len(calls) == 5
    calls.clear()
    out1 = head.sample(f, sampler="ddim", steps=4)
    out2 = head.sample(f, sampler="ddim", steps=4)
    assert len(calls) == 8 and not torch.equal(out1, out2)  # fresh initial noise without a generator
    assert out1.abs().max() <= 5.0


def test_flow_steps_override():
    head = make_head("flow", 4, 2, 2, hidden_dim=32, num_blocks=1, steps=10)
    calls = []
    orig = head.net.forward
    head.net.forward = lambda *a: calls.append(1) or orig(*a)
    head.sample(torch.randn(3, 4))
    head.sample(torch.randn(3, 4), steps=3)
    assert len(calls) == 13
