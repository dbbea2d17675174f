"""Static-shape decoding (`forward(cache_position=...)`, `DecoderLM.compile_decoding`) == the growing cache.

The fast tests run the static step eagerly: it must give the growing-cache tokens exactly and its
logits to float rounding. The compiled step (slow: inductor builds C++ kernels) must give the same
tokens with one graph for every decode step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.lm.test_lm_cache import FAMILIES, _model
from vlaforge.models.attention import apply_key_padding, build_attention_mask, prefix_lm_blocks
from vlaforge.models.lm import KVCache, generate_greedy

# inductor builds C++ kernels at the first call: minutes on a loaded 2-core machine, past the
# suite's 300 s per-test timeout.
COMPILE_TIMEOUT_S = 1800


def _padded_prompt(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 512, (3, 9), generator=torch.Generator().manual_seed(seed))  # (B, Lp)
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    valid[2, :1] = False
    return ids, valid


def _assert_same_decoding(a, b, rel: float) -> None:
    """Same tokens; logits equal up to ``rel`` of their magnitude (float32 rounding: the static step's
    softmax and A·V sum over all cache slots, a few more exact zeros than the growing view)."""
    assert torch.equal(a.tokens, b.tokens)
    scale = max(1.0, a.logits.abs().max().item())
    assert (a.logits - b.logits).abs().max().item() <= rel * scale


@pytest.mark.parametrize("family", FAMILIES)
def test_static_step_equals_growing_cache(family):
    model = _model(family)
    ids, valid = _padded_prompt()
    growing = generate_greedy(model, ids, attention_mask=valid, max_new_tokens=8)
    static = generate_greedy(model, ids, attention_mask=valid, max_new_tokens=8, static_cache=True)
    assert static.tokens.shape == (3, 8) and static.logits.shape == (3, 8, 512)
    _assert_same_decoding(growing, static, rel=1e-6)
    assert not model.decode_compiled  # static_cache=True alone runs the step eagerly


def test_static_step_with_prefix_lm_embeddings_eos_and_constraint():
    """The VLA / π0-FAST call: image + text embeddings, a prefix-LM mask with missing tokens, an
    allowed-id constraint and an end token."""
    model = _model("gemma", seed=2)
    image_tokens = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(3))
    text = model.embed(torch.randint(0, 512, (2, 4), generator=torch.Generator().manual_seed(4)))
    prompt = torch.cat([image_tokens, text], dim=1)  # (B, Lp, D)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[0, :2] = False  # row 0: two missing image tokens
    mask = apply_key_padding(build_attention_mask(prefix_lm_blocks(9, 0)), valid)  # (B, Lp, Lp)
    allowed = list(range(256, 512, 2))
    kwargs = dict(inputs_embeds=prompt, attention_mask=mask, max_new_tokens=10, allowed_token_ids=allowed)
    free = generate_greedy(model, **kwargs)
    eos = int(free.tokens[0, 3])  # row 0 ends at step 3, row 1 runs on (or ends too)
    growing = generate_greedy(model, **kwargs, eos_token_id=eos)
    static = generate_greedy(model, **kwargs, eos_token_id=eos, static_cache=True)
    _assert_same_decoding(growing, static, rel=1e-6)
    assert set(static.tokens.flatten().tolist()) <= set(allowed)
    reference = generate_greedy(model, **kwargs, eos_token_id=eos, use_cache=False)
    assert torch.equal(reference.tokens, static.tokens)


def test_write_at_fills_slots_without_moving_length():
    cache = KVCache(num_layers=1, batch_size=2, max_len=6, num_kv_heads=1, head_dim=4)
    cache.length = 3
    k = torch.full((2, 1, 1, 4), 7.0)
    v = torch.full((2, 1, 1, 4), -7.0)
    keys, values = cache.write_at(0, k, v, torch.tensor([4]))
    assert keys.shape == (2, 1, 6, 4) and keys.data_ptr() == cache.keys[0].data_ptr()  # the whole buffer
    assert torch.equal(keys[:, :, 4], k[:, :, 0]) and torch.equal(values[:, :, 4], v[:, :, 0])
    assert keys[:, :, [0, 1, 2, 3, 5]].abs().sum() == 0
    assert cache.length == 3  # the caller tracks the fill level
    with pytest.raises(ValueError, match="cache_position must be"):
        cache.write_at(0, k, v, torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="do not fit the cache"):
        cache.write_at(0, torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4), torch.tensor([4]))


def test_static_forward_input_errors():
    model = _model("llama")
    cache = KVCache.for_model(model, 1, 8)
    ids = torch.tensor([[5]])
    pos = torch.tensor([0])
    mask = torch.zeros(1, 1, 8, dtype=torch.bool)
    mask[..., 0] = True
    out = model(ids, attention_mask=mask, kv_cache=cache, cache_position=pos, logits="last")
    assert out.logits is not None and out.logits.shape == (1, 1, 512) and cache.length == 0
    with pytest.raises(ValueError, match="needs a kv_cache"):
        model(ids, attention_mask=mask, cache_position=pos)
    with pytest.raises(ValueError, match=r"max_len=8\) bool mask"):
        model(ids, attention_mask=mask[..., :5], kv_cache=cache, cache_position=pos)
    with pytest.raises(ValueError, match=r"max_len=8\) bool mask"):
        model(ids, kv_cache=cache, cache_position=pos)  # no mask: the unfilled slots must be masked
    with pytest.raises(ValueError, match="cache_position must be"):
        model(ids, attention_mask=mask, kv_cache=cache, cache_position=pos.int())
    with pytest.raises(ValueError, match="static_cache=True is a KV-cache path"):
        generate_greedy(model, ids, max_new_tokens=2, use_cache=False, static_cache=True)


def test_compile_decoding_is_a_switch():
    model = _model("llama")
    assert model.compile_decoding() is model and model.decode_compiled
    compiled = model._compiled_static
    assert compiled is not None
    model.compile_decoding(False)
    assert not model.decode_compiled and model._compiled_static is compiled  # kept for re-enabling
    assert "_compiled_static" not in dict(model.named_modules()) and not any(
        "compiled" in k for k in model.state_dict()
    )  # not a sub-module: checkpoints are unchanged


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT_S)
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_decoding_equals_eager_with_one_graph(family):
    model = _model(family, seed=7)
    ids, valid = _padded_prompt(seed=8)
    eager = generate_greedy(model, ids, attention_mask=valid, max_new_tokens=8)
    model.compile_decoding()
    before = _graphs()
    compiled = generate_greedy(model, ids, attention_mask=valid, max_new_tokens=8)
    assert _graphs() - before == 1  # one graph for all 7 decode steps
    _assert_same_decoding(eager, compiled, rel=1e-5)
    ids2, _ = _padded_prompt(seed=9)  # another prompt of the same shape reuses the graph
    again = generate_greedy(model, ids2, attention_mask=valid, max_new_tokens=8)
    assert _graphs() - before == 1
    _assert_same_decoding(generate_greedy(model, ids2, attention_mask=valid, max_new_tokens=8,
                                          static_cache=False), again, rel=1e-5)  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT_S)
def test_compiled_decoding_on_a_token_vla_policy():
    """rt2-tiny (constrained action tokens, prefix-LM prompt): compiled decode == the eager KV cache."""
    from vlaforge.bench.embodiment import build_recipe_policy
    from vlaforge.inference.load import example_observations

    policy = build_recipe_policy("rt2-tiny", image_size=32, seed=0)
    with torch.no_grad():  # larger LM weights than the init, so the chosen bins are far from tied
        for p in policy.lm.parameters():
            p.normal_(0.0, 0.3 if p.dim() == 1 else 0.1)
    batch = policy.observations_to_batch(example_observations(policy, seed=1))
    eager = policy.predict_batch(batch).numpy()  # (1, H, A)
    reference = policy.predict_batch(batch, use_cache=False).numpy()
    policy.lm.compile_decoding()
    try:
        compiled = policy.predict_batch(batch).numpy()
        compiled_again = policy.predict_batch(batch).numpy()
    finally:
        policy.lm.compile_decoding(False)
    np.testing.assert_array_equal(compiled, eager)  # same bins -> the same de-tokenized actions
    np.testing.assert_array_equal(compiled_again, eager)
    np.testing.assert_array_equal(reference, eager)
