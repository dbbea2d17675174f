"""`vlaforge eval --int8`: the evaluated policy is the dynamically quantized copy, close to fp32."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from tests.models.policy_fakes import TINY, TinyDataset
from vlaforge.eval.commands import load_policy
from vlaforge.models.recipes import make_policy


def test_int8_policy_is_quantized_and_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    ds = TinyDataset()
    run = make_policy("octo-tiny", ds, head="l1", **{**TINY, "augment": False}).save(tmp_path / "policy")
    fp32, int8 = load_policy(str(run)), load_policy(str(run), int8=True)
    quantized = [n for n, m in int8.named_modules() if "quantized" in type(m).__module__]
    assert quantized and all(n.startswith(("transformer.", "head.")) for n in quantized)
    batch = default_collate([ds[i] for i in range(4)])
    a, b = fp32.predict_batch(batch), int8.predict_batch(batch)  # (B, H, A) in robot units
    assert a.shape == b.shape
    scale = a.abs().max().item() + 1e-6
    assert (a - b).abs().max().item() < 0.1 * scale  # int8 rounding, not a different policy


def test_int8_refuses_policies_it_does_not_cover(tmp_path, monkeypatch):
    import vlaforge.models.policy as policy_module

    class NotOcto:
        pass

    monkeypatch.setattr(policy_module.Policy, "load", staticmethod(lambda path: NotOcto()))
    with pytest.raises(SystemExit, match="--int8 covers the octo-family"):
        load_policy("somewhere", int8=True)
