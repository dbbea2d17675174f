"""π0.5 checkpoint import (`vlaforge convert-pi0` on π0.5 files) on synthetic tiny checkpoints.

A tiny ``Pi05Policy`` with random weights (adaRMS modulations included) is the ground truth. It is
written under LeRobot's ``PI05Policy`` / openpi's ``PI0Pytorch(pi05=True)`` names through the
converter's own inverse map (``export_state_dict``), with the config and statistics files those
checkpoints have. The converted policy must hold the same tensors and sample the same actions.

Independently of that round trip, a few published names are spelled out literally, and openpi's π0.5
sampler is re-implemented here from openpi's code on the *published* tensors: its prompt
(``"Task: …, State: …;\\nAction: "`` with ``np.digitize`` bins, right padding), its Gemma layers with
``GemmaRMSNorm(cond_dim)`` (``dense(cond)`` split into scale, shift, gate; ``x̂·(1 + scale) + shift``;
``x + gate·f``), its joint attention (``make_att_2d_masks``, additive mask, eager softmax) and its
Euler loop (t from 1 to 0, φ(t), velocity ε − A). Only the image tokens (SigLIP + projector, whose names
the π0 importer tests check) come from the converted policy. So a wrong chunk order of the adaRMS
rows, a wrong time convention or a wrong prompt cannot cancel out.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tests.convert.test_convert_pi0 import CAMS, IMG, LR, VARIANTS, VISION, save_weights
from tests.convert.test_convert_pi0 import tokenizer_dir as pi0_tokenizer_dir
from vlaforge.convert.pi0 import (
    REPORT_FILE,
    Pi0ConversionError,
    convert_pi0,
    export_state_dict,
    flip_time_columns,
    main,
)
from vlaforge.errors import CheckpointError
from vlaforge.models.lm import LMConfig
from vlaforge.models.prompt import HFPromptTokenizer
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer
from vlaforge.policies.pi0.pi05_config import OPENPI_PROMPT, Pi05Config
from vlaforge.policies.pi0.pi05_policy import Pi05Policy
from vlaforge.transforms.normalize import FeatureNorm, Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, Observation

S, A, H, MAXD, STEPS, TOKEN_LEN = 3, 2, 4, 8, 3, 24
VOCAB = 1536  # LM rows: room for the 1024 reserved FAST ids below the last 128 above the ~290 words
DE = 32  # tiny_expert width
TASKS = ["Pick_up the red cube", "put it in the drawer"]  # openpi keeps the case, turns "_" into " "
STATS = {
    STATE_KEY: {"mean": [0.1, -0.2, 0.3], "std": [0.5, 1.5, 2.0], "q01": [-1.0, -3.0, -4.0], "q99": [1.0, 3.0, 4.5]},
    ACTION_KEY: {"mean": [0.05, -0.1], "std": [0.3, 0.7], "q01": [-1.0, -2.0], "q99": [1.0, 2.5]},
}  # fmt: skip
EX = LR + "gemma_expert.model."


def tokenizer_dir(root: Path) -> Path:
    """A PaliGemma-like tokenizer.json (pad 0, eos 1, bos 2) over the π0.5 prompt's words and numbers."""
    extra = ["Pick", "Task", "State", "Action", ":", ",", ";", "|", *(str(b) for b in range(256))]
    return pi0_tokenizer_dir(root, extra)


def expected_config() -> Pi05Config:
    """What the converter must build from the synthetic LeRobot config.json (written out independently)."""
    lm = LMConfig(
        family="gemma", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=1, head_dim=16, max_position=8192, tie_embeddings=True, hidden_act="gelu_pytorch_tanh",
    )  # fmt: skip
    return Pi05Config(
        recipe="pi05",
        cameras={c: [IMG, IMG] for c in CAMS},
        state_dim=S,
        action_dim=A,
        chunk=H,
        fps=10.0,
        lm=dataclasses.asdict(lm),
        expert_width=DE,
        expert_mlp_dim=64,
        # LeRobot >= 0.4 (image_resolution in config.json): openpi's centred resize with padding
        vision={k: {"resize": "pad-centre", **v} for k, v in VISION.items()},
        prompt="Task: {instruction}, State: {state};\nAction: ",
        text_max_len=TOKEN_LEN - 1,
        bos_token_id=2,
        language="hf",
        max_state_dim=MAXD,
        max_action_dim=MAXD,
        steps=STEPS,
        fast_skip_tokens=128,
    )


def normalizer() -> Normalizer:
    return Normalizer(
        {
            k: FeatureNorm("quantile", {s: np.array(v) for s, v in d.items()}, clip=True)
            for k, d in STATS.items()
        }
    )


def reference_policy(tok_dir: Path) -> Pi05Policy:
    """The ground-truth tiny π0.5 with random, non-trivial weights (adaRMS scale / shift / gate included)."""
    torch.manual_seed(0)
    policy = Pi05Policy(expected_config(), normalizer(), HFPromptTokenizer.from_file(tok_dir), None)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval()


def lerobot_config(**changes) -> dict:
    """LeRobot's PI05Config as saved in config.json (tiny variants)."""
    cfg = {
        "type": "pi05",
        "n_obs_steps": 1,
        "input_features": {
            **{f"{IMAGE_PREFIX}{c}": {"type": "VISUAL", "shape": [3, IMG, IMG]} for c in CAMS},
            STATE_KEY: {"type": "STATE", "shape": [S]},
        },
        "output_features": {ACTION_KEY: {"type": "ACTION", "shape": [A]}},
        "paligemma_variant": "tiny_vlm",
        "action_expert_variant": "tiny_expert",
        "dtype": "float32",
        "chunk_size": H,
        "n_action_steps": H,
        "max_state_dim": MAXD,
        "max_action_dim": MAXD,
        "num_inference_steps": STEPS,
        "min_period": 0.004,
        "max_period": 4.0,
        "image_resolution": [IMG, IMG],
        "empty_cameras": 0,
        "tokenizer_max_length": TOKEN_LEN,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"},
    }
    return cfg | changes


def write_lerobot(root: Path, policy: Pi05Policy, *, config: dict | None = None) -> dict:
    """LeRobot layout: model.safetensors + config.json + the normalizer processor's statistics."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = export_state_dict(policy.state_dict(), policy.config, layout="lerobot")
    tensors[LR + "gemma_expert.lm_head.weight"] = torch.randn(
        VOCAB, DE, generator=torch.Generator().manual_seed(5)
    )
    save_weights(root, tensors)
    (root / "config.json").write_text(json.dumps(config or lerobot_config()))
    state = {f"{k}.{s}": torch.tensor(v, dtype=torch.float32) for k, d in STATS.items() for s, v in d.items()}
    save_file(state, str(root / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    step = {
        "registry_name": "normalizer_processor",
        "config": {"norm_map": {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"}},
        "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors",
    }
    (root / "policy_preprocessor.json").write_text(
        json.dumps({"name": "policy_preprocessor", "steps": [step]})
    )
    return tensors


def write_openpi(root: Path, policy: Pi05Policy) -> dict:
    """openpi's PyTorch conversion of a pi05 checkpoint: no prefix, config.json without a model type."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = export_state_dict(policy.state_dict(), policy.config, layout="openpi")
    save_weights(root, tensors)
    cfg = {"action_dim": MAXD, "action_horizon": H, "paligemma_variant": "tiny_vlm",
           "action_expert_variant": "tiny_expert", "precision": "float32"}  # fmt: skip
    (root / "config.json").write_text(json.dumps(cfg))
    d = root / "assets" / "droid"
    d.mkdir(parents=True)
    stats = {"state": STATS[STATE_KEY], "actions": STATS[ACTION_KEY]}
    (d / "norm_stats.json").write_text(json.dumps({"norm_stats": stats}))
    return tensors


def batch(n: int = 2) -> dict:
    """Images, tasks, and states strictly inside [q01, q99] (openpi bins a state below q01 as -1)."""
    g = torch.Generator().manual_seed(3)
    b = {
        IMAGE_PREFIX + c: torch.randint(0, 256, (n, IMG, IMG, 3), dtype=torch.uint8, generator=g)
        for c in CAMS
    }
    lo, hi = torch.tensor(STATS[STATE_KEY]["q01"]), torch.tensor(STATS[STATE_KEY]["q99"])
    b[STATE_KEY] = lo + (hi - lo) * (0.05 + 0.9 * torch.rand(n, S, generator=g))
    b["task"] = TASKS[:n]
    return b


def fast_tokenizer() -> FastTokenizer:
    g = np.random.default_rng(0)
    chunks = g.uniform(-1, 2, (200, H, A)).cumsum(1) * 0.2
    q = STATS[ACTION_KEY]
    return FastTokenizer.fit(chunks, vocab_size=300, stats={"q01": q["q01"], "q99": q["q99"]})


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("pi05")
    tok = tokenizer_dir(root / "tokenizer")
    ref = reference_policy(tok)
    tensors = write_lerobot(root / "src", ref)
    report = convert_pi0(root / "src", root / "out", tokenizer=tok, variants=VARIANTS, vision=VISION)
    return ref, tensors, Policy.load(root / "out"), report, root


# ------------------------------------------------------------------- openpi's π0.5 sampler, re-implemented


def openpi_pi05_sample(
    policy: Pi05Policy, t: dict, prefix: str, tok_dir: Path, b: dict, noise: torch.Tensor
) -> torch.Tensor:
    """openpi ``PI0Pytorch(pi05=True).sample_actions`` on the published tensors ``t`` (see the module
    docstring; the whole joint sequence at every step, which the KV cache only shortens)."""
    from tokenizers import Tokenizer

    pg = f"{prefix}paligemma_with_expert.paligemma.model.language_model."
    ex = f"{prefix}paligemma_with_expert.gemma_expert.model."
    eps, n_heads, hd = 1e-6, 4, 16

    def lin(x: torch.Tensor, name: str, bias: bool = True) -> torch.Tensor:
        return F.linear(x, t[f"{name}.weight"], t[f"{name}.bias"] if bias else None)

    def norm(
        x: torch.Tensor, name: str, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """openpi's GemmaRMSNorm: plain ``(1 + weight)``, or adaptive: ``dense(cond)`` = scale, shift, gate."""
        xn = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
        if cond is None:
            return xn * (1.0 + t[f"{name}.weight"]), None
        scale, shift, gate = torch.chunk(lin(cond, f"{name}.dense")[:, None], 3, dim=-1)
        return xn * (1 + scale) + shift, gate

    def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # x (B, h, L, hd), pos (B, L)
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        emb = torch.cat([pos[..., None].float() * inv] * 2, -1)[:, None]  # (B, 1, L, hd)
        half = torch.cat([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
        return x * emb.cos() + half * emb.sin()

    def joint(xs: list[torch.Tensor], conds: list, att: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """openpi's PaliGemmaWithExpertModel forward over [prefix, suffix] -> the expert's outputs."""
        bases = (pg, ex)
        for i in range(2):  # tiny depth
            qs, ks, vs, gates = [], [], [], []
            for x, base, cond in zip(xs, bases, conds):
                h, gate = norm(x, f"{base}layers.{i}.input_layernorm", cond)
                gates.append(gate)
                a = f"{base}layers.{i}.self_attn."
                for dest, proj in ((qs, "q_proj"), (ks, "k_proj"), (vs, "v_proj")):
                    y = lin(h, a + proj, False)  # (B, L, heads · hd)
                    dest.append(y.view(*h.shape[:2], -1, hd).transpose(1, 2))  # (B, heads, L, hd)
            q, k, v = rope(torch.cat(qs, 2), pos), rope(torch.cat(ks, 2), pos), torch.cat(vs, 2)
            k, v = k.expand(-1, n_heads, -1, -1), v.expand(-1, n_heads, -1, -1)  # 1 KV head
            scores = q @ k.transpose(2, 3) * hd**-0.5 + torch.where(att[:, None], 0.0, -2.3819763e38)
            y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)
            out, start = [], 0
            for x, base, cond, gate in zip(xs, bases, conds, gates):
                end = start + x.shape[1]
                o = lin(y[:, start:end], f"{base}layers.{i}.self_attn.o_proj", False)
                r = x + o if gate is None else x + o * gate
                h, gate2 = norm(r, f"{base}layers.{i}.post_attention_layernorm", cond)
                m = f"{base}layers.{i}.mlp."
                gated = F.gelu(lin(h, m + "gate_proj", False), approximate="tanh") * lin(
                    h, m + "up_proj", False
                )
                f = lin(gated, m + "down_proj", False)
                out.append(r + f if gate2 is None else r + f * gate2)
                start = end
            xs = out
        return norm(xs[1], f"{ex}norm", conds[1])[0]

    with torch.no_grad():
        B = len(b["task"])
        # PaligemmaTokenizer.tokenize(prompt, state) with discrete state; right-padded to max_token_len
        q01, q99 = (np.array(STATS[STATE_KEY][k]) for k in ("q01", "q99"))
        state = (b[STATE_KEY].numpy() - q01) / (q99 - q01 + 1e-6) * 2 - 1
        bins = np.digitize(state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
        tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        ids = torch.zeros(B, TOKEN_LEN, dtype=torch.long)
        lang_mask = torch.zeros(B, TOKEN_LEN, dtype=torch.bool)
        for r, (task, row) in enumerate(zip(b["task"], bins)):
            cleaned = task.strip().replace("_", " ").replace("\n", " ")
            text = f"Task: {cleaned}, State: {' '.join(map(str, row))};\nAction: "
            tokens = [2, *tok.encode(text, add_special_tokens=False).ids]
            ids[r, : len(tokens)], lang_mask[r, : len(tokens)] = torch.tensor(tokens), True
        lang = t[f"{pg}embed_tokens.weight"][ids] * math.sqrt(64)
        images, image_valid = policy.camera_tokens(b, B)  # SigLIP + projector (π0's, checked there)
        prefix_embs = torch.cat([images, lang], 1)
        pad = torch.cat([image_valid, lang_mask, torch.ones(B, H, dtype=torch.bool)], 1)
        ar = torch.tensor([0] * prefix_embs.shape[1] + [1] + [0] * (H - 1))  # make_att_2d_masks
        cum = ar.cumsum(0)[None].expand(B, -1)
        att = (cum[:, None, :] <= cum[:, :, None]) & (pad[:, None, :] & pad[:, :, None])
        pos = pad.long().cumsum(1) - 1
        period = 4e-3 * (4.0 / 4e-3) ** torch.linspace(0.0, 1.0, DE // 2, dtype=torch.float64)
        x, time, dt = noise.clone(), 1.0, -1.0 / STEPS
        for _ in range(STEPS):
            ang = torch.full((B, 1), time, dtype=torch.float64) * (2 * math.pi / period)
            phi = torch.cat([ang.sin(), ang.cos()], -1).float()  # create_sinusoidal_pos_embedding
            cond = F.silu(lin(F.silu(lin(phi, f"{prefix}time_mlp_in")), f"{prefix}time_mlp_out"))
            out = joint([prefix_embs, lin(x, f"{prefix}action_in_proj")], [None, cond], att, pos)
            x = x + dt * lin(out[:, -H:], f"{prefix}action_out_proj")  # v = ε − A
            time += dt
    return x


# ---------------------------------------------------------------------------------------------- tests


def test_every_tensor_lands_where_expected(case):
    ref, tensors, converted, report, root = case
    assert isinstance(converted, Pi05Policy) and report.ok
    assert (report.layout, report.policy_class, report.fast_tokenizer) == ("lerobot", "pi05", "")
    assert report.dropped == [LR + "gemma_expert.lm_head.weight"]
    assert converted.config.to_dict() == expected_config().to_dict()
    assert converted.config.prompt == OPENPI_PROMPT and converted.fast_tokenizer is None
    ours, theirs = converted.state_dict(), ref.state_dict()
    assert set(ours) == set(theirs) and report.converted == len(ours)
    for k, v in theirs.items():  # the round trip through the published names is exact (time fold: 1e-6)
        torch.testing.assert_close(ours[k], v, rtol=0, atol=1e-6 if k == "time_mlp_in.weight" else 0)
    literal = {
        EX + "layers.0.input_layernorm.dense.weight": "transformer.expert.layers.0.attn_norm.modulation.weight",
        EX + "layers.1.input_layernorm.dense.bias": "transformer.expert.layers.1.attn_norm.modulation.bias",
        EX + "layers.1.post_attention_layernorm.dense.weight": "transformer.expert.layers.1.mlp_norm.modulation.weight",
        EX + "layers.0.post_attention_layernorm.dense.bias": "transformer.expert.layers.0.mlp_norm.modulation.bias",
        EX + "norm.dense.weight": "transformer.expert.final_norm.modulation.weight",
        EX + "norm.dense.bias": "transformer.expert.final_norm.modulation.bias",
        EX + "layers.0.self_attn.q_proj.weight": "transformer.expert.layers.0.attn.q_proj.weight",
        LR + "paligemma.model.language_model.layers.1.input_layernorm.weight": "transformer.backbone.layers.1.attn_norm.weight",
        "model.action_in_proj.weight": "action_in_proj.weight",
        "model.time_mlp_in.bias": "time_mlp_in.bias",
        "model.time_mlp_out.weight": "time_mlp_out.weight",
        "model.time_mlp_out.bias": "time_mlp_out.bias",
    }  # fmt: skip
    for published, name in literal.items():
        assert torch.equal(ours[name], tensors[published]), published
    assert tensors[EX + "layers.0.input_layernorm.dense.weight"].shape == (
        3 * DE,
        DE,
    )  # cond -> scale|shift|gate
    assert not any(k.startswith("model.state_proj") or "action_time_mlp" in k for k in tensors)
    assert torch.equal(ours["action_out_proj.bias"], -tensors["model.action_out_proj.bias"])
    # time_mlp_in reads φ alone: every column is re-expressed for τ = 1 − t (an involution)
    folded = flip_time_columns(tensors["model.time_mlp_in.weight"], DE, 4e-3, 4.0, first=0)
    torch.testing.assert_close(ours["time_mlp_in.weight"], folded, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        flip_time_columns(folded, DE, 4e-3, 4.0, first=0), tensors["model.time_mlp_in.weight"]
    )
    meta = json.loads((root / "out" / "config.json").read_text())
    assert meta["policy_class"] == "pi05" and meta["fast_tokenizer"] is None
    assert not (root / "out" / "fast").exists()
    saved = json.loads((root / "out" / REPORT_FILE).read_text())
    assert saved["policy_class"] == "pi05" and any("no FAST tokenizer" in n for n in saved["notes"])
    # the converter's inverse gives the file back (the round trip the other way)
    again = export_state_dict(ours, converted.config, layout="lerobot")
    assert set(again) == set(tensors) - {LR + "gemma_expert.lm_head.weight"}
    for k, v in again.items():
        torch.testing.assert_close(v, tensors[k], rtol=0, atol=1e-6 if k == "model.time_mlp_in.weight" else 0)


def test_actions_equal_the_reference_model_and_openpi_sampling(case):
    ref, tensors, converted, _, root = case
    b = batch()
    noise = torch.randn(2, H, MAXD, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = converted.sample_actions(b, noise=noise)
        torch.testing.assert_close(ours, ref.sample_actions(b, noise=noise), rtol=0, atol=1e-5)
        torch.testing.assert_close(
            ours, converted.sample_actions(b, noise=noise, use_cache=False), rtol=0, atol=1e-5
        )
        theirs = openpi_pi05_sample(converted, tensors, "model.", root / "tokenizer", b, noise)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert not torch.allclose(ours, noise, atol=1e-2)  # the network moved the actions
    # predict: robot units, no FAST tokenizer needed
    img = np.full((IMG, IMG, 3), 90, np.uint8)
    chunk = converted.predict(
        Observation({c: img for c in CAMS}, np.array([0.2, 0.5, -1.0], np.float32), TASKS[0])
    )
    assert chunk.actions.shape == (H, A) and np.isfinite(chunk.actions).all()


def test_adarms_rows_are_not_permuted(case):
    """A converter that permuted (scale, shift, gate) would change the actions: the reference tells."""
    ref, tensors, converted, _, root = case
    b = batch()
    noise = torch.randn(2, H, MAXD, generator=torch.Generator().manual_seed(7))
    swapped = dict(tensors)
    for k in [k for k in tensors if k.endswith(".dense.weight") or k.endswith(".dense.bias")]:
        scale, shift, gate = tensors[k].chunk(3, 0)
        swapped[k] = torch.cat([shift, scale, gate], 0)
    with torch.no_grad():
        ours = converted.sample_actions(b, noise=noise)
        wrong = openpi_pi05_sample(converted, swapped, "model.", root / "tokenizer", b, noise)
    assert (ours - wrong).abs().max() > 1e-2


def test_openpi_layout_defaults_and_assets(tmp_path):
    tok = tokenizer_dir(tmp_path / "tok")
    ref = reference_policy(tok)
    tensors = write_openpi(tmp_path / "src", ref)
    assert (
        "paligemma_with_expert.gemma_expert.model.norm.dense.weight" in tensors
        and "time_mlp_in.weight" in tensors
    )
    report = convert_pi0(
        tmp_path / "src", tmp_path / "out", tokenizer=tok, state_dim=S, action_dim=A, frame_size=(IMG, IMG),
        cameras=list(CAMS), variants=VARIANTS, vision=VISION,
    )  # fmt: skip
    assert (report.layout, report.policy_class) == ("openpi", "pi05")
    assert report.statistics == "openpi assets/droid/norm_stats.json"
    converted = Policy.load(tmp_path / "out")
    # openpi's config.json has neither the step count nor the token budget: openpi's pi05 defaults
    assert (converted.config.steps, converted.config.text_max_len) == (10, 199)
    assert converted.normalizer.features[STATE_KEY].mode == "quantile"
    b = batch()
    noise = torch.randn(2, H, MAXD, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        ours = converted.sample_actions(b, noise=noise, steps=STEPS)
        torch.testing.assert_close(ours, ref.sample_actions(b, noise=noise), rtol=0, atol=1e-5)
        theirs = openpi_pi05_sample(converted, tensors, "", tmp_path / "tok", b, noise)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_missing_unexpected_and_wrong_shape_are_named_in_one_error(tmp_path):
    tok = tokenizer_dir(tmp_path / "tok")
    src = tmp_path / "src"
    tensors = write_lerobot(src, reference_policy(tok))
    del tensors[EX + "layers.1.post_attention_layernorm.dense.bias"]
    del tensors["model.time_mlp_out.weight"]
    tensors[EX + "norm.dense.weight"] = torch.zeros(2 * DE, DE)  # scale and shift only: not π0.5's layout
    tensors[EX + "layers.0.input_layernorm.weight"] = torch.zeros(DE)  # a plain (π0) expert norm
    tensors["model.state_proj.weight"] = torch.zeros(DE, MAXD)  # π0's state token
    save_weights(src, tensors)
    with pytest.raises(Pi0ConversionError, match="the lerobot π0.5 checkpoint does not match the pi05") as e:
        convert_pi0(src, tmp_path / "out", tokenizer=tok, variants=VARIANTS, vision=VISION)
    err = e.value
    assert err.missing == [EX + "layers.1.post_attention_layernorm.dense.bias", "model.time_mlp_out.weight"]
    assert err.mismatched == [
        f"{EX}norm.dense.weight: file has [{2 * DE}, {DE}], "
        f"transformer.expert.final_norm.modulation.weight needs [{3 * DE}, {DE}]"
    ]
    assert [u.split()[0] for u in err.unexpected] == [
        EX + "layers.0.input_layernorm.weight",
        "model.state_proj.weight",
    ]
    for name in (*err.missing, EX + "norm.dense.weight", "model.state_proj.weight"):
        assert name in str(err)
    assert not (tmp_path / "out").exists()  # nothing written on failure


def test_config_type_must_agree_with_the_weights(tmp_path):
    tok = tokenizer_dir(tmp_path / "tok")
    src = tmp_path / "src"
    write_lerobot(src, reference_policy(tok), config=lerobot_config(type="pi0"))
    with pytest.raises(CheckpointError, match="type 'pi0', but the weights are a π0.5 checkpoint"):
        convert_pi0(src, tmp_path / "a", tokenizer=tok, variants=VARIANTS, vision=VISION)
    (src / "config.json").write_text(json.dumps(lerobot_config()))
    for name in ("config.json", "policy_preprocessor.json"):  # both say how the state is normalized
        (src / name).write_text(
            (src / name).read_text().replace('"STATE": "QUANTILES"', '"STATE": "MEAN_STD"')
        )
    with pytest.raises(CheckpointError, match="valid vlaforge π0.5 policy.*quantile"):
        convert_pi0(src, tmp_path / "b", tokenizer=tok, variants=VARIANTS, vision=VISION)


def test_without_fast_tokenizer_training_refuses_and_attaching_one_fixes_it(case, tmp_path):
    _, _, converted, _, _ = case
    policy = Policy.load(case[4] / "out")  # a fresh copy: the module's `converted` stays as loaded
    assert policy.fast_tokenizer is None and converted.fast_tokenizer is None
    g = torch.Generator().manual_seed(2)
    train_batch = {**batch(), ACTION_KEY: torch.rand(2, H, A, generator=g) - 0.5}
    with pytest.raises(ValueError, match=r"no FAST tokenizer.*fit_fast_tokenizer.*--fast-tokenizer DIR"):
        policy.loss(train_batch)
    wrong = FastTokenizer.fit(np.zeros((20, H + 1, A)) + np.arange(H + 1)[:, None] * 0.1, vocab_size=260)
    with pytest.raises(ValueError, match="refit it"):
        policy.set_fast_tokenizer(wrong)
    assert policy.fast_tokenizer is None and policy.fast_first == VOCAB - 1 - 128 - 1024 + 1  # unchanged
    fast = fast_tokenizer()
    policy.set_fast_tokenizer(fast)
    assert policy.fast_last - policy.fast_first + 1 == fast.vocab_size and policy.action_prompt_ids
    loss, metrics = policy.loss(train_batch)
    assert torch.isfinite(loss) and metrics["fast_loss"] > 0 and metrics["flow_loss"] > 0
    # the prefix ends with "Action: ": the FAST postfix is FAST "|" only
    posts, kinds, _ = policy.postfixes(train_batch)
    assert all(p[-1] == policy.end_token_id and not set(p) & set(policy.action_prompt_ids) for p in posts)
    policy.save(tmp_path / "with_fast")
    again = Policy.load(tmp_path / "with_fast")
    assert again.fast_tokenizer is not None and again.fast_tokenizer.vocab_size == fast.vocab_size
    with torch.no_grad():  # the same FAST tokens and weights after the round trip: the same loss
        a = again.loss(train_batch, generator=torch.Generator().manual_seed(1))[0]
        b = policy.loss(train_batch, generator=torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_cli_fast_tokenizer_option(case, tmp_path, capsys):
    from vlaforge.cli import main as vlaforge_main

    root = case[4]
    fast = fast_tokenizer()
    fast.save(tmp_path / "fast")
    assert main([str(root / "src"), "--out", str(tmp_path / "x"), "--tokenizer", str(root / "tokenizer"),
                 "--fast-tokenizer", str(tmp_path / "nothing")]) == 1  # fmt: skip
    assert "--fast-tokenizer" in capsys.readouterr().err
    # The published sizes are the default: the tiny file does not fit them, and the error says so.
    args = [
        "convert-pi0",
        str(root / "src"),
        "--out",
        str(tmp_path / "y"),
        "--tokenizer",
        str(root / "tokenizer"),
    ]
    assert vlaforge_main([*args, "--fast-tokenizer", str(tmp_path / "fast")]) == 1
    assert "unknown Gemma variant 'tiny_vlm'" in capsys.readouterr().err
    report = convert_pi0(
        root / "src", tmp_path / "z", tokenizer=root / "tokenizer", fast_tokenizer=tmp_path / "fast",
        variants=VARIANTS, vision=VISION,
    )  # fmt: skip
    assert report.fast_tokenizer == str(tmp_path / "fast")
    policy = Policy.load(tmp_path / "z")
    assert isinstance(policy.fast_tokenizer, FastTokenizer) and (tmp_path / "z" / "fast").is_dir()
    assert policy.config.fast_scale == fast.scale


def test_fast_tokenizer_is_refused_for_pi0(tmp_path):
    """π0 keys (state_proj, a plain expert norm): --fast-tokenizer is an error before anything is read."""
    src = tmp_path / "src"
    src.mkdir()
    keys = [LR + "paligemma.model.language_model.layers.0.input_layernorm.weight",
            EX + "layers.0.input_layernorm.weight", "model.state_proj.weight"]  # fmt: skip
    save_weights(src, {k: torch.zeros(2) for k in keys})
    with pytest.raises(CheckpointError, match="π0 one, which has no FAST head"):
        convert_pi0(src, tmp_path / "out", fast_tokenizer=tmp_path, variants=VARIANTS, vision=VISION)


def test_published_sizes_give_the_published_pi05_shapes(tmp_path):
    """lerobot/pi05_base's config (gemma_2b + gemma_300m, 224 px, 32-dim padding, 200 tokens) -> the shapes
    of the published π0.5 tensors (built on the meta device, no weights)."""
    from vlaforge.convert.common import parameters_on_meta
    from vlaforge.convert.pi0 import SourceNames, checkpoint_spec, pi0_policy_config, plan_pi0

    cfg = lerobot_config(paligemma_variant="gemma_2b", action_expert_variant="gemma_300m", chunk_size=50)
    cfg |= {"max_state_dim": 32, "max_action_dim": 32, "image_resolution": [224, 224]}
    del cfg["tokenizer_max_length"]
    spec = checkpoint_spec(cfg, "lerobot", pi05=True)
    config = pi0_policy_config(
        spec, vocab_size=257152, cameras={c: [224, 224] for c in CAMS}, state_dim=S, action_dim=A, fps=15.0,
        state_norm="quantile", action_norm="quantile",
    )  # fmt: skip
    assert isinstance(config, Pi05Config) and config.text_max_len == 199 and config.fast_skip_tokens == 128
    with parameters_on_meta():
        policy = Pi05Policy(config, normalizer(), HFPromptTokenizer.from_file(tokenizer_dir(tmp_path)), None,
                            lm_on_meta=True)  # fmt: skip
    assert (policy.fast_first, policy.fast_last) == (256000, 257023)  # openpi's FAST ids on PaliGemma
    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    shapes = {
        r.source: r.shapes[0] for r in plan_pi0(expected, SourceNames.build("lerobot"), config).values()
    }
    published = {
        EX + "layers.17.input_layernorm.dense.weight": (3072, 1024),
        EX + "layers.17.input_layernorm.dense.bias": (3072,),
        EX + "layers.0.post_attention_layernorm.dense.weight": (3072, 1024),
        EX + "norm.dense.weight": (3072, 1024),
        EX + "layers.0.mlp.down_proj.weight": (1024, 4096),
        LR + "paligemma.model.language_model.layers.17.input_layernorm.weight": (2048,),
        "model.action_in_proj.weight": (1024, 32),
        "model.time_mlp_in.weight": (1024, 1024),
        "model.time_mlp_out.weight": (1024, 1024),
        "model.action_out_proj.weight": (32, 1024),
    }  # fmt: skip
    for name, shape in published.items():
        assert shapes[name] == shape, name
    assert not any("state_proj" in k or (k.startswith(EX) and k.endswith("layernorm.weight")) for k in shapes)
