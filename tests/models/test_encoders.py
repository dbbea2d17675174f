"""Image, state and language encoders: token counts, input conventions, loud errors."""

from __future__ import annotations

import json

import pytest
import torch

from vlaforge.models.encoders import ConvStemTokenizer, LanguageEncoder, StateEncoder, WordTokenizer


def test_octo_stem_128px_gives_64_tokens():
    stem = ConvStemTokenizer(image_size=128, width=48)  # Octo's 4 convs (32/96/192/384), 1x1 patches
    img = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8)
    out = stem(img)
    assert stem.num_tokens == 64 and stem.grid == (8, 8)
    assert out.shape == (2, 64, 48)
    assert torch.isfinite(out).all()


def test_uint8_and_float_inputs_agree_and_leading_dims_are_kept():
    torch.manual_seed(0)
    stem = ConvStemTokenizer(image_size=(32, 16), width=8, channels=(8, 16), patch=2)  # /4 then /2
    assert stem.grid == (4, 2)
    img = torch.randint(0, 256, (2, 3, 32, 16, 3), dtype=torch.uint8)  # (B, T, H, W, C)
    out_u8 = stem(img)  # (B, T, N, D)
    as_float = img.float().div(127.5).sub(1.0).permute(0, 1, 4, 2, 3)  # (B, T, C, H, W) in [-1, 1]
    out_f = stem(as_float)
    assert out_u8.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out_u8, out_f)
    # each image is encoded independently of the others in the batch
    torch.testing.assert_close(stem(img[1, 2:3]), out_u8[1, 2:3])
    with pytest.raises(ValueError, match="batch dimension"):
        stem(img[0, 0])  # a single (H, W, C) image


def test_stem_rejects_wrong_size_and_layout():
    stem = ConvStemTokenizer(image_size=32, width=8, channels=(8, 16), patch=1)
    with pytest.raises(ValueError, match=r"channels-last \(\.\.\., 32, 32, 3\)"):
        stem(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels-first"):
        stem(torch.zeros(1, 32, 32, 3))  # float but channels-last
    with pytest.raises(TypeError):
        stem(torch.zeros(1, 3, 32, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match="smaller than patch"):
        ConvStemTokenizer(image_size=16, width=8, channels=(8, 8, 8, 8), patch=2)


def test_stem_trains():
    torch.manual_seed(0)
    stem = ConvStemTokenizer(image_size=16, width=8, channels=(8,), patch=4)
    img = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    stem(img).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in stem.parameters())


def test_state_encoder():
    enc = StateEncoder(state_dim=5, width=8)
    assert enc(torch.randn(3, 5)).shape == (3, 1, 8)
    assert enc(torch.randn(3, 2, 5)).shape == (3, 2, 1, 8)  # (B, T, 1, D)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        enc(torch.randn(3, 4))


def test_word_tokenizer_encode_pad_unk_and_json_roundtrip():
    tok = WordTokenizer.build(["Open the drawer.", "close the drawer", "push the puck!"])
    assert tok.vocab[:4] == ["<pad>", "<unk>", "the", "drawer"]  # most frequent first
    ids, mask = tok.encode(["Close the DRAWER", "open the fridge, now"], max_len=4)
    assert ids.shape == (2, 4) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]  # truncated to 4
    assert ids[0, 3] == tok.pad_id
    assert ids[1, 2] == tok.unk_id  # "fridge" was never seen
    assert tok.decode(ids[0]) == "close the drawer"
    assert tok.unknown_words("open the fridge") == ["fridge"]
    restored = WordTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored.vocab == tok.vocab and restored.vocab_size == len(tok)
    assert torch.equal(restored.encode("push the puck", 6)[0], tok.encode(["push the puck"], 6)[0])
    with pytest.raises(ValueError, match="type='word'"):
        WordTokenizer.from_dict({"vocab": ["a"]})


def test_language_encoder():
    tok = WordTokenizer.build(["pick up the block", "open the door"])
    enc = LanguageEncoder(tok.vocab_size, width=8, max_len=6)
    ids, mask = tok.encode(["open the door", "pick up the block"], 6)
    out = enc(ids)
    assert out.shape == (2, 6, 8)
    torch.testing.assert_close(enc.embed.weight[0], torch.zeros(8))  # pad embeds to zero (+ position)
    with pytest.raises(ValueError, match="vocabulary does not match"):
        enc(torch.tensor([[tok.vocab_size]]))
    with pytest.raises(ValueError, match="L <= 6"):
        enc(torch.zeros(1, 7, dtype=torch.long))


def test_language_encoder_without_positions_is_a_bag_of_words():
    torch.manual_seed(0)
    enc = LanguageEncoder(vocab_size=10, width=8, max_len=6, positions=False)
    assert "pos_emb" not in enc.state_dict()
    a = enc(torch.tensor([[3, 4, 5, 0, 0, 0]]))
    b = enc(torch.tensor([[7, 3, 4, 5, 0, 0]]))  # the same words one position later
    torch.testing.assert_close(a[0, :3], b[0, 1:4])
    shifted = LanguageEncoder(vocab_size=10, width=8, max_len=6)
    shifted.embed.load_state_dict(enc.embed.state_dict())
    c, d = shifted(torch.tensor([[3, 4, 5, 0, 0, 0]])), shifted(torch.tensor([[7, 3, 4, 5, 0, 0]]))
    assert not torch.allclose(c[0, :3], d[0, 1:4])  # with positions they move
