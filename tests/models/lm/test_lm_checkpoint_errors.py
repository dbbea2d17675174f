"""The loader refuses anything but an exact match, and says everything that is wrong at once."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.models.lm.hf_models import save_hf, tiny_hf_lm
from vlaforge.errors import CheckpointError
from vlaforge.models.lm import LMCheckpointError, load_hf_checkpoint


@pytest.fixture
def llama_dir(tmp_path):
    return save_hf(tiny_hf_lm("llama"), tmp_path / "llama")


def _rewrite(path, edit) -> None:
    file = path / "model.safetensors"
    state = load_file(str(file))
    edit(state)
    save_file(state, str(file), metadata={"format": "pt"})


def test_missing_directory_config_and_weights(tmp_path, llama_dir):
    with pytest.raises(CheckpointError, match="nowhere: not a directory"):
        load_hf_checkpoint(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LMCheckpointError, match="config.json: not found"):
        load_hf_checkpoint(empty)
    (empty / "config.json").write_text((llama_dir / "config.json").read_text())
    (empty / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(LMCheckpointError, match=r"no model\.safetensors.*pytorch_model\.bin.*no pickle") as e:
        load_hf_checkpoint(empty)
    assert str(empty) in str(e.value)
    (llama_dir / "config.json").write_text("{not json")
    with pytest.raises(LMCheckpointError, match="not valid JSON"):
        load_hf_checkpoint(llama_dir)


def test_missing_unexpected_and_wrong_shape_are_listed_together(llama_dir):
    def edit(state: dict[str, torch.Tensor]) -> None:
        del state["model.layers.1.mlp.up_proj.weight"]
        state["model.layers.0.self_attn.extra.weight"] = torch.zeros(2)
        state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 64)  # expects (32, 64)

    _rewrite(llama_dir, edit)
    with pytest.raises(LMCheckpointError) as e:
        load_hf_checkpoint(llama_dir)
    msg = str(e.value)
    assert str(llama_dir) in msg and "model.safetensors" in msg
    assert "missing 1 key(s)" in msg and "model.layers.1.mlp.up_proj.weight" in msg
    assert "unexpected 1 key(s)" in msg and "model.layers.0.self_attn.extra.weight" in msg
    assert "model.layers.0.self_attn.k_proj.weight: file has [16, 64], model expects [32, 64]" in msg
    assert e.value.missing == ["model.layers.1.mlp.up_proj.weight"]
    assert len(e.value.unexpected) == 1 and len(e.value.mismatched) == 1


def test_old_rotary_buffers_are_ignored(llama_dir):
    _rewrite(llama_dir, lambda s: s.update({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}))
    load_hf_checkpoint(llama_dir)


def test_vlm_file_without_prefix_gets_a_hint(llama_dir):
    _rewrite(llama_dir, lambda s: s.update({"vision_backbone.patch.weight": torch.zeros(2)}))
    with pytest.raises(LMCheckpointError, match="key_prefix"):
        load_hf_checkpoint(llama_dir)


def test_sharded_index_naming_a_missing_shard(tmp_path):
    path = save_hf(tiny_hf_lm("gemma"), tmp_path / "g", max_shard_size="40KB")
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(LMCheckpointError, match=shard.name):
        load_hf_checkpoint(path)


def test_tied_model_with_a_different_lm_head_is_refused(tmp_path):
    path = save_hf(tiny_hf_lm("gemma"), tmp_path / "g")
    embed = load_file(str(path / "model.safetensors"))["model.embed_tokens.weight"]
    _rewrite(path, lambda s: s.update({"lm_head.weight": embed.clone()}))
    load_hf_checkpoint(path)  # an lm_head equal to the embeddings is harmless
    _rewrite(path, lambda s: s.update({"lm_head.weight": embed + 1}))
    with pytest.raises(LMCheckpointError, match="tie"):
        load_hf_checkpoint(path)


def test_unsupported_config_names_the_file(llama_dir):
    cfg = json.loads((llama_dir / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (llama_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LMCheckpointError, match=r"config\.json.*linear"):
        load_hf_checkpoint(llama_dir)
