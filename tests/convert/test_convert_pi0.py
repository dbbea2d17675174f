"""π0 checkpoint import on synthetic tiny checkpoints with the published key names and config fields.

A tiny ``Pi0Policy`` is the ground truth: its weights are written under LeRobot's / openpi's names
(through the converter's own inverse map, plus the extras real files hold: the expert's unused
``lm_head``, PaliGemma's tied head), with config.json, statistics and tokenizer files as the
published checkpoints have them. The converted policy must hold the same tensors and sample the
same actions. Independently of that round trip, a few published names are spelled out literally
here, and openpi's own sampler (t from 1 to 0, velocity ε − A, φ(t) features) is re-implemented
on the published tensors, so a wrong sign or time convention in the map cannot cancel out.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vlaforge.convert.pi0 import (
    REPORT_FILE,
    GemmaVariant,
    Pi0ConversionError,
    SourceNames,
    convert_pi0,
    export_state_dict,
    flip_time_columns,
    main,
)
from vlaforge.errors import CheckpointError
from vlaforge.models.lm import LMConfig
from vlaforge.models.prompt import HFPromptTokenizer
from vlaforge.policies.lm_recipes import siglip_spec
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.transforms.normalize import FeatureNorm, Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

VARIANTS = {
    "tiny_vlm": GemmaVariant(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    "tiny_expert": GemmaVariant(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=16),
}
IMG = 32
VISION = {"siglip": siglip_spec(IMG, 8, 48, 2, 2, 96)}  # 16 patches per camera, post-norm features
CAMS = ("base_0_rgb", "left_wrist_0_rgb")
S, A, H, MAXD, STEPS, TOKEN_LEN, VOCAB = 3, 2, 4, 8, 3, 12, 32
WORDS = "pick up the red cube and put it in drawer".split()
STATS = {
    STATE_KEY: {
        "mean": [0.1, -0.2, 0.3],
        "std": [0.5, 1.5, 2.0],
        "min": [-1.0, -3.0, -4.0],
        "max": [1, 3, 4],
    },
    ACTION_KEY: {"mean": [0.05, -0.1], "std": [0.3, 0.7], "min": [-1.0, -2.0], "max": [1.0, 2.0]},
}
LR = "model.paligemma_with_expert."  # LeRobot's prefix of the π0 module


def tokenizer_dir(root: Path, extra: Sequence[str] = ()) -> Path:
    """A PaliGemma-like tokenizer.json (pad 0, eos 1, bos 2) over the test's words (+ `extra`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *WORDS, *extra])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    return root


def expected_config() -> Pi0Config:
    """What the converter must build from the synthetic config.json (written out independently)."""
    lm = LMConfig(
        family="gemma", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=1, head_dim=16, max_position=8192, tie_embeddings=True, hidden_act="gelu_pytorch_tanh",
    )  # fmt: skip
    return Pi0Config(
        recipe="pi0",
        cameras={c: [IMG, IMG] for c in CAMS},
        state_dim=S,
        action_dim=A,
        chunk=H,
        fps=10.0,
        lm=dataclasses.asdict(lm),
        expert_width=32,
        expert_mlp_dim=64,
        # LeRobot >= 0.4 (image_resolution in config.json): openpi's centred resize with padding
        vision={k: {"resize": "pad-centre", **v} for k, v in VISION.items()},
        prompt="{instruction}\n",
        text_max_len=TOKEN_LEN - 1,
        bos_token_id=2,
        language="hf",
        max_state_dim=MAXD,
        max_action_dim=MAXD,
        steps=STEPS,
    )


def reference_policy(tok_dir: Path) -> Pi0Policy:
    """The ground-truth tiny π0 with random, non-trivial weights (norm gains and biases included)."""
    torch.manual_seed(0)
    norm = Normalizer(
        {k: FeatureNorm("mean_std", {s: np.array(v) for s, v in d.items()}) for k, d in STATS.items()}
    )
    policy = Pi0Policy(expected_config(), norm, HFPromptTokenizer.from_file(tok_dir))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval()


def lerobot_config(**changes) -> dict:
    """LeRobot >= 0.4 PI0Config as saved in config.json (tiny variants)."""
    cfg = {
        "type": "pi0",
        "n_obs_steps": 1,
        "input_features": {
            **{f"{IMAGE_PREFIX}{c}": {"type": "VISUAL", "shape": [3, IMG, IMG]} for c in CAMS},
            STATE_KEY: {"type": "STATE", "shape": [S]},
        },
        "output_features": {ACTION_KEY: {"type": "ACTION", "shape": [A]}},
        "device": "cpu",
        "use_amp": False,
        "paligemma_variant": "tiny_vlm",
        "action_expert_variant": "tiny_expert",
        "dtype": "float32",
        "chunk_size": H,
        "n_action_steps": H,
        "max_state_dim": MAXD,
        "max_action_dim": MAXD,
        "num_inference_steps": STEPS,
        "time_sampling_beta_alpha": 1.5,
        "time_sampling_beta_beta": 1.0,
        "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001,
        "min_period": 0.004,
        "max_period": 4.0,
        "image_resolution": [IMG, IMG],
        "empty_cameras": 0,
        "tokenizer_max_length": TOKEN_LEN,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
        "freeze_vision_encoder": False,
        "train_expert_only": False,
    }
    return cfg | changes


def save_weights(root: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> None:
    items = sorted(tensors.items())
    if shards == 1:
        save_file(
            {k: v.contiguous() for k, v in items}, str(root / "model.safetensors"), metadata={"format": "pt"}
        )
        return
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = dict(items[i::shards])
        save_file({k: v.contiguous() for k, v in part.items()}, str(root / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, fname)
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_lerobot(root: Path, policy: Pi0Policy, *, shards: int = 1, config: dict | None = None) -> dict:
    """LeRobot >= 0.4 layout: model.safetensors + config.json + processor files with the statistics."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = export_state_dict(policy.state_dict(), policy.config, layout="lerobot")
    g = torch.Generator().manual_seed(5)
    tensors[LR + "gemma_expert.lm_head.weight"] = torch.randn(VOCAB, 32, generator=g)  # unused, but saved
    save_weights(root, tensors, shards)
    (root / "config.json").write_text(json.dumps(config or lerobot_config()))
    state = {f"{k}.{s}": torch.tensor(v, dtype=torch.float32) for k, d in STATS.items() for s, v in d.items()}
    state["observation.images.base_0_rgb.mean"] = torch.zeros(3, 1, 1)  # image stats are saved too (IDENTITY)
    save_file(state, str(root / "policy_preprocessor_step_5_normalizer_processor.safetensors"))
    norm_cfg = {
        "eps": 1e-8,
        "features": {},
        "norm_map": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
    }
    steps = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "pi0_new_line_processor", "config": {}},
        {
            "registry_name": "tokenizer_processor",
            "config": {"max_length": TOKEN_LEN, "padding_side": "right"},
        },
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
        {
            "registry_name": "normalizer_processor",
            "config": norm_cfg,
            "state_file": "policy_preprocessor_step_5_normalizer_processor.safetensors",
        },
    ]
    (root / "policy_preprocessor.json").write_text(
        json.dumps({"name": "policy_preprocessor", "steps": steps})
    )
    return tensors


def write_openpi(
    root: Path, policy: Pi0Policy, *, assets: tuple[str, ...] = ("physical-intelligence/libero",)
) -> dict:
    """openpi's PyTorch conversion: no prefix, older PaliGemma spelling here, assets/<id>/norm_stats.json."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = export_state_dict(
        policy.state_dict(), policy.config, layout="openpi", paligemma_keys="transformers<4.52"
    )
    save_weights(root, tensors)
    cfg = {
        "action_dim": MAXD,
        "action_horizon": H,
        "paligemma_variant": "tiny_vlm",
        "action_expert_variant": "tiny_expert",
        "precision": "float32",
    }
    (root / "config.json").write_text(json.dumps(cfg))
    for i, asset in enumerate(assets):
        d = root / "assets" / asset
        d.mkdir(parents=True)
        stats = {
            "state": STATS[STATE_KEY],
            "actions": {k: [x + i for x in v] for k, v in STATS[ACTION_KEY].items()},
        }
        (d / "norm_stats.json").write_text(json.dumps({"norm_stats": stats}))
    return tensors


def batch(n: int = 2) -> dict:
    g = torch.Generator().manual_seed(3)
    b = {
        IMAGE_PREFIX + c: torch.randint(0, 256, (n, IMG, IMG, 3), dtype=torch.uint8, generator=g)
        for c in CAMS
    }
    b[STATE_KEY] = torch.randn(n, S, generator=g)
    b["task"] = ["pick up the red cube", "put it in the drawer"][:n]
    return b


@pytest.fixture(scope="module")
def lerobot_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("pi0")
    tok = tokenizer_dir(root / "tokenizer")
    ref = reference_policy(tok)
    tensors = write_lerobot(root / "lerobot_pi0", ref)
    report = convert_pi0(root / "lerobot_pi0", root / "out", tokenizer=tok, variants=VARIANTS, vision=VISION)
    return ref, tensors, Policy.load(root / "out"), report, root


# ---------------------------------------------------------------------------------------------- tests


def test_every_tensor_lands_where_expected(lerobot_case):
    ref, tensors, converted, report, root = lerobot_case
    assert isinstance(converted, Pi0Policy) and report.ok and report.layout == "lerobot"
    assert report.paligemma_keys == "transformers>=4.52"
    assert report.dropped == [LR + "gemma_expert.lm_head.weight"]
    assert converted.config.to_dict() == expected_config().to_dict()
    ours, theirs = converted.state_dict(), ref.state_dict()
    assert set(ours) == set(theirs) and report.converted == len(ours)
    for k, v in theirs.items():  # the round trip through the published names is exact (time fold: 1e-6)
        torch.testing.assert_close(ours[k], v, rtol=0, atol=1e-6 if k == "action_time_mlp_in.weight" else 0)
    # Literal published names (LeRobot >= 0.4 / openpi PyTorch, as in the brief's lerobot/pi0_base keys).
    literal = {
        LR + "paligemma.model.language_model.layers.0.self_attn.q_proj.weight": "transformer.backbone.layers.0.attn.q_proj.weight",
        LR + "paligemma.model.language_model.layers.1.input_layernorm.weight": "transformer.backbone.layers.1.attn_norm.weight",
        LR + "paligemma.model.language_model.layers.1.post_attention_layernorm.weight": "transformer.backbone.layers.1.mlp_norm.weight",
        LR + "paligemma.model.language_model.layers.0.mlp.gate_proj.weight": "transformer.backbone.layers.0.mlp.gate_proj.weight",
        LR + "paligemma.model.language_model.embed_tokens.weight": "transformer.backbone.embed_tokens.weight",
        LR + "paligemma.model.language_model.norm.weight": "transformer.backbone.final_norm.weight",
        LR + "gemma_expert.model.layers.1.self_attn.o_proj.weight": "transformer.expert.layers.1.attn.o_proj.weight",
        LR + "gemma_expert.model.layers.0.mlp.down_proj.weight": "transformer.expert.layers.0.mlp.down_proj.weight",
        LR + "gemma_expert.model.norm.weight": "transformer.expert.final_norm.weight",
        LR + "paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight": "vision_tower.model.embeddings.patch_embedding.weight",
        LR + "paligemma.model.vision_tower.vision_model.encoder.layers.1.self_attn.out_proj.bias": "vision_tower.model.encoder.layers.1.self_attn.out_proj.bias",
        LR + "paligemma.model.vision_tower.vision_model.post_layernorm.weight": "vision_tower.model.post_layernorm.weight",
        LR + "paligemma.model.multi_modal_projector.linear.weight": "projector.linear.weight",
        "model.state_proj.weight": "state_proj.weight",
        "model.action_in_proj.bias": "action_in_proj.bias",
        "model.action_time_mlp_out.weight": "action_time_mlp_out.weight",
    }  # fmt: skip
    for published, name in literal.items():
        assert torch.equal(ours[name], tensors[published]), published
    assert torch.equal(ours["action_out_proj.weight"], -tensors["model.action_out_proj.weight"])
    assert torch.equal(
        ours["action_time_mlp_in.weight"][:, :32], tensors["model.action_time_mlp_in.weight"][:, :32]
    )
    saved = json.loads((root / "out" / REPORT_FILE).read_text())
    assert saved["statistics"].startswith("LeRobot processor state") and saved["converted"] == len(ours)


def openpi_sample(policy: Pi0Policy, t: dict, prefix: str, b: dict, noise: torch.Tensor) -> torch.Tensor:
    """openpi's ``sample_actions`` on the published action-expert tensors: t from 1 (noise) to 0, φ(t)
    concatenated to W1·x_t, velocity = ε − A, Euler with dt = −1/steps (the joint transformer is the
    converted policy's, whose tensors the test above checks one by one)."""

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, t[f"{prefix}{name}.weight"], t[f"{prefix}{name}.bias"])

    with torch.no_grad():
        emb, valid = policy.embed_prefix(b)
        B, De = emb.shape[0], 32
        state = F.pad(policy.normalizer.normalize(STATE_KEY, b[STATE_KEY]), (0, MAXD - S))
        state_tok = lin(state, "state_proj")[:, None]  # (B, 1, De)
        mask, pos = policy.attention_mask(valid)
        x, time, dt = noise.clone(), 1.0, -1.0 / STEPS
        period = 4e-3 * (4.0 / 4e-3) ** torch.linspace(0, 1, De // 2, dtype=torch.float64)
        for _ in range(STEPS):
            ang = torch.full((B, 1), time, dtype=torch.float64) * (2 * math.pi / period)  # (B, De/2)
            phi = torch.cat([ang.sin(), ang.cos()], -1).float()[:, None].expand(B, H, De)
            tok = lin(
                F.silu(lin(torch.cat([lin(x, "action_in_proj"), phi], -1), "action_time_mlp_in")),
                "action_time_mlp_out",
            )
            _, out = policy.transformer([emb, torch.cat([state_tok, tok], 1)], mask, pos)
            x = x + dt * lin(out[:, 1:], "action_out_proj")  # v = ε − A
            time += dt
    return x


def test_predictions_equal_the_reference_model_and_openpi_sampling(lerobot_case):
    ref, tensors, converted, _, _ = lerobot_case
    b = batch()
    noise = torch.randn(2, H, MAXD, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = converted.sample_actions(b, noise=noise)
        theirs = ref.sample_actions(b, noise=noise)
        uncached = converted.sample_actions(b, noise=noise, use_cache=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, uncached, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, openpi_sample(converted, tensors, "model.", b, noise), rtol=0, atol=1e-5)
    a = converted.predict_batch(b, generator=torch.Generator().manual_seed(1))
    r = ref.predict_batch(b, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, H, A)
    torch.testing.assert_close(a, r, rtol=0, atol=1e-5)


def test_time_fold_is_an_exact_reparametrisation():
    """W·φ(1 − τ) == fold(W)·φ(τ) for every τ, and folding twice is the identity."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 24, generator=g, dtype=torch.float64)  # De = 12
    folded = flip_time_columns(W, 12, 4e-3, 4.0)
    period = 4e-3 * (4.0 / 4e-3) ** torch.linspace(0, 1, 6, dtype=torch.float64)

    def phi(t: torch.Tensor) -> torch.Tensor:
        ang = t[:, None] * (2 * math.pi / period)
        return torch.cat([ang.sin(), ang.cos()], -1)

    tau = torch.rand(5, generator=g, dtype=torch.float64)
    a = torch.randn(5, 12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.cat([a, phi(1 - tau)], 1) @ W.T, torch.cat([a, phi(tau)], 1) @ folded.T)
    torch.testing.assert_close(flip_time_columns(folded, 12, 4e-3, 4.0), W, rtol=0, atol=1e-12)
    # φ alone (π0.5's time_mlp_in): the same reflection on columns [0, De)
    W2 = torch.randn(6, 12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        phi(1 - tau) @ W2.T, phi(tau) @ flip_time_columns(W2, 12, 4e-3, 4.0, first=0).T
    )


def _convert_broken(tmp_path: Path, change) -> Pi0ConversionError:
    tok = tokenizer_dir(tmp_path / "tok")
    src = tmp_path / "src"
    tensors = write_lerobot(src, reference_policy(tok))
    change(tensors)
    save_weights(src, tensors)
    with pytest.raises(Pi0ConversionError) as e:
        convert_pi0(src, tmp_path / "out", tokenizer=tok, variants=VARIANTS, vision=VISION)
    assert not (tmp_path / "out").exists()  # nothing written on failure
    return e.value


def test_missing_unexpected_and_wrong_shape_are_named_in_one_error(tmp_path):
    def change(t: dict) -> None:
        del t[LR + "paligemma.model.language_model.layers.1.mlp.up_proj.weight"]
        del t[LR + "gemma_expert.model.layers.0.self_attn.k_proj.weight"]
        t["model.action_in_proj.weight"] = torch.zeros(32, 7)
        t[LR + "gemma_expert.model.layers.5.mlp.up_proj.weight"] = torch.zeros(2)  # beyond the depth
        t["model.extra_head.weight"] = torch.zeros(3)

    err = _convert_broken(tmp_path, change)
    assert err.missing == [
        LR + "gemma_expert.model.layers.0.self_attn.k_proj.weight",
        LR + "paligemma.model.language_model.layers.1.mlp.up_proj.weight",
    ]
    assert err.mismatched == [
        f"model.action_in_proj.weight: file has [32, 7], action_in_proj.weight needs [32, {MAXD}]"
    ]
    assert [u.split()[0] for u in err.unexpected] == [
        "model.extra_head.weight",
        LR + "gemma_expert.model.layers.5.mlp.up_proj.weight",
    ]
    for name in (*err.missing, "model.action_in_proj.weight", "model.extra_head.weight"):
        assert name in str(err)


def test_sharded_checkpoint_loads_and_tied_head_is_checked(tmp_path):
    tok = tokenizer_dir(tmp_path / "tok")
    ref = reference_policy(tok)
    src = tmp_path / "src"
    tensors = write_lerobot(src, ref, shards=3)
    assert (src / "model.safetensors.index.json").is_file() and not (src / "model.safetensors").exists()
    report = convert_pi0(src, tmp_path / "out", tokenizer=tok, variants=VARIANTS, vision=VISION)
    assert report.ok
    torch.testing.assert_close(
        Policy.load(tmp_path / "out").state_dict()["state_proj.weight"], ref.state_proj.weight
    )
    # PaliGemma's tied head stored next to the embeddings: dropped when equal; other values (LeRobot >= 0.6
    # leaves the head untied and untrained) are dropped with a note, the embeddings used; another shape: error.
    head = LR + "paligemma.lm_head.weight"
    embed = tensors[LR + "paligemma.model.language_model.embed_tokens.weight"]
    tensors[head] = embed.clone()
    save_weights(src, tensors, shards=3)
    report = convert_pi0(src, tmp_path / "out2", tokenizer=tok, variants=VARIANTS, vision=VISION)
    assert head in report.dropped and not any("does not tie them" in n for n in report.notes)
    tensors[head] = tensors[head] + 1
    save_weights(src, tensors, shards=3)
    report = convert_pi0(src, tmp_path / "out3", tokenizer=tok, variants=VARIANTS, vision=VISION)
    assert head in report.dropped and any("does not tie them" in n for n in report.notes), report.notes
    torch.testing.assert_close(
        Policy.load(tmp_path / "out3").state_dict()["transformer.backbone.embed_tokens.weight"], embed
    )
    tensors[head] = tensors[head][:-1]
    save_weights(src, tensors, shards=3)
    with pytest.raises(CheckpointError, match="differ in shape"):
        convert_pi0(src, tmp_path / "out4", tokenizer=tok, variants=VARIANTS, vision=VISION)


def test_openpi_layout_with_old_paligemma_names_and_assets(tmp_path):
    tok = tokenizer_dir(tmp_path / "tok")
    ref = reference_policy(tok)
    src = tmp_path / "openpi"
    tensors = write_openpi(src, ref, assets=("physical-intelligence/libero", "trossen"))
    assert "paligemma_with_expert.paligemma.language_model.model.layers.0.self_attn.q_proj.weight" in tensors
    with pytest.raises(CheckpointError, match=r"--asset-id.*\['physical-intelligence/libero', 'trossen'\]"):
        convert_pi0(src, tmp_path / "a", tokenizer=tok, variants=VARIANTS, vision=VISION)
    with pytest.raises(CheckpointError, match="--layout lerobot but the file has the openpi layout"):
        convert_pi0(src, tmp_path / "b", layout="lerobot", tokenizer=tok, variants=VARIANTS, vision=VISION)
    report = convert_pi0(
        src, tmp_path / "out", tokenizer=tok, asset_id="trossen", state_dim=S, action_dim=A, frame_size=(IMG, IMG),
        cameras=list(CAMS), variants=VARIANTS, vision=VISION,
    )  # fmt: skip
    assert report.layout == "openpi" and report.paligemma_keys == "transformers<4.52"
    assert report.statistics == "openpi assets/trossen/norm_stats.json"
    assert any("right_wrist_0_rgb" in n for n in report.notes)  # the third openpi image slot is omitted
    converted = Policy.load(tmp_path / "out")
    # openpi's config.json has neither the step count nor the token budget: openpi's defaults (10, 48).
    assert (converted.config.steps, converted.config.text_max_len) == (10, 47)
    stats = converted.normalizer.features[ACTION_KEY].stats
    np.testing.assert_allclose(stats["mean"], np.array(STATS[ACTION_KEY]["mean"]) + 1)
    b = batch()
    noise = torch.randn(2, H, MAXD, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = converted.sample_actions(b, noise=noise, steps=STEPS)
        torch.testing.assert_close(ours, ref.sample_actions(b, noise=noise), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours, openpi_sample(converted, tensors, "", b, noise), rtol=0, atol=1e-5)


def test_old_lerobot_layout_reads_buffers_and_the_tied_head(tmp_path):
    """LeRobot < 0.4: transformers < 4.52 PaliGemma names, statistics as normalization buffers in the
    weights (inf placeholders in base models), only the tied lm_head copy of the embeddings."""
    tok = tokenizer_dir(tmp_path / "tok")
    ref = reference_policy(tok)
    src = tmp_path / "src"
    src.mkdir()
    tensors = export_state_dict(
        ref.state_dict(), ref.config, layout="lerobot", paligemma_keys="transformers<4.52"
    )
    names = SourceNames.build("lerobot", "transformers<4.52")
    tensors[names.lm_head] = tensors.pop(names.embed)
    for prefix, feats in (
        ("normalize_inputs", (STATE_KEY,)),
        ("normalize_targets", (ACTION_KEY,)),
        ("unnormalize_outputs", (ACTION_KEY,)),
    ):
        for feat in feats:
            for stat in ("mean", "std"):
                tensors[f"{prefix}.buffer_{feat.replace('.', '_')}.{stat}"] = torch.tensor(STATS[feat][stat])
    save_weights(src, tensors)
    cfg = lerobot_config(num_steps=STEPS, proj_width=32, resize_imgs_with_padding=[IMG, IMG])
    for k in ("num_inference_steps", "image_resolution"):
        del cfg[k]
    (src / "config.json").write_text(json.dumps(cfg))
    report = convert_pi0(src, tmp_path / "out", tokenizer=tok, variants=VARIANTS, vision=VISION)
    assert report.statistics == "LeRobot normalization buffers in the weights"
    assert sum(k.startswith("normalize") or k.startswith("unnormalize") for k in report.dropped) == 6
    converted = Policy.load(tmp_path / "out")
    assert torch.equal(converted.backbone.embed_tokens.weight, ref.backbone.embed_tokens.weight)
    # A base model saved without statistics has inf buffers: the user must name a dataset.
    for k in [k for k in tensors if k.startswith(("normalize", "unnormalize"))]:
        tensors[k] = torch.full_like(tensors[k], math.inf)
    save_weights(src, tensors)
    with pytest.raises(CheckpointError, match="inf/NaN placeholders.*--stats"):
        convert_pi0(src, tmp_path / "out2", tokenizer=tok, variants=VARIANTS, vision=VISION)


def test_statistics_from_a_dataset_and_their_absence(tmp_path):
    from vlaforge.data.meta import load_meta
    from vlaforge.data.synthetic import write_synthetic_dataset

    tok = tokenizer_dir(tmp_path / "tok")
    src = tmp_path / "src"
    write_lerobot(src, reference_policy(tok))
    for f in src.glob("policy_preprocessor*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no normalization statistics.*--stats DATASET_DIR"):
        convert_pi0(src, tmp_path / "a", tokenizer=tok, variants=VARIANTS, vision=VISION)
    data = write_synthetic_dataset(
        tmp_path / "data", episodes=2, length=6, length_jitter=0, cameras=("c",), height=8, width=8, state_dim=S,
        action_dim=A, fps=15,
    )  # fmt: skip
    report = convert_pi0(src, tmp_path / "b", tokenizer=tok, stats=data, variants=VARIANTS, vision=VISION)
    assert report.statistics == f"dataset {data}"
    converted = Policy.load(tmp_path / "b")
    assert converted.config.fps == 15.0
    np.testing.assert_allclose(
        converted.normalizer.features[STATE_KEY].stats["std"],
        load_meta(data).stats[STATE_KEY]["std"],
        rtol=1e-6,
    )


def test_missing_tokenizer_and_half_pi05_checkpoints_are_refused(tmp_path):
    tok = tokenizer_dir(tmp_path / "tok")
    src = tmp_path / "src"
    tensors = write_lerobot(src, reference_policy(tok))
    with pytest.raises(CheckpointError, match=r"tokenizer.*google/paligemma-3b-pt-224.*--tokenizer"):
        convert_pi0(src, tmp_path / "a", variants=VARIANTS, vision=VISION)
    tensors["model.time_mlp_in.weight"] = tensors.pop("model.action_time_mlp_in.weight")[:, :32]
    save_weights(src, tensors)
    with pytest.raises(CheckpointError, match="π0.5 checkpoint"):
        convert_pi0(src, tmp_path / "b", tokenizer=tok, variants=VARIANTS, vision=VISION)


def test_cli_subcommand_and_camera_order_note(tmp_path, capsys):
    from vlaforge.cli import main as vlaforge_main

    tok = tokenizer_dir(tmp_path / "tok")
    src = tmp_path / "src"
    cfg = lerobot_config()
    cfg["input_features"] = dict(reversed(list(cfg["input_features"].items())))  # wrist camera first
    write_lerobot(src, reference_policy(tok), config=cfg)
    # The published sizes are the default: the tiny file does not fit them, and the error says so.
    assert (
        vlaforge_main(["convert-pi0", str(src), "--out", str(tmp_path / "x"), "--tokenizer", str(tok)]) == 1
    )
    assert "unknown Gemma variant 'tiny_vlm'" in capsys.readouterr().err
    assert main([str(src), "--out", str(tmp_path / "y"), "--layout", "openpi", "--tokenizer", str(tok)]) == 1
    assert "--layout openpi but the file has the lerobot layout" in capsys.readouterr().err
    report = convert_pi0(src, tmp_path / "z", tokenizer=tok, variants=VARIANTS, vision=VISION)
    assert any("Pi0Policy orders cameras by name" in n for n in report.notes)


def test_published_sizes_give_the_published_tensor_shapes(tmp_path):
    """lerobot/pi0_base's config (gemma_2b + gemma_300m, 224 px, 32-dim padding) -> the shapes of the
    published tensors, written out here from the π0 architecture (built on the meta device, no weights)."""
    from vlaforge.convert.common import parameters_on_meta
    from vlaforge.convert.pi0 import checkpoint_spec, pi0_policy_config, plan_pi0

    cfg = lerobot_config(paligemma_variant="gemma_2b", action_expert_variant="gemma_300m", chunk_size=50)
    cfg |= {
        "max_state_dim": 32,
        "max_action_dim": 32,
        "image_resolution": [224, 224],
        "tokenizer_max_length": 48,
    }
    spec = checkpoint_spec(cfg, "lerobot")
    config = pi0_policy_config(
        spec, vocab_size=257152, cameras={c: [224, 224] for c in CAMS}, state_dim=S, action_dim=A, fps=50.0,
        state_norm="mean_std", action_norm="mean_std",
    )  # fmt: skip
    norm = Normalizer(
        {k: FeatureNorm("mean_std", {s: np.array(v) for s, v in d.items()}) for k, d in STATS.items()}
    )
    with parameters_on_meta():
        policy = Pi0Policy(
            config, norm, HFPromptTokenizer.from_file(tokenizer_dir(tmp_path)), lm_on_meta=True
        )
    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    plan = plan_pi0(expected, SourceNames.build("lerobot"), config)
    shapes = {rule.source: rule.shapes[0] for rule in plan.values()}
    pg, ex, vt = (
        LR + "paligemma.model.",
        LR + "gemma_expert.model.",
        LR + "paligemma.model.vision_tower.vision_model.",
    )
    published = {
        pg + "language_model.embed_tokens.weight": (257152, 2048),
        pg + "language_model.layers.17.self_attn.q_proj.weight": (2048, 2048),  # 8 heads x 256
        pg + "language_model.layers.17.self_attn.k_proj.weight": (256, 2048),  # 1 KV head
        pg + "language_model.layers.0.mlp.gate_proj.weight": (16384, 2048),
        pg + "language_model.norm.weight": (2048,),
        ex + "layers.17.self_attn.q_proj.weight": (2048, 1024),
        ex + "layers.0.self_attn.o_proj.weight": (1024, 2048),
        ex + "layers.0.mlp.down_proj.weight": (1024, 4096),
        vt + "embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        vt + "embeddings.position_embedding.weight": (256, 1152),
        vt + "encoder.layers.26.mlp.fc1.weight": (4304, 1152),
        pg + "multi_modal_projector.linear.weight": (2048, 1152),
        "model.state_proj.weight": (1024, 32),
        "model.action_in_proj.weight": (1024, 32),
        "model.action_time_mlp_in.weight": (1024, 2048),
        "model.action_time_mlp_out.weight": (1024, 1024),
        "model.action_out_proj.weight": (32, 1024),
    }  # fmt: skip
    for name, shape in published.items():
        assert shapes[name] == shape, name
    assert (
        len([k for k in shapes if ".vision_model.encoder.layers." in k and k.endswith("q_proj.weight")]) == 27
    )
    assert config.chunk == 50 and config.text_max_len == 47 and config.steps == STEPS
