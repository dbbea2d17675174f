"""BlockTransformer: masks are obeyed, the prefix KV cache equals a full pass."""

from __future__ import annotations

import pytest
import torch

from vlaforge.models.attention import (
    block_slices,
    build_attention_mask,
    octo_blocks,
    pi0_blocks,
    prefix_lm_blocks,
)
from vlaforge.models.transformer import BlockTransformer


@pytest.fixture()
def model() -> BlockTransformer:
    torch.manual_seed(0)
    return BlockTransformer(width=32, depth=2, heads=4, mlp_dim=64).eval()


def test_prefix_kv_cache_equals_full_pass(model):
    mask = build_attention_mask(pi0_blocks(5, 1, 3))  # (9, 9)
    x = torch.randn(2, 9, 32)  # (B, N, D)
    full = model(x, mask)  # (B, N, D)
    prefix_out, kv = model(x[:, :5], mask[:5, :5], return_kv=True)
    assert len(kv) == 2 and kv[0][0].shape == (2, 4, 5, 8)  # (B, heads, Np, head_dim)
    suffix_out = model(x[:, 5:], mask[5:, :], past_kv=kv)  # mask rows of the suffix, all columns
    torch.testing.assert_close(prefix_out, full[:, :5], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(suffix_out, full[:, 5:], atol=1e-5, rtol=1e-5)
    # the cache is reusable: a second suffix (another flow step) against the same prefix
    x2 = torch.randn(2, 4, 32)
    again = model(x2, mask[5:, :], past_kv=kv)
    torch.testing.assert_close(again, model(torch.cat([x[:, :5], x2], 1), mask)[:, 5:], atol=1e-5, rtol=1e-5)


def test_incremental_causal_decoding_with_returned_cache(model):
    mask = build_attention_mask(prefix_lm_blocks(4, 3, action_causal=True))  # (7, 7)
    x = torch.randn(1, 7, 32)
    full = model(x, mask)
    out, kv = model(x[:, :4], mask[:4, :4], return_kv=True)
    for i in range(4, 7):  # decode one action token at a time
        step, kv = model(x[:, i : i + 1], mask[i : i + 1, : i + 1], past_kv=kv, return_kv=True)
        torch.testing.assert_close(step, full[:, i : i + 1], atol=1e-5, rtol=1e-5)
    assert kv[0][0].shape[2] == 7


def test_cache_with_batch_one_broadcasts(model):
    mask = build_attention_mask(pi0_blocks(3, 0, 2))
    prefix = torch.randn(1, 3, 32)
    _, kv = model(prefix, mask[:3, :3], return_kv=True)
    suffix = torch.randn(4, 2, 32)  # e.g. 4 action samples for one observation
    out = model(suffix, mask[3:, :], past_kv=kv)
    ref = model(torch.cat([prefix.expand(4, -1, -1), suffix], 1), mask)[:, 3:]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_octo_mask_isolates_readouts_and_future(model):
    blocks = octo_blocks(n_task=2, n_obs=3, n_readout=1, history=2)
    sl = block_slices(blocks)
    mask = build_attention_mask(blocks)
    x = torch.randn(1, mask.shape[0], 32)
    base = model(x, mask)
    # changing readout inputs changes nothing but the readouts (nobody attends to them)
    y = x.clone()
    # (random perturbations: a constant shift would be removed by LayerNorm)
    y[:, sl["readout_0"]] += torch.randn_like(y[:, sl["readout_0"]])
    y[:, sl["readout_1"]] += torch.randn_like(y[:, sl["readout_1"]])
    out = model(y, mask)
    n_ctx = sl["obs_1"].stop
    torch.testing.assert_close(out[:, :n_ctx], base[:, :n_ctx])
    assert (out[:, sl["readout_0"]] - base[:, sl["readout_0"]]).abs().max() > 1e-4
    # changing obs_1 leaves task, obs_0 and readout_0 alone (causal in time) but changes readout_1
    z = x.clone()
    z[:, sl["obs_1"]] += torch.randn_like(z[:, sl["obs_1"]])
    out = model(z, mask)
    for name in ("task", "obs_0", "readout_0"):
        torch.testing.assert_close(out[:, sl[name]], base[:, sl[name]])
    assert (out[:, sl["readout_1"]] - base[:, sl["readout_1"]]).abs().max() > 1e-4


def test_per_sample_mask(model):
    m1 = build_attention_mask(prefix_lm_blocks(3, 2, action_causal=True))
    m2 = build_attention_mask(prefix_lm_blocks(3, 2, action_causal=False))
    x = torch.randn(2, 5, 32)
    both = model(x, torch.stack([m1, m2]))  # (B, N, N)
    torch.testing.assert_close(both[:1], model(x[:1], m1))
    torch.testing.assert_close(both[1:], model(x[1:], m2))


def test_gradient_checkpointing_same_values_and_grads():
    torch.manual_seed(0)
    a = BlockTransformer(16, 2, 2, 32)
    b = BlockTransformer(16, 2, 2, 32, gradient_checkpointing=True)
    b.load_state_dict(a.state_dict())
    mask = build_attention_mask(pi0_blocks(3, 1, 2))
    x = torch.randn(2, 6, 16)
    a(x, mask).square().sum().backward()
    b(x, mask).square().sum().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_bad_inputs_fail_loudly(model):
    x = torch.randn(1, 4, 32)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        model(x, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        model(x, torch.ones(4, 4))
    empty_row = torch.ones(4, 4, dtype=torch.bool)
    empty_row[2] = False
    with pytest.raises(ValueError, match="no allowed key"):
        model(x, empty_row)
    with pytest.raises(ValueError, match="x must be"):
        model(torch.randn(1, 4, 8), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        BlockTransformer(30, 1, 4, 8)
