"""Convert the released Hugging Face ``openvla/openvla-7b`` checkpoint into a vlaforge ``openvla`` policy.

Usage (after ``huggingface-cli download openvla/openvla-7b --local-dir /models/openvla-7b``)::

    python -m vlaforge.convert.openvla /models/openvla-7b runs/openvla-7b-bridge \\
        --unnorm-key bridge_orig

The source directory is read offline: ``config.json`` (prismatic's ``OpenVLAConfig``: ``text_config``,
``timm_model_ids``, ``image_sizes``, ``timm_override_act_layers``, ``pad_to_multiple_of``,
``n_action_bins``, ``norm_stats``; a fine-tune may keep the statistics in ``dataset_statistics.json``),
the safetensors shards (``model.safetensors.index.json`` + ``model-0000x-of-0000y.safetensors``, or
one ``model.safetensors``) and ``tokenizer.json``. The output is a policy directory that
``Policy.load`` / ``vlaforge eval`` / ``vlaforge serve`` read like any trained VLA run.

Key map (source -> ``VLAPolicy.state_dict()``)::

    language_model.model.* / language_model.lm_head.weight   lm.*  (models/lm/checkpoint.py hf_to_ours)
    projector.fc{1,2,3}.{weight,bias}                         projector.fc{1,2,3}.*  (same names)
    vision_backbone.featurizer.*        (timm DINOv2)         vision_tower.towers.dino.model.*   (HF Dinov2[WithRegisters]Model)
    vision_backbone.fused_featurizer.*  (timm SigLIP)         vision_tower.towers.siglip.model.* (HF SiglipVisionModel)

timm ViT -> transformers, per tower (``N`` = block index; the HF names are matched on their tail,
so both the transformers 4.x and 5.x spellings listed are accepted)::

    patch_embed.proj.{weight,bias}      DINOv2: embeddings.patch_embeddings.projection.*   SigLIP: embeddings.patch_embedding.*
    pos_embed (1, N_patches, D)         DINOv2: embeddings.position_embeddings (1, 1 + N_patches, D), see below
                                        SigLIP: embeddings.position_embedding.weight (N_patches, D)
    cls_token / reg_token               DINOv2: embeddings.cls_token / embeddings.register_tokens
    blocks.N.norm1 / norm2              DINOv2: encoder.layer.N.norm1 / norm2     SigLIP: encoder.layers.N.layer_norm1 / 2
    blocks.N.attn.qkv (3D, D) fused     DINOv2: attention.{q,k,v}_proj (5.x) or attention.attention.{query,key,value} (4.x)
                                        SigLIP: self_attn.{q,k,v}_proj   -- rows [0:D] = q, [D:2D] = k, [2D:3D] = v
    blocks.N.attn.proj                  DINOv2: attention.o_proj (5.x) or attention.output.dense (4.x)   SigLIP: self_attn.out_proj
    blocks.N.ls1/ls2.scale_factor       DINOv2: layer_scale1/2.lambda1  (timm's ``gamma``; the OpenVLA port renamed it
                                        ``scale_factor`` because transformers rewrites names containing "gamma";
                                        either spelling is read)
    blocks.N.mlp.fc1 / fc2              DINOv2: encoder.layer.N.mlp.fc1 / fc2     SigLIP: encoder.layers.N.mlp.fc1 / fc2
    norm                                DINOv2: layernorm                         SigLIP: post_layernorm

Assumptions (timm is not a vlaforge dependency, so the names are those of timm 0.9's
``VisionTransformer`` as instantiated by OpenVLA's ``PrismaticVisionBackbone``, not read from timm):

* timm's ``vit_large_patch14_reg4_dinov2`` uses ``no_embed_class=True``: its ``pos_embed`` has one row
  per patch and the CLS / register tokens get no position embedding. transformers' DINOv2 adds row 0
  of ``position_embeddings`` to the CLS token, so a zero row is prepended (exactly the timm sum). A
  ``pos_embed`` that already holds a class row (``1 + N_patches`` rows) is copied as is.
* OpenVLA builds the towers with ``img_size=224``, so the file's DINOv2 ``pos_embed`` is already at
  16 x 16 patches; the converted DINOv2 config says ``image_size=224`` and transformers does not
  interpolate (the ``openvla`` recipe's random-weight tower keeps DINOv2's native 518 px table).
* Activation: ``timm_override_act_layers`` null means timm's default exact-erf GELU in both towers, so
  the SigLIP config says ``hidden_act="gelu"`` (transformers' SigLIP default is the tanh approximation).
* Dropped on purpose (modules the policy does not build): the last block of each tower (features come
  from the second-to-last layer, as prismatic's ``get_intermediate_layers(n={depth - 2})``), and
  SigLIP's ``attn_pool.*`` (and any ``head.*`` / ``fc_norm.*``). They are listed in the report.
* Filled: DINOv2's ``mask_token`` (transformers-only, used for masked-image pre-training) is zeros.

Everything else is strict: every weight the policy has must come from the file with the right shape,
and every file tensor must be used or be one of the drops above; all problems are listed in one
:class:`OpenVLAConversionError`.

Statistics: ``norm_stats[unnorm_key]["action"]`` (``q01``, ``q99``, ``mask``; mask False = the
gripper, left unnormalized) become the policy's quantile action normalizer (clipped to [-1, 1]),
``["proprio"]`` its state normalizer (unused by OpenVLA, which reads no state). One ``unnorm_key`` is
converted per output directory; convert again for another dataset.

Numerics that follow the released HF port rather than the prismatic training code: the Llama config
is ``text_config`` filled with transformers' ``LlamaConfig`` defaults (``rms_norm_eps=1e-6``), exactly
what ``PrismaticForConditionalGeneration`` runs; action ids count back from
``text_config.vocab_size - pad_to_multiple_of`` (32000), as its ``predict_action``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.convert.arguments import OPENVLA_HELP, add_openvla_arguments
from vlaforge.convert.common import (
    CONFIG_FILE,
    DTYPES,
    REPORT_FILE,
    ConversionError,
    ConversionReport,
    Rule,
    listing,
    match_plan,
    parameters_on_meta,
    raise_if_invalid,
    read_planned,
    same,
    source_index,
)
from vlaforge.errors import CheckpointError
from vlaforge.models.lm.checkpoint import IGNORED_KEY_SUFFIXES, ours_to_hf, read_json
from vlaforge.models.lm.config import LMConfig
from vlaforge.models.prompt import TOKENIZER_FILE, HFPromptTokenizer
from vlaforge.policies.vla.config import VLAConfig
from vlaforge.policies.vla.policy import VLAPolicy
from vlaforge.policies.vla.recipes import VLA_RECIPES
from vlaforge.transforms.normalize import FeatureNorm, Normalizer
from vlaforge.types import ACTION_KEY, STATE_KEY

STATS_FILE = "dataset_statistics.json"  # fine-tuned OpenVLA checkpoints keep their statistics here
LM_PREFIX = "language_model."
PROJECTOR_PREFIX = "projector."
# prismatic's HF port: featurizer = timm_model_ids[0], fused_featurizer = timm_model_ids[1]
TIMM_PREFIXES = ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.")
# The LLM families DecoderLM computes (prismatic's llm_backbone_id -> HF model_type when text_config omits it).
_LLM_FAMILIES = {"llama2": "llama", "vicuna": "llama"}
# timm sub-modules that exist in the file but that our towers never build.
_UNBUILT_TIMM_MODULES = ("attn_pool.", "head.", "fc_norm.")


class OpenVLAConversionError(ConversionError):
    """The OpenVLA checkpoint does not match the policy it should become; lists every missing,
    unexpected and wrongly shaped tensor (also in ``missing`` / ``unexpected`` / ``mismatched``)."""


@dataclass
class OpenVLAConversionReport(ConversionReport):
    """:class:`~vlaforge.convert.common.ConversionReport` + the dataset whose statistics were converted."""

    unnorm_key: str = ""


# ------------------------------------------------------------------------------------- config / stats


def read_openvla_config(src: str | Path) -> dict[str, Any]:
    """The source ``config.json`` as a dict, checked to describe a fused DINOv2 + SigLIP OpenVLA."""
    file = Path(src) / CONFIG_FILE
    cfg = read_json(file, "pass the downloaded openvla/openvla-7b directory")
    for key in ("text_config", "timm_model_ids"):
        if key not in cfg:
            raise CheckpointError(
                f"{file}: no '{key}'; expected prismatic's OpenVLAConfig (the openvla/openvla-7b config.json)"
            )
    if not cfg.get("use_fused_vision_backbone", True) or len(cfg["timm_model_ids"]) != 2:
        raise CheckpointError(
            f"{file}: vision_backbone_id {cfg.get('vision_backbone_id')!r} with timm_model_ids "
            f"{cfg['timm_model_ids']}: only the fused two-tower (DINOv2 + SigLIP) OpenVLA is supported"
        )
    return cfg


def tower_kinds(cfg: dict[str, Any]) -> list[str]:
    """Our tower name for each timm model id, in file order (OpenVLA: ["dino", "siglip"])."""
    kinds = []
    for tid in cfg["timm_model_ids"]:
        t = str(tid).lower()
        kinds.append("dino" if "dinov2" in t else "siglip" if "siglip" in t else "")
    if sorted(kinds) != ["dino", "siglip"]:
        raise CheckpointError(
            f"timm_model_ids {cfg['timm_model_ids']}: expected one DINOv2 and one SigLIP tower "
            "(OpenVLA's 'dinosiglip-vit-so-224px')"
        )
    return kinds


def full_text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``text_config`` with transformers' config-class defaults filled in.

    The released file stores only the fields that differ from ``LlamaConfig()`` (e.g. just
    ``vocab_size: 32064``); the HF port builds its Llama from exactly that, so we do too.
    """
    import transformers

    text = dict(cfg["text_config"])
    if "model_type" not in text:
        llm = str(cfg.get("llm_backbone_id", ""))
        family = next((v for k, v in _LLM_FAMILIES.items() if llm.startswith(k)), None)
        if family is None:
            raise CheckpointError(
                f"text_config has no model_type and llm_backbone_id {llm!r} is not a Llama-2 / Vicuna "
                "backbone; only Llama-family OpenVLA checkpoints are supported"
            )
        text["model_type"] = family
    if text["model_type"] != "llama":
        raise CheckpointError(
            f"text_config.model_type is {text['model_type']!r}; the OpenVLA converter supports Llama backbones"
        )
    return transformers.AutoConfig.for_model(**text).to_dict()


def read_norm_stats(src: str | Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """``config.json``'s ``norm_stats``, or ``dataset_statistics.json`` (fine-tuned checkpoints)."""
    stats = cfg.get("norm_stats")
    if stats:
        return stats
    file = Path(src) / STATS_FILE
    if file.is_file():
        return read_json(file, "")
    raise CheckpointError(
        f"{Path(src)}: no 'norm_stats' in {CONFIG_FILE} and no {STATS_FILE}; the action statistics are "
        "needed to un-normalize the actions"
    )


def select_unnorm_key(norm_stats: dict[str, Any], unnorm_key: str | None) -> str:
    """The dataset whose statistics are converted; errors list the available keys."""
    keys = sorted(norm_stats)
    if unnorm_key is None:
        if len(keys) == 1:
            return keys[0]
        raise CheckpointError(
            f"the checkpoint has statistics for {len(keys)} datasets; choose one with --unnorm-key "
            f"(unnorm_key=...). Available: {keys}"
        )
    if unnorm_key not in norm_stats:
        raise CheckpointError(
            f"unnorm_key {unnorm_key!r} is not in the checkpoint's norm_stats. Available: {keys}"
        )
    return unnorm_key


def openvla_normalizer(entry: dict[str, Any], unnorm_key: str) -> tuple[Normalizer, int, int, list[int]]:
    """``norm_stats[unnorm_key]`` -> (normalizer, action_dim, state_dim, unnormalized action dims).

    Quantile (q01/q99) mode, clipped, mask False = left unnormalized, as OpenVLA's ``predict_action``
    (its default mask when absent: every dimension normalized).
    """
    feats: dict[str, FeatureNorm] = {}
    dims: dict[str, int] = {}
    for ours, theirs in ((ACTION_KEY, "action"), (STATE_KEY, "proprio")):
        raw = entry.get(theirs)
        if not isinstance(raw, dict) or "q01" not in raw or "q99" not in raw:
            raise CheckpointError(
                f"norm_stats[{unnorm_key!r}][{theirs!r}] needs 'q01' and 'q99' (has "
                f"{sorted(raw) if isinstance(raw, dict) else raw!r})"
            )
        stats = {k: np.asarray(v, np.float32) for k, v in raw.items() if k != "mask"}
        dim = int(stats["q01"].reshape(-1).shape[0])
        mask = np.asarray(raw.get("mask", np.ones(dim, bool)), dtype=bool).reshape(-1)
        if mask.shape[0] != dim:
            raise CheckpointError(
                f"norm_stats[{unnorm_key!r}][{theirs!r}]: mask has {mask.shape[0]} entries, q01 has {dim}"
            )
        try:
            feats[ours] = FeatureNorm("quantile", stats, mask, clip=True)
        except ValueError as e:
            raise CheckpointError(f"norm_stats[{unnorm_key!r}][{theirs!r}]: {e}") from e
        dims[ours] = dim
    unnormalized = [int(i) for i in np.flatnonzero(~feats[ACTION_KEY].mask)]  # type: ignore[operator]
    return Normalizer(feats), dims[ACTION_KEY], dims[STATE_KEY], unnormalized


def openvla_vision_spec(
    cfg: dict[str, Any], vision: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """VLAConfig.vision for the checkpoint: the ``openvla`` recipe's towers (or ``vision``), adjusted
    to what the file holds: DINOv2's position table at the run resolution, timm's activation."""
    base = vision if vision is not None else VLA_RECIPES["openvla"].model["vision"]
    spec = json.loads(json.dumps(base))  # deep copy
    kinds = tower_kinds(cfg)
    missing = [k for k in kinds if k not in spec]
    if missing:
        raise ValueError(f"vision spec has no tower(s) {missing} (has {sorted(spec)})")
    sizes = cfg.get("image_sizes") or [None, None]
    acts = cfg.get("timm_override_act_layers") or [None, None]
    ordered = {}
    for kind, size, act in zip(kinds, sizes, acts, strict=True):
        s = spec[kind]
        run_size = int(s.get("image_size") or s["hf"]["image_size"])
        if size is not None and int(size) != run_size:
            raise CheckpointError(
                f"config.json image_sizes gives {size} px for the {kind} tower, the vlaforge tower runs at "
                f"{run_size} px"
            )
        s["hf"]["image_size"] = run_size  # the file's position table is at the run resolution (timm img_size)
        s["image_size"] = run_size
        s["hf"]["hidden_act"] = "gelu" if act is None else str(act)  # timm default: exact GELU
        s["hf"]["layer_norm_eps"] = 1e-6  # timm ViT's LayerNorm eps
        ordered[kind] = s
    return {k: ordered[k] for k in ("dino", "siglip")}  # fused order: DINOv2 channels first, as prismatic


def openvla_policy_config(
    cfg: dict[str, Any],
    *,
    action_dim: int,
    state_dim: int,
    unnormalized_action_dims: list[int],
    camera: str = "image",
    frame_size: tuple[int, int] = (224, 224),
    fps: float = 10.0,
    vision: dict[str, dict[str, Any]] | None = None,
) -> VLAConfig:
    """The VLAConfig of the converted policy: the ``openvla`` recipe with the file's shapes."""
    text = full_text_config(cfg)
    lm = LMConfig.from_hf_config(text)
    pad_multiple = int(cfg.get("pad_to_multiple_of", 0) or 0)
    model = dict(VLA_RECIPES["openvla"].model)
    model.update(
        lm=dataclasses.asdict(lm),
        vision=openvla_vision_spec(cfg, vision),
        action_vocab_size=lm.vocab_size - pad_multiple,
        n_bins=int(cfg.get("n_action_bins", 256)),
    )
    return VLAConfig(
        recipe="openvla",
        cameras={camera: [int(frame_size[0]), int(frame_size[1])]},
        state_dim=state_dim,
        action_dim=action_dim,
        fps=float(fps),
        unnormalized_action_dims=unnormalized_action_dims,
        **model,
    )


# ----------------------------------------------------------------------------------------- key plan


def _qkv_rule(src: str, j: int, shape: tuple[int, ...]) -> Rule:
    """q (j=0), k (1) or v (2) out of timm's fused qkv: rows [j*D, (j+1)*D) of (3D, D) / (3D,)."""
    d = shape[0]
    return Rule(src, ((3 * d, *shape[1:]),), lambda x: x[j * d : (j + 1) * d])


def _vit_rule(kind: str, tail: str, shape: tuple[int, ...], p: str) -> Rule | None:
    """timm source for one transformers tower tensor (``tail``: its name inside the HF model)."""
    wb = r"(weight|bias)$"
    qkv = {"q": 0, "k": 1, "v": 2, "query": 0, "key": 1, "value": 2}
    if kind == "siglip":
        if m := re.search(r"embeddings\.patch_embedding\." + wb, tail):
            return Rule(f"{p}patch_embed.proj.{m[1]}", (shape,), same)
        if re.search(r"embeddings\.position_embedding\.weight$", tail):
            return Rule(f"{p}pos_embed", ((1, *shape),), lambda x: x[0])
        if m := re.search(r"encoder\.layers\.(\d+)\.layer_norm([12])\." + wb, tail):
            return Rule(f"{p}blocks.{m[1]}.norm{m[2]}.{m[3]}", (shape,), same)
        if m := re.search(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\." + wb, tail):
            return _qkv_rule(f"{p}blocks.{m[1]}.attn.qkv.{m[3]}", qkv[m[2]], shape)
        if m := re.search(r"encoder\.layers\.(\d+)\.self_attn\.out_proj\." + wb, tail):
            return Rule(f"{p}blocks.{m[1]}.attn.proj.{m[2]}", (shape,), same)
        if m := re.search(r"encoder\.layers\.(\d+)\.mlp\.(fc[12])\." + wb, tail):
            return Rule(f"{p}blocks.{m[1]}.mlp.{m[2]}.{m[3]}", (shape,), same)
        if m := re.search(r"post_layernorm\." + wb, tail):
            return Rule(f"{p}norm.{m[1]}", (shape,), same)
        return None
    # DINOv2 (with or without registers)
    if re.search(r"embeddings\.cls_token$", tail):
        return Rule(f"{p}cls_token", (shape,), same)
    if re.search(r"embeddings\.register_tokens$", tail):
        return Rule(f"{p}reg_token", (shape,), same)
    if re.search(r"embeddings\.mask_token$", tail):
        return Rule(None, (shape,), same)
    if re.search(r"embeddings\.position_embeddings$", tail):
        # (1, 1 + N, D) from timm's (1, N, D) (no_embed_class: zero class row) or (1, 1 + N, D).
        no_cls = (shape[0], shape[1] - 1, *shape[2:])

        def pos(x: torch.Tensor) -> torch.Tensor:
            return x if x.shape[1] == shape[1] else torch.cat([x.new_zeros(x.shape[0], 1, x.shape[2]), x], 1)

        return Rule(f"{p}pos_embed", (no_cls, shape), pos)
    if m := re.search(r"embeddings\.patch_embeddings\.projection\." + wb, tail):
        return Rule(f"{p}patch_embed.proj.{m[1]}", (shape,), same)
    if m := re.search(r"encoder\.layer\.(\d+)\.norm([12])\." + wb, tail):
        return Rule(f"{p}blocks.{m[1]}.norm{m[2]}.{m[3]}", (shape,), same)
    if m := re.search(
        r"encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(q|k|v|query|key|value)(?:_proj)?\." + wb, tail
    ):
        return _qkv_rule(f"{p}blocks.{m[1]}.attn.qkv.{m[3]}", qkv[m[2]], shape)
    if m := re.search(r"encoder\.layer\.(\d+)\.attention\.(?:o_proj|output\.dense)\." + wb, tail):
        return Rule(f"{p}blocks.{m[1]}.attn.proj.{m[2]}", (shape,), same)
    if m := re.search(r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", tail):
        return Rule(
            f"{p}blocks.{m[1]}.ls{m[2]}.scale_factor", (shape,), same, (f"{p}blocks.{m[1]}.ls{m[2]}.gamma",)
        )
    if m := re.search(r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\." + wb, tail):
        return Rule(f"{p}blocks.{m[1]}.mlp.{m[2]}.{m[3]}", (shape,), same)
    if m := re.search(r"(?:^|\.)layernorm\." + wb, tail):
        return Rule(f"{p}norm.{m[1]}", (shape,), same)
    return None


def plan_conversion(expected: dict[str, tuple[int, ...]], prefixes: dict[str, str]) -> dict[str, Rule]:
    """A :class:`Rule` for every policy tensor (``expected``: policy key -> shape).

    prefixes: our tower name -> its timm prefix in the file (e.g. ``{"dino": "vision_backbone.featurizer."}``).
    A policy tensor no rule knows is a bug in the map (or a policy part OpenVLA has no weights for): error.
    """
    plan: dict[str, Rule] = {}
    unknown = []
    for key, shape in expected.items():
        rule: Rule | None = None
        if key.startswith("lm."):
            rule = Rule(LM_PREFIX + ours_to_hf(key[3:]), (shape,), same)
        elif key.startswith("projector."):
            rule = Rule(key, (shape,), same)
        elif m := re.match(r"vision_tower\.towers\.(\w+)\.model\.(.+)$", key):
            if m[1] in prefixes:
                rule = _vit_rule(m[1], m[2], shape, prefixes[m[1]])
        if rule is None:
            unknown.append(key)
        else:
            plan[key] = rule
    if unknown:
        raise OpenVLAConversionError(
            f"the openvla policy has {len(unknown)} tensor(s) the OpenVLA key map does not cover:{listing(unknown)}"
        )
    return plan


def _dropped(key: str, prefixes: dict[str, str], built: dict[str, int], depth: dict[str, int]) -> bool:
    """Source tensors of modules the policy does not build (see the module docstring)."""
    if key.startswith(LM_PREFIX) and key.endswith(IGNORED_KEY_SUFFIXES):
        return True
    for name, p in prefixes.items():
        if not key.startswith(p):
            continue
        rest = key[len(p) :]
        if rest.startswith(_UNBUILT_TIMM_MODULES):
            return True
        m = re.match(r"blocks\.(\d+)\.", rest)
        return bool(m) and built[name] <= int(m[1]) < depth[name]
    return False


# ---------------------------------------------------------------------------------------- conversion


def convert_openvla(
    src: str | Path,
    out: str | Path,
    *,
    unnorm_key: str | None = None,
    camera: str = "image",
    frame_size: tuple[int, int] = (224, 224),
    fps: float = 10.0,
    dtype: torch.dtype | None = None,
    vision: dict[str, dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> OpenVLAConversionReport:
    """Convert a local ``openvla/openvla-7b``-layout directory into a vlaforge policy directory.

    unnorm_key: the dataset whose action statistics the policy uses (required when there are several).
    camera / frame_size: the policy's camera name and the (H, W) of the frames it will be given (they
        are resized to the towers' 224 px, as OpenVLA's processor does).
    dtype: cast the weights (default: as stored, bfloat16 for the released file).
    vision: VLAConfig.vision override for other tower sizes (tests use tiny towers); default: the
        ``openvla`` recipe's DINOv2-L/14-reg4 + SigLIP-So400m/14 at 224 px.
    Returns the :class:`OpenVLAConversionReport` (also written as ``conversion.json``); raises
    :class:`OpenVLAConversionError` listing every problem when the file does not match.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory; download openvla/openvla-7b there first")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory or pass --overwrite")
    cfg = read_openvla_config(src)
    stats = read_norm_stats(src, cfg)
    key = select_unnorm_key(stats, unnorm_key)
    normalizer, action_dim, state_dim, unnormalized = openvla_normalizer(stats[key], key)
    config = openvla_policy_config(
        cfg,
        action_dim=action_dim,
        state_dim=state_dim,
        unnormalized_action_dims=unnormalized,
        camera=camera,
        frame_size=frame_size,
        fps=fps,
        vision=vision,
    )
    if not (src / TOKENIZER_FILE).is_file():
        hint = " (only tokenizer.model is there: tokenizer.json is part of the openvla/openvla-7b download)"
        raise CheckpointError(
            f"{src / TOKENIZER_FILE}: not found{hint if (src / 'tokenizer.model').is_file() else ''}"
        )
    tokenizer = HFPromptTokenizer.from_file(src)

    # Shapes only: the policy's parameters live on the meta device (no 7B random init); it is used to save.
    with parameters_on_meta():
        policy = VLAPolicy(config, normalizer, tokenizer, lm_on_meta=True)
    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    kinds = tower_kinds(cfg)
    prefixes = dict(zip(kinds, TIMM_PREFIXES, strict=True))
    depth = {k: int(config.vision[k]["hf"]["num_hidden_layers"]) for k in kinds}
    built = {
        k: depth[k] + 1 + fl if (fl := config.vision[k].get("feature_layer", -2)) is not None else depth[k]
        for k in kinds
    }
    plan = plan_conversion(expected, prefixes)

    index, shapes = source_index(src)
    report = OpenVLAConversionReport(source=str(src), output=str(out), unnorm_key=key)
    found = match_plan(
        plan, index, shapes, report, dropped=lambda name: _dropped(name, prefixes, built, depth)
    )
    raise_if_invalid(
        report,
        f"{src}: the OpenVLA checkpoint does not match the openvla policy it describes",
        OpenVLAConversionError,
    )
    weights = read_planned(plan, found, index, expected, dtype)
    report.converted = len(weights)
    policy.save(out, state_dict=weights)
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlaforge.convert.openvla", description=OPENVLA_HELP)
    add_openvla_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Convert as the parsed command line says; errors are printed (no traceback), exit status 1."""
    try:
        report = convert_openvla(
            args.src,
            args.out,
            unnorm_key=args.unnorm_key,
            camera=args.camera,
            frame_size=tuple(args.frame_size),
            fps=args.fps,
            dtype=None if args.dtype is None else DTYPES[args.dtype],
            overwrite=args.overwrite,
        )
    except (CheckpointError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {report.output}: {report.converted} tensors, statistics '{report.unnorm_key}', "
        f"{len(report.dropped)} unused source tensors dropped (last ViT blocks, SigLIP attn_pool), "
        f"{len(report.filled)} filled (DINOv2 mask_token); details in {REPORT_FILE}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
