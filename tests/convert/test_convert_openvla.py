"""OpenVLA converter on a synthetic tiny checkpoint with the released file's key names and config fields.

The reference outputs are computed from the synthetic tensors directly: a ViT written out here in plain
torch the way timm computes it (fused qkv, ``no_embed_class`` position table, CLS + register tokens, layer
scale, second-to-last block; not timm itself), prismatic's projector, and our DecoderLM loaded from the
same ``language_model.*`` tensors. The check against the real timm package (DINOv2 / SigLIP-So400m as
OpenVLA builds them) is ``tests/peers/test_timm_openvla_towers.py`` (``make test-peers``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vlaforge.convert.openvla import REPORT_FILE, OpenVLAConversionError, convert_openvla, main
from vlaforge.models.lm import load_hf_checkpoint
from vlaforge.models.vision.preprocess import preprocess_images
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.vla.policy import VLAPolicy

PATCH, IMG = 8, 32  # 4 x 4 = 16 patches per tower
N = (IMG // PATCH) ** 2
DINO = {"width": 32, "depth": 3, "heads": 2, "mlp": 128, "regs": 4}
SIGLIP = {"width": 48, "depth": 3, "heads": 2, "mlp": 96}
TEXT_CONFIG = {
    "model_type": "llama",
    "vocab_size": 384,  # 320 + pad_to_multiple_of 64, as OpenVLA's 32000 + 64
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 320,
}
# VLAConfig.vision for the tiny towers (the converter's default is the recipe's published sizes).
TINY_VISION = {
    "dino": {
        "hf": {
            "model_type": "dinov2_with_registers",
            "hidden_size": DINO["width"],
            "mlp_ratio": 4,
            "num_hidden_layers": DINO["depth"],
            "num_attention_heads": DINO["heads"],
            "image_size": IMG,
            "patch_size": PATCH,
            "num_register_tokens": DINO["regs"],
        },
        "image_size": IMG,
        "feature_layer": -2,
    },
    "siglip": {
        "hf": {
            "model_type": "siglip_vision_model",
            "hidden_size": SIGLIP["width"],
            "intermediate_size": SIGLIP["mlp"],
            "num_hidden_layers": SIGLIP["depth"],
            "num_attention_heads": SIGLIP["heads"],
            "image_size": IMG,
            "patch_size": PATCH,
        },
        "feature_layer": -2,
    },
}
STATS = {
    "bridge_orig": {
        "action": {
            "mean": [0.0, 0.1, -0.1],
            "std": [1.0, 1.0, 0.5],
            "q01": [-0.5, -1.0, 0.0],
            "q99": [0.5, 2.0, 1.0],
            "mask": [True, True, False],
        },
        "proprio": {"q01": [0.0] * 7, "q99": [0.0] * 7, "mean": [0.0] * 7},
        "num_transitions": 100,
    },
    "fractal20220817_data": {
        "action": {"q01": [-1.0, -1.0, 0.0], "q99": [1.0, 1.0, 1.0], "mask": [True, True, False]},
        "proprio": {"q01": [0.0] * 7, "q99": [0.0] * 7},
    },
}
PROMPT_WORDS = "In : What action should the robot take to pick up red cube ? Out".split()


def _timm_vit(prefix: str, width: int, depth: int, mlp: int, regs: int | None, g: torch.Generator) -> dict:
    """timm VisionTransformer tensors (OpenVLA's names; DINOv2 layer scale as ``scale_factor``)."""

    def r(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    t = {
        "patch_embed.proj.weight": r(width, 3, PATCH, PATCH),
        "patch_embed.proj.bias": r(width),
        "pos_embed": r(1, N, width),  # no_embed_class: one row per patch
        "norm.weight": 1 + r(width),
        "norm.bias": r(width),
    }
    if regs is not None:  # DINOv2
        t |= {"cls_token": r(1, 1, width, scale=1.0), "reg_token": r(1, regs, width, scale=1.0)}
    else:  # SigLIP's attention-pooling head (not built by vlaforge)
        t |= {
            "attn_pool.latent": r(1, 1, width),
            "attn_pool.q.weight": r(width, width),
            "attn_pool.kv.weight": r(2 * width, width),
            "attn_pool.proj.weight": r(width, width),
            "attn_pool.norm.weight": 1 + r(width),
            "attn_pool.mlp.fc1.weight": r(mlp, width),
            "attn_pool.mlp.fc2.weight": r(width, mlp),
        }
    for i in range(depth):
        b = f"blocks.{i}."
        t |= {
            b + "norm1.weight": 1 + r(width),
            b + "norm1.bias": r(width),
            b + "attn.qkv.weight": r(3 * width, width),
            b + "attn.qkv.bias": r(3 * width),
            b + "attn.proj.weight": r(width, width),
            b + "attn.proj.bias": r(width),
            b + "norm2.weight": 1 + r(width),
            b + "norm2.bias": r(width),
            b + "mlp.fc1.weight": r(mlp, width),
            b + "mlp.fc1.bias": r(mlp),
            b + "mlp.fc2.weight": r(width, mlp),
            b + "mlp.fc2.bias": r(width),
        }
        if regs is not None:
            t |= {b + "ls1.scale_factor": 1 + r(width), b + "ls2.scale_factor": 1 + r(width)}
    return {prefix + k: v for k, v in t.items()}


def _lm_tensors(g: torch.Generator) -> dict:
    c = TEXT_CONFIG
    D, F_, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    t = {
        "model.embed_tokens.weight": torch.randn(V, D, generator=g) * 0.5,
        "model.norm.weight": 1 + torch.randn(D, generator=g) * 0.1,
        "lm_head.weight": torch.randn(V, D, generator=g) * 0.2,
    }
    for i in range(c["num_hidden_layers"]):
        b = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[b + f"self_attn.{name}.weight"] = torch.randn(D, D, generator=g) * 0.1
        t[b + "mlp.gate_proj.weight"] = torch.randn(F_, D, generator=g) * 0.1
        t[b + "mlp.up_proj.weight"] = torch.randn(F_, D, generator=g) * 0.1
        t[b + "mlp.down_proj.weight"] = torch.randn(D, F_, generator=g) * 0.1
        t[b + "input_layernorm.weight"] = 1 + torch.randn(D, generator=g) * 0.1
        t[b + "post_attention_layernorm.weight"] = 1 + torch.randn(D, generator=g) * 0.1
    return {"language_model." + k: v for k, v in t.items()}


def synthetic_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    vis = DINO["width"] + SIGLIP["width"]
    D = TEXT_CONFIG["hidden_size"]
    t = _lm_tensors(g)
    t |= _timm_vit("vision_backbone.featurizer.", DINO["width"], DINO["depth"], DINO["mlp"], DINO["regs"], g)
    t |= _timm_vit(
        "vision_backbone.fused_featurizer.", SIGLIP["width"], SIGLIP["depth"], SIGLIP["mlp"], None, g
    )
    for name, (o, i) in {"fc1": (4 * vis, vis), "fc2": (D, 4 * vis), "fc3": (D, D)}.items():
        t[f"projector.{name}.weight"] = torch.randn(o, i, generator=g) * 0.1
        t[f"projector.{name}.bias"] = torch.randn(o, generator=g) * 0.1
    return t


def write_openvla(root: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """The openvla/openvla-7b layout: config.json, two shards + index, tokenizer.json."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "image_sizes": [IMG, IMG],
        "image_resize_strategy": "resize-naive",
        "llm_max_length": 2048,
        "pad_to_multiple_of": 64,
        "pad_token_id": 320,
        "n_action_bins": 256,
        "norm_stats": STATS,
        "text_config": TEXT_CONFIG,
    }
    (root / "config.json").write_text(json.dumps(config))
    shards = {
        "model-00001-of-00002.safetensors": {
            k: v for k, v in tensors.items() if k.startswith("language_model.")
        },
        "model-00002-of-00002.safetensors": {
            k: v for k, v in tensors.items() if not k.startswith("language_model.")
        },
    }
    weight_map = {}
    for fname, part in shards.items():
        save_file({k: v.contiguous() for k, v in part.items()}, str(root / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, fname)
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *dict.fromkeys(PROMPT_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "tokenizer.json"))
    return root


# ------------------------------------------------------------------------------------- references


def timm_vit_features(t: dict, prefix: str, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """A hand-written timm-style ViT forward: what prismatic's ``get_intermediate_layers(n={depth - 2})``
    returns, (B, N, D), prefix dropped."""
    w = t[prefix + "patch_embed.proj.weight"]
    D = w.shape[0]
    x = F.conv2d(pixels, w, t[prefix + "patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    x = x + t[prefix + "pos_embed"]  # (B, N, D): patches only (no_embed_class)
    B = x.shape[0]
    extra = [t[k].expand(B, -1, -1) for k in (prefix + "cls_token", prefix + "reg_token") if k in t]
    x = torch.cat([*extra, x], dim=1)  # (B, P + N, D)
    depth = 1 + max(int(k[len(prefix) :].split(".")[1]) for k in t if k.startswith(prefix + "blocks."))
    for i in range(depth - 1):  # blocks up to the second-to-last one
        b = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (D,), t[b + "norm1.weight"], t[b + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, t[b + "attn.qkv.weight"], t[b + "attn.qkv.bias"])  # (B, L, 3D)
        q, k, v = qkv.reshape(B, -1, 3, heads, D // heads).permute(2, 0, 3, 1, 4)  # each (B, H, L, hd)
        att = ((q @ k.transpose(-1, -2)) * (D // heads) ** -0.5).softmax(-1) @ v  # (B, H, L, hd)
        a = F.linear(
            att.transpose(1, 2).reshape(B, -1, D), t[b + "attn.proj.weight"], t[b + "attn.proj.bias"]
        )
        x = x + a * t.get(b + "ls1.scale_factor", 1.0)
        h = F.layer_norm(x, (D,), t[b + "norm2.weight"], t[b + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, t[b + "mlp.fc1.weight"], t[b + "mlp.fc1.bias"]))  # exact GELU, as timm
        h = F.linear(h, t[b + "mlp.fc2.weight"], t[b + "mlp.fc2.bias"])
        x = x + h * t.get(b + "ls2.scale_factor", 1.0)
    n_prefix = sum(e.shape[1] for e in extra)  # CLS + registers (DINOv2), none (SigLIP)
    return x[:, n_prefix:]


def projector(t: dict, x: torch.Tensor) -> torch.Tensor:
    for i, name in enumerate(("fc1", "fc2", "fc3")):
        x = F.linear(x, t[f"projector.{name}.weight"], t[f"projector.{name}.bias"])
        x = F.gelu(x) if i < 2 else x
    return x


# ------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tensors = synthetic_tensors()
    src = write_openvla(tmp_path_factory.mktemp("openvla-src"), tensors)
    out = tmp_path_factory.mktemp("runs") / "openvla-tiny-converted"
    report = convert_openvla(
        src, out, unnorm_key="bridge_orig", vision=TINY_VISION, frame_size=(IMG, IMG), camera="image"
    )
    return tensors, src, out, report


def test_conversion_report_is_clean_and_lists_the_drops(converted):
    _, _, out, report = converted
    assert report.ok and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    # last block of each tower (features of the second-to-last layer) and SigLIP's pooling head
    assert "vision_backbone.featurizer.blocks.2.attn.qkv.weight" in report.dropped
    assert "vision_backbone.fused_featurizer.blocks.2.mlp.fc1.weight" in report.dropped
    assert "vision_backbone.fused_featurizer.attn_pool.latent" in report.dropped
    assert not any(".blocks.1." in k or ".blocks.0." in k for k in report.dropped)
    assert report.filled == ["vision_tower.towers.dino.model.embeddings.mask_token"]
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["unnorm_key"] == "bridge_orig" and saved["converted"] == report.converted


def test_lm_logits_equal_decoderlm_loaded_from_the_same_tensors(converted):
    _, src, out, _ = converted
    policy = Policy.load(out)
    assert isinstance(policy, VLAPolicy)
    text = json.loads((src / "config.json").read_text())["text_config"]
    ref = load_hf_checkpoint(src, key_prefix="language_model.", config=text)
    ids = torch.randint(0, TEXT_CONFIG["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(policy.lm(ids).logits, ref(ids).logits, rtol=0, atol=0)


def test_vision_towers_and_projector_match_a_handwritten_timm_style_vit(converted):
    tensors, _, out, _ = converted
    policy = Policy.load(out)
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (2, IMG, IMG, 3), dtype=torch.uint8, generator=g)
    towers = policy.vision_tower.towers
    with torch.no_grad():
        feats = {}
        for name, prefix, heads in (
            ("dino", "vision_backbone.featurizer.", DINO["heads"]),
            ("siglip", "vision_backbone.fused_featurizer.", SIGLIP["heads"]),
        ):
            pixels = preprocess_images(frames, towers[name].preprocess)  # (B, 3, S, S)
            feats[name] = timm_vit_features(tensors, prefix, pixels, heads)  # (B, N, D)
            torch.testing.assert_close(towers[name](pixels), feats[name], rtol=1e-5, atol=1e-5)
        ref_tokens = projector(tensors, torch.cat([feats["dino"], feats["siglip"]], -1))  # (B, N, D_lm)
        tokens = policy._images({"observation.images.image": frames}, 2)
        torch.testing.assert_close(tokens, ref_tokens, rtol=1e-5, atol=1e-5)


def test_full_prefix_logits_and_prediction(converted):
    """BOS + image tokens + prompt through the converted policy = the reference chain, and predict works."""
    tensors, src, out, _ = converted
    policy = Policy.load(out)
    text = json.loads((src / "config.json").read_text())["text_config"]
    ref_lm = load_hf_checkpoint(src, key_prefix="language_model.", config=text)
    frames = torch.randint(
        0, 256, (1, IMG, IMG, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    batch = {
        "observation.images.image": frames,
        "observation.state": torch.zeros(1, 7),
        "task": ["Pick up red cube."],
    }
    with torch.no_grad():
        prefix, valid = policy._prefix(batch)  # (1, P, D), (1, P)
        mask = policy._mask(valid, prefix.shape[1], 0, action_causal=True)
        ours = policy.lm(inputs_embeds=prefix, attention_mask=mask, position_ids=policy._positions(valid))
        ours_logits = ours.logits[valid]  # (P_real, V)

        tok = policy.tokenizer.tok
        prompt_ids = tok.encode("In: What action should the robot take to pick up red cube?\nOut:").ids
        assert "<unk>" not in tok.encode("pick up red cube").tokens
        feats = [
            timm_vit_features(
                tensors, p, preprocess_images(frames, policy.vision_tower.towers[n].preprocess), h
            )
            for n, p, h in (
                ("dino", "vision_backbone.featurizer.", DINO["heads"]),
                ("siglip", "vision_backbone.fused_featurizer.", SIGLIP["heads"]),
            )
        ]
        ref_in = torch.cat(
            [
                ref_lm.embed(torch.tensor([[1]])),  # BOS before the image tokens, as prismatic
                projector(tensors, torch.cat(feats, -1)),
                ref_lm.embed(torch.tensor([prompt_ids])),
            ],
            dim=1,
        )
        ref_logits = ref_lm(inputs_embeds=ref_in).logits[0]  # causal, as the released HF model
        torch.testing.assert_close(ours_logits, ref_logits, rtol=1e-4, atol=1e-4)

        actions = policy.predict_batch(batch)  # (1, 1, 3): 3 greedy action tokens, un-normalized
    assert actions.shape == (1, 1, 3) and torch.isfinite(actions).all()
    q01, q99 = (
        np.array(STATS["bridge_orig"]["action"]["q01"]),
        np.array(STATS["bridge_orig"]["action"]["q99"]),
    )
    a = actions[0, 0].numpy()
    assert np.all(a[:2] >= q01[:2] - 1e-5) and np.all(a[:2] <= q99[:2] + 1e-5)  # normalized dims
    assert -1 - 1e-6 <= a[2] <= 1 + 1e-6  # the masked (gripper) dim stays in [-1, 1]
    assert policy.config.unnormalized_action_dims == [2]
    assert policy.config.action_vocab_size == 320 and policy.config.binning == "openvla"


def _convert_modified(tmp_path: Path, change) -> OpenVLAConversionError:
    tensors = synthetic_tensors()
    change(tensors)
    src = write_openvla(tmp_path / "src", tensors)
    with pytest.raises(OpenVLAConversionError) as e:
        convert_openvla(src, tmp_path / "out", unnorm_key="bridge_orig", vision=TINY_VISION)
    assert not (tmp_path / "out").exists()  # nothing written on failure
    return e.value


def test_missing_unexpected_and_wrong_shape_are_listed_in_one_error(tmp_path):
    def change(t: dict) -> None:
        del t["vision_backbone.featurizer.blocks.0.attn.qkv.weight"]
        del t["language_model.model.layers.1.mlp.up_proj.weight"]
        t["projector.fc2.weight"] = torch.zeros(3, 5)
        t["vision_backbone.featurizer.blocks.9.attn.qkv.weight"] = torch.zeros(96, 32)  # beyond the depth
        t["vision_backbone.extra_head.weight"] = torch.zeros(2)

    err = _convert_modified(tmp_path, change)
    msg = str(err)
    assert err.missing == [
        "language_model.model.layers.1.mlp.up_proj.weight",
        "vision_backbone.featurizer.blocks.0.attn.qkv.weight",
    ]
    assert err.mismatched == ["projector.fc2.weight: file has [3, 5], projector.fc2.weight needs [64, 320]"]
    assert [u.split()[0] for u in err.unexpected] == [
        "vision_backbone.extra_head.weight",
        "vision_backbone.featurizer.blocks.9.attn.qkv.weight",
    ]
    for name in (*err.missing, "projector.fc2.weight", "vision_backbone.extra_head.weight"):
        assert name in msg


def test_wrong_position_table_shape_is_named(tmp_path):
    def change(t: dict) -> None:
        t["vision_backbone.fused_featurizer.pos_embed"] = torch.zeros(1, 9, SIGLIP["width"])

    err = _convert_modified(tmp_path, change)
    assert err.mismatched and err.mismatched[0].startswith(
        "vision_backbone.fused_featurizer.pos_embed: file has"
    )
    assert not err.missing and not err.unexpected


def test_unnorm_key_unknown_or_ambiguous_lists_the_keys(tmp_path):
    src = write_openvla(tmp_path / "src", synthetic_tensors())
    with pytest.raises(Exception, match=r"unnorm_key 'libero'.*\['bridge_orig', 'fractal20220817_data'\]"):
        convert_openvla(src, tmp_path / "a", unnorm_key="libero", vision=TINY_VISION)
    with pytest.raises(Exception, match=r"choose one with --unnorm-key.*'bridge_orig'"):
        convert_openvla(src, tmp_path / "b", vision=TINY_VISION)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    src = write_openvla(tmp_path / "src", synthetic_tensors())
    assert main([str(src), str(tmp_path / "out"), "--unnorm-key", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unnorm_key 'nope'" in err and "bridge_orig" in err
