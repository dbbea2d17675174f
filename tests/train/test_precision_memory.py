"""Gradient accumulation, gradient checkpointing and bf16 autocast in the trainer."""

import pytest
import torch

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.policies.recipes import make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train


def _one_step_grads(tmp_path, name, **cfg_kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ds = TinyDataset(n=32)
    policy = make_policy("octo-tiny", ds, head="l1", augment=False, **TINY)
    base = {"steps": 1, "batch_size": 8, "warmup_steps": 1, "ema_decay": 0.0, "num_workers": 0}
    train(policy, ds, TrainConfig(**{**base, **cfg_kw}), tmp_path / name, progress=False)
    # The last step's gradients stay in .grad until the next zero_grad.
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


def _assert_close(a, b, atol):
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-4), k


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    big = _one_step_grads(tmp_path, "big", batch_size=8)
    accum = _one_step_grads(tmp_path, "accum", batch_size=4, grad_accum=2)
    _assert_close(big, accum, atol=1e-6)


def test_grad_checkpointing_gives_the_same_gradients(tmp_path):
    plain = _one_step_grads(tmp_path, "plain")
    ckpt = _one_step_grads(tmp_path, "ckpt", grad_checkpointing=True)
    _assert_close(plain, ckpt, atol=1e-6)


def test_bf16_autocast_trains(tmp_path):
    torch.manual_seed(0)
    ds = TinyDataset(n=16)
    policy = make_policy("octo-tiny", ds, head="flow", **TINY)
    cfg = TrainConfig(steps=3, batch_size=8, warmup_steps=1, num_workers=0, precision="bf16", log_every=1)
    res = train(policy, ds, cfg, tmp_path / "run", progress=False)
    assert res.steps == 3 and res.final_loss == res.final_loss  # finite, not NaN
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # weights stay fp32


@pytest.mark.parametrize("field,value", [("precision", "fp16"), ("grad_accum", 0)])
def test_invalid_settings_are_named(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})
