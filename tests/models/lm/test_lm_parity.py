"""DecoderLM matches transformers' LlamaForCausalLM / GemmaForCausalLM on the same weights."""

from __future__ import annotations

import json

import pytest
import torch

from tests.extras import require
from tests.models.lm.hf_models import VOCAB, save_hf, tiny_hf_lm
from vlaforge.models.attention import build_attention_mask, prefix_lm_blocks
from vlaforge.models.lm import DecoderLM, LMConfig, lm_preset, load_hf_checkpoint, save_hf_checkpoint

transformers = require("transformers", "text")
FAMILIES = ("llama", "gemma")
TOL = 1e-4


def _ids(b: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family, tmp_path):
    hf = tiny_hf_lm(family)
    model = load_hf_checkpoint(save_hf(hf, tmp_path))
    assert model.config.family == family
    assert model.config.tie_embeddings == (family == "gemma")
    ids = _ids(3, 17)
    with torch.no_grad():
        ref = hf(ids).logits  # (B, L, V)
        ours = model(ids)
    assert ours.logits.shape == ref.shape == (3, 17, VOCAB)
    assert ref.abs().max() > 1.0  # non-trivial logits: the tolerance below means something
    assert (ours.logits - ref).abs().max().item() < TOL
    # hidden states are the final-normed ones HF returns as last_hidden_state
    with torch.no_grad():
        ref_h = hf.model(ids).last_hidden_state
    assert (ours.hidden_states - ref_h).abs().max().item() < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_checkpoint_loads(family, tmp_path):
    hf = tiny_hf_lm(family, seed=3)
    save_hf(hf, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    model = load_hf_checkpoint(tmp_path)
    ids = _ids(2, 9)
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_matches_transformers(family, tmp_path):
    """Left- and right-padded batches: logits of real tokens match HF given the same mask and positions."""
    hf = tiny_hf_lm(family, seed=4)
    model = load_hf_checkpoint(save_hf(hf, tmp_path))
    ids = _ids(3, 12, seed=5)
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[0, :4] = False  # left padding
    valid[1, 9:] = False  # right padding
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(ids, attention_mask=valid.long(), position_ids=positions).logits
        ours = model(ids, attention_mask=valid).logits  # default positions = cumsum of real tokens
    assert torch.isfinite(ours).all()  # padded query rows read themselves: finite, meaningless
    assert (ours - ref)[valid].abs().max().item() < TOL
    # a padded row's real tokens equal the same tokens run alone without padding
    with torch.no_grad():
        alone = model(ids[0:1, 4:]).logits
    assert (ours[0, 4:] - alone[0]).abs().max().item() < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_embeds_path_equals_input_ids(family, tmp_path):
    """embed() applies Gemma's sqrt(hidden) scale; inputs_embeds are used as given (HF 5.x, openpi)."""
    hf = tiny_hf_lm(family, seed=6)
    model = load_hf_checkpoint(save_hf(hf, tmp_path))
    ids = _ids(2, 8)
    with torch.no_grad():
        embeds = model.embed(ids)
        assert (model(inputs_embeds=embeds).logits - hf(ids).logits).abs().max().item() < TOL
        raw = model.embed_tokens(ids)
    scale = 64**0.5 if family == "gemma" else 1.0
    assert torch.allclose(embeds, raw * scale)


def test_bf16_matches_transformers_bf16(tmp_path):
    hf = tiny_hf_lm("gemma", seed=7)
    save_hf(hf, tmp_path)
    model = load_hf_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    hf16 = transformers.GemmaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.bfloat16).eval()
    ids = _ids(2, 10)
    with torch.no_grad():
        ref, ours = hf16(ids).logits.float(), model(ids).logits.float()
    # same op order and casts in bf16 (bit-identical on CPU today); allow a few bf16 ulps of the peak
    assert (ours - ref).abs().max().item() <= ref.abs().max().item() / 64


@pytest.mark.parametrize("family", FAMILIES)
def test_save_hf_checkpoint_round_trip(family, tmp_path):
    """Our weights -> HF names on disk -> transformers loads them and computes the same logits."""
    torch.manual_seed(0)
    model = DecoderLM(lm_preset(f"{family}-tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    save_hf_checkpoint(model, tmp_path / "single")
    save_hf_checkpoint(model, tmp_path / "sharded", max_shard_bytes=100_000)
    assert len(
        json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    ) == len(model.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (2, 11))
    with torch.no_grad():
        want = model(ids).logits
        for d in ("single", "sharded"):
            back = load_hf_checkpoint(tmp_path / d)
            assert back.config == model.config
            assert torch.equal(back(ids).logits, want)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "single")).eval()
        assert (hf(ids).logits - want).abs().max().item() < TOL


def test_key_prefix_loads_language_model_out_of_a_vlm_file(tmp_path):
    """OpenVLA / PaliGemma files hold the LM under a prefix next to vision weights."""
    from safetensors.torch import load_file, save_file

    hf = tiny_hf_lm("llama", seed=8)
    src = save_hf(hf, tmp_path / "lm")
    state = load_file(str(src / "model.safetensors"))
    vlm = tmp_path / "vlm"
    vlm.mkdir()
    combined = {f"language_model.{k}": v for k, v in state.items()}
    combined["projector.fc1.weight"] = torch.zeros(4, 4)  # another module's weight: skipped
    save_file(combined, str(vlm / "model.safetensors"))
    text_config = json.loads((src / "config.json").read_text())
    (vlm / "config.json").write_text(json.dumps({"model_type": "openvla", "text_config": text_config}))

    with pytest.raises(ValueError, match="text_config"):
        load_hf_checkpoint(vlm)  # the outer config is not an LM config: the error says what to pass
    model = load_hf_checkpoint(vlm, key_prefix="language_model.", config=text_config)
    ids = _ids(1, 6)
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < TOL


def test_prefix_lm_mask_semantics():
    """With attention.prefix_lm_blocks, the prefix is bidirectional and never reads the action block."""
    torch.manual_seed(0)
    model = DecoderLM(lm_preset("gemma-tiny")).eval()
    n_prefix, n_action = 6, 3
    mask = build_attention_mask(prefix_lm_blocks(n_prefix, n_action))[None]  # (1, N, N)
    x = torch.randn(2, n_prefix + n_action, 64)
    with torch.no_grad():
        h = model(inputs_embeds=x, attention_mask=mask, logits="none").hidden_states
        x2 = x.clone()
        x2[:, n_prefix:] = torch.randn(2, n_action, 64)  # other action tokens
        h2 = model(inputs_embeds=x2, attention_mask=mask, logits="none").hidden_states
        x3 = x.clone()
        x3[:, n_prefix - 1] = torch.randn(2, 64)  # change the LAST prefix token
        h3 = model(inputs_embeds=x3, attention_mask=mask, logits="none").hidden_states
    assert torch.equal(h[:, :n_prefix], h2[:, :n_prefix])  # prefix never reads actions
    assert not torch.allclose(h[:, 0], h3[:, 0])  # ... but reads later prefix tokens (bidirectional)


def test_gradient_checkpointing_same_loss_and_grads():
    torch.manual_seed(0)
    model = DecoderLM(lm_preset("llama-tiny")).train()
    ids = torch.randint(0, 512, (2, 10))

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model(ids).logits.logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_a, grads_a = loss_and_grads()
    model.gradient_checkpointing = True
    loss_b, grads_b = loss_and_grads()
    assert torch.equal(loss_a, loss_b)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b, strict=True))


# ------------------------------------------------------------------------------------------- config


def test_real_size_presets_have_the_published_parameter_counts():
    # Built on the meta device: shapes only, no memory.
    for name, count in (("llama2-7b", 6_738_415_616), ("gemma-2b", 2_506_172_416)):
        cfg = lm_preset(name)
        with torch.device("meta"):
            model = DecoderLM(cfg)
        assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters == count


def test_from_hf_config_layouts_and_refusals():
    base = {
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0,
    }  # fmt: skip
    # transformers 4.x layout (top-level rope_theta, no head_dim / num_key_value_heads)
    assert LMConfig.from_hf_config(base) == lm_preset("llama2-7b")
    v5 = {**base, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    del v5["rope_theta"]
    assert LMConfig.from_hf_config(v5).rope_theta == 500000.0
    with pytest.raises(ValueError, match="llama3"):
        LMConfig.from_hf_config({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(ValueError, match="attention_bias"):
        LMConfig.from_hf_config({**base, "attention_bias": True})
    with pytest.raises(ValueError, match="missing required key 'vocab_size'"):
        LMConfig.from_hf_config({k: v for k, v in base.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="text_config"):
        LMConfig.from_hf_config({"model_type": "paligemma", "text_config": {}})
    # Google's Gemma release says "gelu" but means the tanh approximation (as GemmaConfig rewrites it)
    gemma = {
        "model_type": "gemma", "vocab_size": 256000, "hidden_size": 2048, "intermediate_size": 16384,
        "num_hidden_layers": 18, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
        "hidden_act": "gelu",
    }  # fmt: skip
    assert LMConfig.from_hf_config(gemma) == lm_preset("gemma-2b")
    with pytest.raises(ValueError, match="num_kv_heads"):
        lm_preset("llama-tiny").replace(num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown LM preset"):
        lm_preset("llama-huge")
