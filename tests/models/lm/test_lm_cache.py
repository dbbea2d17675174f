"""KV cache and greedy decoding: cached == recomputed; constrained decoding; prefix reuse (π0 style)."""

from __future__ import annotations

import pytest
import torch

from vlaforge.models.attention import apply_key_padding, build_attention_mask, prefix_lm_blocks
from vlaforge.models.lm import DecoderLM, KVCache, generate_greedy, lm_preset

FAMILIES = ("llama", "gemma")


def _model(family: str, seed: int = 0) -> DecoderLM:
    torch.manual_seed(seed)
    model = DecoderLM(lm_preset(f"{family}-tiny")).eval()
    with torch.no_grad():  # larger weights than the init, so logits are far from tied
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() == 1 else 0.15)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_equals_recomputing(family):
    model = _model(family)
    ids = torch.randint(0, 512, (3, 9), generator=torch.Generator().manual_seed(1))
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    valid[2, :1] = False
    cached = generate_greedy(model, ids, attention_mask=valid, max_new_tokens=8)
    full = generate_greedy(model, ids, attention_mask=valid, max_new_tokens=8, use_cache=False)
    assert cached.tokens.shape == (3, 8) and cached.logits.shape == (3, 8, 512)
    assert torch.equal(cached.tokens, full.tokens)
    assert (cached.logits - full.logits).abs().max().item() < 1e-4
    # the padded row decodes as if the pad tokens were not there
    alone = generate_greedy(model, ids[1:2, 3:], max_new_tokens=8)
    assert torch.equal(alone.tokens[0], cached.tokens[1])
    assert (alone.logits[0] - cached.logits[1]).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_lm_prompt_from_embeddings(family):
    """RT-2 / OpenVLA shape: image tokens + text as inputs_embeds, bidirectional prefix, then decoding."""
    model = _model(family, seed=2)
    n_img, n_text = 5, 4
    image_tokens = torch.randn(2, n_img, 64)
    text = model.embed(torch.randint(0, 512, (2, n_text)))
    prompt = torch.cat([image_tokens, text], dim=1)  # (B, Lp, D)
    mask = build_attention_mask(prefix_lm_blocks(n_img + n_text, 0))  # (Lp, Lp) all True
    valid = torch.ones(2, n_img + n_text, dtype=torch.bool)
    valid[0, :2] = False  # row 0: two missing image tokens
    mask = apply_key_padding(mask, valid)  # (B, Lp, Lp)
    cached = generate_greedy(model, inputs_embeds=prompt, attention_mask=mask, max_new_tokens=6)
    full = generate_greedy(
        model, inputs_embeds=prompt, attention_mask=mask, max_new_tokens=6, use_cache=False
    )
    assert torch.equal(cached.tokens, full.tokens)
    assert (cached.logits - full.logits).abs().max().item() < 1e-4


def test_constrained_decoding_emits_only_allowed_ids():
    model = _model("llama", seed=3)
    ids = torch.randint(0, 512, (4, 7), generator=torch.Generator().manual_seed(4))
    free = generate_greedy(model, ids, max_new_tokens=10)
    allowed = list(range(256, 512, 3))  # RT-2: the action-bin tokens only
    assert not set(free.tokens.flatten().tolist()) <= set(allowed)  # unconstrained would leave the set
    out = generate_greedy(model, ids, max_new_tokens=10, allowed_token_ids=allowed)
    assert set(out.tokens.flatten().tolist()) <= set(allowed)
    # the choice is the arg-max over the allowed ids of the (returned, raw) logits
    best = out.logits[..., allowed].argmax(-1)
    assert torch.equal(out.tokens, torch.tensor(allowed)[best])
    with pytest.raises(ValueError, match="allowed_token_ids"):
        generate_greedy(model, ids, max_new_tokens=2, allowed_token_ids=[5, 512])


def test_eos_stops_and_pads_finished_rows():
    model = _model("gemma", seed=5)
    ids = torch.randint(0, 512, (3, 5), generator=torch.Generator().manual_seed(6))
    free = generate_greedy(model, ids, max_new_tokens=6)
    eos = int(free.tokens[0, 1])  # row 0 emits this at step 1
    out = generate_greedy(model, ids, max_new_tokens=6, eos_token_id=eos)
    assert out.tokens[0, 1] == eos and (out.tokens[0, 1:] == eos).all()
    first_eos = [row.tolist().index(eos) if eos in row.tolist() else None for row in free.tokens]
    for r, k in enumerate(first_eos):  # before its first EOS every row decodes as without eos handling
        end = out.tokens.shape[1] if k is None else k + 1
        assert torch.equal(out.tokens[r, :end], free.tokens[r, :end])


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_prefill_and_prefix_reuse(family):
    """Forward in chunks through the cache == one pass; crop() reuses a cached prefix (π0's flow steps)."""
    model = _model(family, seed=7)
    x = torch.randn(2, 12, 64)
    with torch.no_grad():
        full = model(inputs_embeds=x).logits  # causal
        cache = KVCache.for_model(model, batch_size=2, max_len=12)
        parts = [model(inputs_embeds=x[:, a:b], kv_cache=cache).logits for a, b in ((0, 5), (5, 6), (6, 12))]
        assert cache.length == 12
        assert (torch.cat(parts, dim=1) - full).abs().max().item() < 1e-4

        # prefix of 8 cached once; two different 4-token suffixes, each == the one-pass result
        cache = KVCache.for_model(model, batch_size=2, max_len=12)
        model(inputs_embeds=x[:, :8], kv_cache=cache, logits="none")
        for _ in range(2):
            suffix = torch.randn(2, 4, 64)
            cache.crop(8)
            got = model(inputs_embeds=suffix, kv_cache=cache).hidden_states
            want = model(inputs_embeds=torch.cat([x[:, :8], suffix], 1)).hidden_states[:, 8:]
            assert (got - want).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="KVCache is full"):
        model(inputs_embeds=torch.randn(2, 1, 64), kv_cache=cache)


def test_forward_input_errors():
    model = _model("llama")
    ids = torch.randint(0, 512, (2, 4))
    with pytest.raises(ValueError, match="exactly one of"):
        model(ids, inputs_embeds=torch.randn(2, 4, 64))
    with pytest.raises(TypeError, match="torch.bool"):
        model(ids, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="key padding mask"):
        model(ids, attention_mask=torch.ones(4, 4, dtype=torch.bool))  # (L, L) is ambiguous: needs mask[None]
    with pytest.raises(ValueError, match="no allowed key"):
        model(ids, attention_mask=torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="LEFT padding"):
        generate_greedy(
            model, ids, attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool(), max_new_tokens=2
        )
    with pytest.raises(ValueError, match="max_position"):
        generate_greedy(model, ids, max_new_tokens=model.config.max_position)
