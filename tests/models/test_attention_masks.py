"""Block masks against hand-written matrices (1 = query row may attend to key column)."""

from __future__ import annotations

import pytest
import torch

from vlaforge.models.attention import (
    TokenBlock,
    apply_key_padding,
    block_slices,
    build_attention_mask,
    octo_blocks,
    pi0_blocks,
    prefix_lm_blocks,
)


def _m(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in r.replace(" ", "")] for r in rows])


def test_octo_one_token_per_block():
    # order: task, obs_0, obs_1, readout_0, readout_1
    expected = _m(
        [
            "1 0 0 0 0",  # task sees task
            "1 1 0 0 0",  # obs_0 sees task, obs_0
            "1 1 1 0 0",  # obs_1 sees task, obs_0, obs_1
            "1 1 0 1 0",  # readout_0 sees task, obs_0, itself
            "1 1 1 0 1",  # readout_1 sees task, obs_<=1, itself
        ]
    )
    assert torch.equal(build_attention_mask(octo_blocks(1, 1, 1, 2)), expected)


def test_octo_multi_token_blocks():
    # task(1) | obs_0(2) | obs_1(2) | readout_0(1) | readout_1(1)
    expected = _m(
        [
            "1 00 00 0 0",
            "1 11 00 0 0",
            "1 11 00 0 0",
            "1 11 11 0 0",
            "1 11 11 0 0",
            "1 11 00 1 0",
            "1 11 11 0 1",
        ]
    )
    blocks = octo_blocks(n_task=1, n_obs=2, n_readout=1, history=2)
    assert [b.name for b in blocks] == ["task", "obs_0", "obs_1", "readout_0", "readout_1"]
    mask = build_attention_mask(blocks)
    assert torch.equal(mask, expected)
    # nothing attends to readouts except the readout itself
    sl = block_slices(blocks)
    for r in ("readout_0", "readout_1"):
        col = mask[:, sl[r]].squeeze(1)
        assert col.sum() == 1 and col[sl[r]].all()


def test_pi0_blocks():
    # prefix(2) | state(1) | action(2)
    expected = _m(
        [
            "11 0 00",
            "11 0 00",
            "11 1 00",
            "11 1 11",
            "11 1 11",
        ]
    )
    assert torch.equal(build_attention_mask(pi0_blocks(2, 1, 2)), expected)


def test_prefix_lm_causal_and_bidirectional():
    causal = _m(["11 000", "11 000", "11 100", "11 110", "11 111"])
    full = _m(["11 000", "11 000", "11 111", "11 111", "11 111"])
    assert torch.equal(build_attention_mask(prefix_lm_blocks(2, 3, action_causal=True)), causal)
    assert torch.equal(build_attention_mask(prefix_lm_blocks(2, 3, action_causal=False)), full)


def test_block_slices_and_empty_blocks():
    blocks = [TokenBlock("a", 2), TokenBlock("empty", 0, ("a",)), TokenBlock("b", 3, ["a", "empty"])]
    assert block_slices(blocks) == {"a": slice(0, 2), "empty": slice(2, 2), "b": slice(2, 5)}
    mask = build_attention_mask(blocks)
    assert mask.shape == (5, 5)
    assert mask[2:, :].all() and not mask[:2, 2:].any()


def test_bad_blocks_fail_loudly():
    with pytest.raises(ValueError, match="unknown block"):
        build_attention_mask([TokenBlock("a", 1, ("nope",))])
    with pytest.raises(ValueError, match="duplicate"):
        build_attention_mask([TokenBlock("a", 1), TokenBlock("a", 2)])
    with pytest.raises(ValueError, match="length"):
        TokenBlock("a", -1)
    with pytest.raises(TypeError, match="tuple"):
        TokenBlock("a", 1, "b")  # a bare string is a classic mistake for ("b",)


def test_key_padding_keeps_diagonal():
    mask = build_attention_mask(prefix_lm_blocks(3, 2, action_causal=False))  # (5, 5)
    valid = torch.tensor([[True, False, False, True, True]])  # tokens 1, 2 are padding
    m = apply_key_padding(mask, valid)  # (1, 5, 5)
    assert m.shape == (1, 5, 5)
    assert not m[0, 0, 1:3].any() and not m[0, 3, 1:3].any()  # nobody reads padding ...
    assert m[0, 1, 1] and m[0, 2, 2]  # ... except the padding token itself (no all-False row)
    assert m.any(-1).all()
