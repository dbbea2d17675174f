"""Import published π0 and π0.5 PyTorch checkpoints (LeRobot's and openpi's layouts) as vlaforge ``pi0`` /
``pi05`` policies.

Usage (after ``huggingface-cli download lerobot/pi0_base --local-dir /models/pi0_base``)::

    vlaforge convert-pi0 /models/pi0_base --out runs/pi0-base --tokenizer /models/paligemma-tokenizer \\
        --stats /data/my_dataset
    vlaforge convert-pi0 /models/pi05_base --out runs/pi05-base --tokenizer /models/paligemma-tokenizer \\
        --stats /data/my_dataset [--fast-tokenizer runs/fast]     # π0.5: told by the weights' keys
    # same options: python -m vlaforge.convert.pi0 SRC --out DIR ...

The source directory is read offline: ``config.json``, ``model.safetensors`` (or
``model.safetensors.index.json`` + shards) and, where the checkpoint has them, its normalization
statistics. The output is a policy directory that ``Policy.load`` / ``vlaforge eval`` / ``vlaforge
serve`` read like any trained π0 / π0.5 run (``policy_class: "pi0"`` / ``"pi05"``), plus ``conversion.json``.

Layouts (``--layout auto`` tells them apart by the key prefix)
--------------------------------------------------------------

* **lerobot**: ``PI0Policy.state_dict()`` of LeRobot: the openpi-style ``PI0Pytorch`` module under
  ``model.`` (LeRobot >= 0.4, e.g. ``lerobot/pi0_base``), or the older ``PI0FlowMatching`` (same
  sub-module names, e.g. the first ``lerobot/pi0``) whose file also holds the normalization buffers.
  ``config.json`` is LeRobot's ``PI0Config`` (``type: "pi0"``, ``chunk_size``, ``max_state_dim``,
  ``max_action_dim``, ``num_inference_steps`` / ``num_steps``, ``tokenizer_max_length``,
  ``image_resolution`` / ``resize_imgs_with_padding``, ``input_features``, ``output_features``,
  ``normalization_mapping``, ``paligemma_variant`` / ``action_expert_variant``); π0.5: ``PI05Policy``
  (``lerobot/pi05_base``), config ``type: "pi05"`` with the same fields.
* **openpi**: ``PI0Pytorch.state_dict()`` as written by openpi's
  ``examples/convert_jax_model_to_pytorch.py`` (no prefix); its ``config.json`` holds
  ``action_dim`` (the padded size, 32), ``action_horizon``, ``paligemma_variant``,
  ``action_expert_variant``, ``precision`` (π0 and π0.5 alike: only the keys tell them apart);
  statistics are in ``assets/<asset_id>/norm_stats.json``.

Key map (source without the layout prefix -> ``Pi0Policy.state_dict()``); ``PG`` =
``paligemma_with_expert.paligemma.``, ``EX`` = ``paligemma_with_expert.gemma_expert.``. PaliGemma's
own spelling depends on the transformers version that wrote the file and both are read:
``PG.model.language_model.`` / ``PG.model.vision_tower.`` / ``PG.model.multi_modal_projector.`` /
``PG.lm_head`` (transformers >= 4.52, openpi and LeRobot >= 0.4) or ``PG.language_model.model.`` /
``PG.vision_tower.`` / ``PG.multi_modal_projector.`` / ``PG.language_model.lm_head`` (older)::

    PG.model.language_model.embed_tokens.weight           transformer.backbone.embed_tokens.weight
        (or the tied PG.lm_head.weight when the file kept only that copy; both: the embeddings, a
        head of other values is noted: LeRobot >= 0.6 leaves it untied and untrained)
    PG.model.language_model.layers.N.input_layernorm        transformer.backbone.layers.N.attn_norm
    PG.model.language_model.layers.N.self_attn.{q,k,v,o}_proj  transformer.backbone.layers.N.attn.{q,k,v,o}_proj
    PG.model.language_model.layers.N.post_attention_layernorm  transformer.backbone.layers.N.mlp_norm
    PG.model.language_model.layers.N.mlp.{gate,up,down}_proj  transformer.backbone.layers.N.mlp.{gate,up,down}_proj
    PG.model.language_model.norm.weight                    transformer.backbone.final_norm.weight
    EX.model.layers.N.* / EX.model.norm.weight             transformer.expert.layers.N.* / transformer.expert.final_norm.weight
    PG.model.vision_tower.vision_model.*                   vision_tower.model.*   (HF SigLIP; the
        ``vision_model.`` level is optional on both sides: transformers 5 dropped it)
    PG.model.multi_modal_projector.linear.{weight,bias}    projector.linear.{weight,bias}
    state_proj / action_in_proj / action_time_mlp_out      the same names
    action_time_mlp_in.{weight,bias}                       the same names, time columns re-expressed (below)
    action_out_proj.{weight,bias}                          the same names, negated (below)
    π0.5 (``PI0Pytorch(pi05=True)``): no state_proj, and
    time_mlp_in.{weight,bias}                              the same names, every column re-expressed (below)
    time_mlp_out.{weight,bias}                             the same names
    EX.model.layers.N.input_layernorm.dense.{weight,bias}  transformer.expert.layers.N.attn_norm.modulation.*
    EX.model.layers.N.post_attention_layernorm.dense.*     transformer.expert.layers.N.mlp_norm.modulation.*
    EX.model.norm.dense.{weight,bias}                      transformer.expert.final_norm.modulation.*
        (adaptive RMSNorm: a Linear cond (expert width) -> 3·width, rows copied unpermuted, see below)
    dropped: EX.lm_head.weight (GemmaForCausalLM's head; the expert has no vocabulary, never used),
        ``*.rotary_emb.inv_freq``, ``*.embeddings.position_ids``, SigLIP ``head.*``, and the old LeRobot
        ``normalize_inputs.*`` / ``normalize_targets.*`` / ``unnormalize_outputs.*`` buffers (read
        as statistics)

Every name is checked strictly: each policy tensor must be found with its shape and each file tensor
must be used or be one of the drops; all problems come in one :class:`Pi0ConversionError`.

Numerics
--------

Both Gemmas use the ``(1 + w)`` RMSNorm gain, tanh-GELU, RoPE in the ``rotate_half`` layout and the
``sqrt(width)`` scale on token (not image) embeddings, exactly as ``DecoderLM`` computes, so their
weights are copied unchanged. The flow-matching convention differs: openpi and LeRobot integrate
from ``t = 1`` (noise) to ``t = 0`` and predict ``u = ε - A``; vlaforge uses ``τ = 1 - t`` and
``u = A - ε`` (docs/recipes.md). Two linear facts make the weights carry the difference, with no
code change in the policy:

* the velocity sign: ``action_out_proj`` is negated;
* the time features: ``φ(t)`` has pairs ``sin(ω t), cos(ω t)`` (``ω = 2π / period``); with
  ``t = 1 - τ``, ``sin(ω t) = sin ω cos(ω τ) - cos ω sin(ω τ)`` and ``cos(ω t) = cos ω cos(ω τ) +
  sin ω sin(ω τ)``, so the columns of ``action_time_mlp_in`` that read ``φ`` are mixed per frequency
  by ``[[-cos ω, sin ω], [sin ω, cos ω]]`` (computed in float64). π0.5's ``time_mlp_in`` reads φ alone
  (it feeds ``swish(time_mlp_out(swish(·)))``, the adaRMS condition), so all its columns are mixed so.

Both maps are involutions, so :func:`export_state_dict` (vlaforge -> published names, used by the
tests to build synthetic checkpoints) applies the very same rules. The Euler steps then evaluate the
network at the same points (``t = 1, 0.9, ..., 0.1``) as the reference sampler.

π0.5's adaptive RMSNorm is the same function on both sides: openpi's ``GemmaRMSNorm(cond_dim)``
(``transformers_replace``; JAX ``gemma.RMSNorm``) splits ``dense(cond)`` into ``scale, shift, gate`` (that
order, ``torch.chunk`` / ``jnp.split`` on the last axis), returns ``x̂·(1 + scale) + shift`` and ``gate``, and
the layer adds ``x + gate·f(…)``; :class:`~vlaforge.policies.pi0.expert.AdaRMSNorm` chunks its ``modulation``
the same way with the same formula (and the final norm's gate is unused on both sides). The rows are
copied unchanged; the tests check it against an adaRMS written from openpi's formula.

π0.5 prompt and FAST head: openpi and LeRobot write ``"Task: {task}, State: {bins};\\nAction: "`` (BOS
first, the task's ``_`` / newlines -> spaces, case kept, 200 tokens); the converted policy uses exactly that
(``Pi05Config.prompt = OPENPI_PROMPT``, ``text_max_len`` 199 + BOS). vlaforge's ``Pi05Policy`` also has a FAST
head (cross-entropy through the backbone's ``lm_head``, no weights of its own, FAST ids below PaliGemma's
last 128 ids as openpi's π0-FAST); it needs a FAST tokenizer only to *train*, and published π0.5 checkpoints
ship none. The converted policy therefore has none (``"fast_tokenizer": null``: ``predict`` works, training
refuses with the fix) unless ``--fast-tokenizer DIR`` (a ``FastTokenizer.save`` directory, e.g.
``fit_fast_tokenizer`` on the dataset you will train on) attaches one.

Statistics (π0: mean/std on state and actions; π0.5: q01/q99, clipped): LeRobot >= 0.4 keeps them in
the processor files (``policy_preprocessor.json`` names the ``normalizer_processor`` state file, keys
``observation.state.mean`` ...), older LeRobot in the weights' normalization buffers, openpi in
``assets/<asset_id>/norm_stats.json`` (``state`` / ``actions``). Base checkpoints have none (or
``inf`` placeholders): pass ``--stats DATASET`` (its ``meta/stats.json``); ``--stats`` also replaces
a checkpoint's own statistics, e.g. for fine-tuning on another robot.

Camera frames: LeRobot 0.3 checkpoints (``resize_imgs_with_padding`` in config.json) get LeRobot 0.3's
own resize (aspect-preserving bilinear without antialiasing, black padding on the top and left:
``vision.siglip.resize = "pad-top-left"``), checked against LeRobot 0.3.2 in ``tests/peers``; openpi and
LeRobot >= 0.4 checkpoints (``image_resolution`` in config.json) get their ``resize_with_pad_torch`` (the
same fit, padding split between both sides, frames of the model's size unchanged:
``vision.siglip.resize = "pad-centre"``), checked against LeRobot 0.6.1's π0.5 in ``tests/peers``.

Not reproduced (listed in ``conversion.json``'s notes where they apply): for π0
openpi's prompt clean-up (``_`` -> space; the π0.5 prompt applies it), LeRobot's ``adapt_to_pi_aloha``
joint transforms, the ``1e-6`` (openpi) / ``1e-8`` (LeRobot) normalization epsilon (vlaforge: ``1e-8``
and a ``1e-3`` scale floor). π0.5 only: a state below q01 is bin 0 (openpi's ``np.digitize`` gives
-1), and some LeRobot versions zero-pad the state to ``max_state_dim`` before writing it (vlaforge and
openpi write the robot's dimensions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vlaforge.convert.arguments import PI0_HELP, add_pi0_arguments
from vlaforge.convert.common import (
    CONFIG_FILE,
    DTYPES,
    REPORT_FILE,
    ConversionError,
    ConversionReport,
    Rule,
    match_plan,
    parameters_on_meta,
    raise_if_invalid,
    read_planned,
    same,
    source_index,
)
from vlaforge.data.errors import DatasetError
from vlaforge.data.meta import load_meta
from vlaforge.errors import CheckpointError
from vlaforge.models.lm.checkpoint import IGNORED_KEY_SUFFIXES, ours_to_hf, read_json
from vlaforge.models.lm.config import LMConfig
from vlaforge.models.prompt import HFPromptTokenizer
from vlaforge.models.time_embedding import sincos_frequencies
from vlaforge.policies.lm_recipes import PALIGEMMA_LM, SIGLIP_SO400M
from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer
from vlaforge.policies.pi0.pi05_config import OPENPI_PROMPT, Pi05Config
from vlaforge.policies.pi0.pi05_policy import Pi05Policy
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.transforms.normalize import STAT_NAMES, FeatureNorm, Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

LAYOUTS = ("lerobot", "openpi")
LEROBOT_PREFIX = "model."  # LeRobot's PI0Policy keeps the π0 module as `self.model`
PWE = "paligemma_with_expert."
PREPROCESSOR_FILE = "policy_preprocessor.json"  # LeRobot >= 0.4 processor pipelines
POSTPROCESSOR_FILE = "policy_postprocessor.json"
NORMALIZER_STEPS = ("normalizer_processor", "unnormalizer_processor")
OLD_LEROBOT_BUFFERS = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's IMAGE_KEYS order
OPENPI_STATS = {STATE_KEY: "state", ACTION_KEY: "actions"}
LEROBOT_MODES = {
    "MEAN_STD": "mean_std",
    "MIN_MAX": "min_max",
    "QUANTILES": "quantile",
    "IDENTITY": "identity",
}
PROMPT = "{instruction}\n"  # openpi and LeRobot end the task text with a newline token
PALIGEMMA_BOS = 2
DEFAULT_TOKEN_LEN = 48  # openpi's max_token_len for π0 (BOS included)
DEFAULT_TOKEN_LEN_PI05 = 200  # ... and for π0.5 (LeRobot's PI05Config.tokenizer_max_length)
PI05_FAST_SKIP = 128  # openpi's FAST ids on PaliGemma: V - 1 - 128 - f (Pi05Config.fast_skip_tokens)
# π0.5's adaptive expert norms: ours (AdaRMSNorm.modulation) -> openpi's GemmaRMSNorm.dense
ADARMS_NAME = re.compile(r"^(layers\.\d+\.)?(attn_norm|mlp_norm|final_norm)\.modulation\.(weight|bias)$")
ADARMS_NORMS = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm", "final_norm": "norm"}
DEFAULT_IMAGE_SIZE = 224
_DROPPED_SUFFIXES = (*IGNORED_KEY_SUFFIXES, "embeddings.position_ids")


class Pi0ConversionError(ConversionError):
    """The π0 checkpoint does not match the policy it should become; lists every missing, unexpected
    and wrongly shaped tensor (also in ``missing`` / ``unexpected`` / ``mismatched``)."""


@dataclass
class Pi0ConversionReport(ConversionReport):
    """:class:`~vlaforge.convert.common.ConversionReport` + where the pieces came from."""

    layout: str = ""
    policy_class: str = ""  # "pi0" or "pi05" (told by the weights' keys)
    paligemma_keys: str = ""  # which transformers spelling of PaliGemma the file uses
    fast_tokenizer: str = ""  # π0.5: the FastTokenizer directory attached (--fast-tokenizer), "" = none
    statistics: str = ""  # where the normalization statistics came from
    notes: list[str] = field(default_factory=list)  # differences from the reference the user should know


# ----------------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class GemmaVariant:
    """openpi's ``gemma.get_config(variant)`` shapes (LeRobot copies the same table)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


GEMMA_VARIANTS: dict[str, GemmaVariant] = {
    "gemma_2b": GemmaVariant(2048, 18, 16384, 8, 1, 256),  # PaliGemma-3B's language model
    "gemma_300m": GemmaVariant(1024, 18, 4096, 8, 1, 256),  # π0's action expert
    "dummy": GemmaVariant(64, 4, 128, 8, 1, 16),  # openpi's test size
}


def gemma_variant(name: str, extra: Mapping[str, GemmaVariant] | None = None) -> GemmaVariant:
    """Shapes of a variant name; ``*_lora`` variants have their base's shapes (LoRA weights, if the file
    still had them, would be listed as unexpected: merge them before converting)."""
    table = {**GEMMA_VARIANTS, **(extra or {})}
    base = name.removesuffix("_lora")
    if base not in table:
        raise CheckpointError(f"unknown Gemma variant {name!r}; known: {sorted(table)}")
    return table[base]


@dataclass(frozen=True)
class SourceNames:
    """Where each part of π0 lives in the file, for one layout and one PaliGemma spelling."""

    prefix: str  # "model." (LeRobot) or "" (openpi)
    lm: str  # the Gemma backbone's GemmaModel
    lm_head: str  # PaliGemma's (tied) output head
    vision: str  # SigLIP: + "vision_model." + HF name (or without "vision_model.")
    projector: str
    expert: str  # the expert's GemmaModel
    expert_head: str  # GemmaForCausalLM's head of the expert (unused)
    paligemma_keys: str  # "transformers>=4.52" | "transformers<4.52"

    @classmethod
    def build(cls, layout: str, paligemma_keys: str = "transformers>=4.52") -> SourceNames:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: choose one of {LAYOUTS}")
        p = LEROBOT_PREFIX if layout == "lerobot" else ""
        pg = f"{p}{PWE}paligemma."
        if paligemma_keys == "transformers>=4.52":  # PaliGemmaModel under .model, head outside
            lm, head, vision, proj = (
                f"{pg}model.language_model.",
                f"{pg}lm_head.weight",
                f"{pg}model.vision_tower.",
                f"{pg}model.multi_modal_projector.linear.",
            )
        elif paligemma_keys == "transformers<4.52":  # language_model = GemmaForCausalLM
            lm, head, vision, proj = (
                f"{pg}language_model.model.",
                f"{pg}language_model.lm_head.weight",
                f"{pg}vision_tower.",
                f"{pg}multi_modal_projector.linear.",
            )
        else:
            raise ValueError(
                f"paligemma_keys {paligemma_keys!r}: 'transformers>=4.52' or 'transformers<4.52'"
            )
        ex = f"{p}{PWE}gemma_expert."
        return cls(p, lm, head, vision, proj, f"{ex}model.", f"{ex}lm_head.weight", paligemma_keys)

    @classmethod
    def detect(cls, keys: Iterable[str], layout: str) -> SourceNames:
        keys = list(keys)
        for spelling in ("transformers>=4.52", "transformers<4.52"):
            names = cls.build(layout, spelling)
            if any(k.startswith(names.lm + "layers.") for k in keys):
                return names
        pg = f"{cls.build(layout).prefix}{PWE}paligemma."
        seen = sorted({k.split(".layers.")[0] for k in keys if k.startswith(pg)})[:5]
        raise CheckpointError(
            f"no PaliGemma language-model layers under {pg}model.language_model.layers.* or "
            f"{pg}language_model.model.layers.*; the file has {seen or 'no ' + pg + '* keys'}"
        )

    @property
    def embed(self) -> str:
        return self.lm + "embed_tokens.weight"


def detect_layout(keys: Iterable[str], requested: str = "auto") -> str:
    """'lerobot' (keys under ``model.paligemma_with_expert.``) or 'openpi' (``paligemma_with_expert.``)."""
    keys = list(keys)
    found = [
        layout
        for layout, p in (("lerobot", LEROBOT_PREFIX + PWE), ("openpi", PWE))
        if any(k.startswith(p) for k in keys)
    ]
    if requested not in ("auto", *LAYOUTS):
        raise ValueError(f"layout {requested!r}: choose auto, lerobot or openpi")
    if len(found) != 1:
        sample = sorted(keys)[:5]
        raise CheckpointError(
            f"cannot tell the π0 key layout: expected tensors under 'model.{PWE}' (LeRobot) or '{PWE}' "
            f"(openpi), found {found or 'neither'}; first keys: {sample}"
        )
    if requested != "auto" and requested != found[0]:
        raise CheckpointError(
            f"--layout {requested} but the file has the {found[0]} layout "
            f"({'model.' if found[0] == 'lerobot' else ''}{PWE}* keys); pass --layout {found[0]} or auto"
        )
    return found[0]


def _is_pi05(keys: set[str], names: SourceNames) -> bool:
    return names.prefix + "time_mlp_in.weight" in keys or any(
        k.startswith(names.expert + "layers.") and ".dense." in k for k in keys
    )


# ----------------------------------------------------------------------------------------- config


@dataclass
class CheckpointSpec:
    """What the checkpoint's config.json says, in one form for both layouts."""

    paligemma_variant: str = "gemma_2b"
    expert_variant: str = "gemma_300m"
    chunk: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    image_size: int = DEFAULT_IMAGE_SIZE
    # how frames reach image_size: "stretch" | "pad-top-left" (LeRobot 0.3) | "pad-centre" (openpi, LeRobot >= 0.4)
    image_resize: str = "stretch"
    token_len: int = DEFAULT_TOKEN_LEN
    cameras: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # in the model's image order
    state_dim: int | None = None
    action_dim: int | None = None
    state_norm: str = "mean_std"
    action_norm: str = "mean_std"
    pi05: bool = False  # a π0.5 checkpoint (told by its keys; LeRobot's config type must agree)
    notes: list[str] = field(default_factory=list)


def _feature_hw(key: str, shape: list[int]) -> tuple[int, int]:
    if len(shape) == 3 and shape[0] == 3:  # LeRobot: (C, H, W)
        return int(shape[1]), int(shape[2])
    if len(shape) == 3 and shape[2] == 3:
        return int(shape[0]), int(shape[1])
    raise CheckpointError(f"config.json input_features[{key!r}].shape {shape} is not an RGB image shape")


def _lerobot_mode(value: Any, what: str) -> str:
    if str(value) not in LEROBOT_MODES:
        raise CheckpointError(
            f"{what}: normalization mode {value!r} is not supported (supported: {sorted(LEROBOT_MODES)})"
        )
    return LEROBOT_MODES[str(value)]


def checkpoint_spec(cfg: dict[str, Any], layout: str, *, pi05: bool = False) -> CheckpointSpec:
    """The :class:`CheckpointSpec` of a LeRobot ``PI0Config`` / ``PI05Config`` or an openpi PyTorch
    ``config.json`` (which does not say π0 or π0.5: ``pi05`` comes from the weights' keys).

    π0.5 defaults where the file is silent: 200 prompt tokens (openpi's pi05 ``max_token_len``, LeRobot's
    ``tokenizer_max_length``) and q01/q99 statistics (``QUANTILES``) for state and actions.
    """
    spec = CheckpointSpec(pi05=pi05)
    if pi05:
        spec.token_len = DEFAULT_TOKEN_LEN_PI05
        spec.state_norm = spec.action_norm = "quantile"
    if layout == "openpi":
        spec.paligemma_variant = str(cfg.get("paligemma_variant", spec.paligemma_variant))
        spec.expert_variant = str(cfg.get("action_expert_variant", spec.expert_variant))
        spec.chunk = int(cfg.get("action_horizon", spec.chunk))
        spec.max_state_dim = spec.max_action_dim = int(cfg.get("action_dim", 32))  # openpi pads both to it
        spec.cameras = [(c, (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)) for c in OPENPI_CAMERAS]
        spec.image_resize = "pad-centre"  # openpi's preprocess_observation_pytorch: resize_with_pad_torch
        return spec
    kind = cfg.get("type")
    if kind not in (None, "pi0", "pi05"):
        raise CheckpointError(
            f"config.json has type {kind!r}; this converter reads LeRobot 'pi0' and 'pi05' checkpoints"
        )
    if kind is not None and (kind == "pi05") != pi05:
        found = (
            "a π0.5 checkpoint (time_mlp_in/out, adaptive RMSNorm '.dense.' expert norms)"
            if pi05
            else "a π0 checkpoint (state_proj, action_time_mlp_in/out, plain expert norms)"
        )
        raise CheckpointError(
            f"config.json has type {kind!r}, but the weights are {found}; the files do not belong together"
        )
    spec.paligemma_variant = str(cfg.get("paligemma_variant", spec.paligemma_variant))
    spec.expert_variant = str(cfg.get("action_expert_variant", spec.expert_variant))
    spec.chunk = int(cfg.get("chunk_size", spec.chunk))
    spec.max_state_dim = int(cfg.get("max_state_dim", spec.max_state_dim))
    spec.max_action_dim = int(cfg.get("max_action_dim", spec.max_action_dim))
    spec.steps = int(cfg.get("num_inference_steps", cfg.get("num_steps", spec.steps)))
    spec.min_period = float(cfg.get("min_period", spec.min_period))
    spec.max_period = float(cfg.get("max_period", spec.max_period))
    spec.token_len = int(cfg.get("tokenizer_max_length", spec.token_len))
    res = cfg.get("image_resolution") or cfg.get("resize_imgs_with_padding") or [DEFAULT_IMAGE_SIZE] * 2
    if int(res[0]) != int(res[1]):
        raise CheckpointError(
            f"config.json image resolution {res} is not square; SigLIP needs a square input"
        )
    spec.image_size = int(res[0])
    if cfg.get("resize_imgs_with_padding") is not None and cfg.get("image_resolution") is None:
        spec.image_resize = "pad-top-left"  # LeRobot 0.3's PI0Config: resize_with_pad, padded top/left
    elif cfg.get("image_resolution") is not None:
        spec.image_resize = "pad-centre"  # LeRobot >= 0.4: openpi's resize_with_pad_torch, centred
    feats = cfg.get("input_features") or {}
    for key, feat in feats.items():
        ftype, shape = str(feat.get("type", "")), list(feat.get("shape", []))
        if ftype == "VISUAL" and key.startswith(IMAGE_PREFIX):
            spec.cameras.append((key[len(IMAGE_PREFIX) :], _feature_hw(key, shape)))
        elif key == STATE_KEY:
            spec.state_dim = int(shape[0])
    action = (cfg.get("output_features") or {}).get(ACTION_KEY)
    if action:
        spec.action_dim = int(action["shape"][0])
    if not spec.cameras:
        spec.cameras = [(c, (spec.image_size, spec.image_size)) for c in OPENPI_CAMERAS]
        spec.notes.append(f"config.json lists no cameras: using openpi's {list(OPENPI_CAMERAS)}")
    if int(cfg.get("empty_cameras", 0) or 0):
        spec.notes.append(
            f"empty_cameras={cfg['empty_cameras']}: LeRobot feeds that many always-masked images; a masked "
            "camera changes neither positions nor keys, so the converted policy simply omits them"
        )
    mapping = cfg.get("normalization_mapping") or {}
    default = "QUANTILES" if pi05 else "MEAN_STD"
    spec.state_norm = _lerobot_mode(mapping.get("STATE", default), "config.json normalization_mapping.STATE")
    spec.action_norm = _lerobot_mode(
        mapping.get("ACTION", default), "config.json normalization_mapping.ACTION"
    )
    if cfg.get("adapt_to_pi_aloha") or cfg.get("use_delta_joint_actions_aloha"):
        spec.notes.append(
            "adapt_to_pi_aloha / use_delta_joint_actions_aloha are set: LeRobot's ALOHA joint/gripper "
            "transforms are not applied by vlaforge; transform state and actions yourself"
        )
    return spec


# ------------------------------------------------------------------------------------- statistics


@dataclass
class Statistics:
    stats: dict[str, dict[str, np.ndarray]]  # feature -> stat name -> values
    source: str
    modes: dict[str, str] = field(default_factory=dict)  # feature -> mode, when the source says


def _finite(stats: dict[str, dict[str, np.ndarray]]) -> bool:
    return all(np.isfinite(v).all() for feat in stats.values() for v in feat.values())


def _lerobot_processor_stats(src: Path) -> Statistics | None:
    """LeRobot >= 0.4: the normalizer step's state file named in policy_preprocessor.json (or the
    postprocessor's unnormalizer for the actions)."""
    stats: dict[str, dict[str, np.ndarray]] = {}
    modes: dict[str, str] = {}
    files = []
    for name in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        if not (src / name).is_file():
            continue
        pipeline = read_json(src / name, "LeRobot processor config")
        for step in pipeline.get("steps", []):
            if step.get("registry_name") not in NORMALIZER_STEPS or "state_file" not in step:
                continue
            file = src / step["state_file"]
            if not file.is_file():
                raise CheckpointError(f"{src / name} names {step['state_file']}, which is not in {src}")
            files.append(file.name)
            for key, tensor in load_file(str(file)).items():
                feature, stat = key.rsplit(".", 1)
                if feature in (STATE_KEY, ACTION_KEY):
                    stats.setdefault(feature, {}).setdefault(stat, tensor.float().numpy().reshape(-1))
            norm_map = (step.get("config") or {}).get("norm_map") or {}
            for feature, ftype in ((STATE_KEY, "STATE"), (ACTION_KEY, "ACTION")):
                if ftype in norm_map:
                    modes.setdefault(feature, _lerobot_mode(norm_map[ftype], f"{name} norm_map.{ftype}"))
    return Statistics(stats, f"LeRobot processor state ({', '.join(files)})", modes) if stats else None


def _old_lerobot_buffer_stats(src: Path, index: dict[str, str]) -> Statistics | None:
    """LeRobot < 0.4: ``normalize_inputs.buffer_observation_state.mean`` ... inside the weights."""
    stats: dict[str, dict[str, np.ndarray]] = {}
    # the un-normalizer is what inference uses for the actions; the input normalizer for the state
    for prefix in ("unnormalize_outputs.buffer_", "normalize_inputs.buffer_", "normalize_targets.buffer_"):
        for key in sorted(k for k in index if k.startswith(prefix)):
            feature, stat = key[len(prefix) :].rsplit(".", 1)
            feature = {"observation_state": STATE_KEY}.get(feature, feature)
            if feature not in (STATE_KEY, ACTION_KEY):
                continue
            with safe_open(index[key], framework="pt") as f:
                value = f.get_tensor(key).float().numpy().reshape(-1)
            stats.setdefault(feature, {}).setdefault(stat, value)
    return Statistics(stats, "LeRobot normalization buffers in the weights") if stats else None


def _openpi_stats(src: Path, asset_id: str | None) -> Statistics | None:
    """openpi: ``assets/<asset_id>/norm_stats.json`` ({"norm_stats": {"state": ..., "actions": ...}})."""
    root = src / "assets"
    found = (
        {str(p.parent.relative_to(root)): p for p in sorted(root.rglob("norm_stats.json"))}
        if root.is_dir()
        else {}
    )
    if not found:
        return None
    if asset_id is None:
        if len(found) > 1:
            raise CheckpointError(
                f"{root} holds statistics for {len(found)} assets; choose one with --asset-id. "
                f"Available: {sorted(found)}"
            )
        asset_id = next(iter(found))
    if asset_id not in found:
        raise CheckpointError(f"--asset-id {asset_id!r} is not in {root}. Available: {sorted(found)}")
    raw = read_json(found[asset_id], "openpi norm stats").get("norm_stats")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{found[asset_id]}: no 'norm_stats' object")
    stats = {
        ours: {k: np.asarray(v, np.float32).reshape(-1) for k, v in raw[theirs].items() if v is not None}
        for ours, theirs in OPENPI_STATS.items()
        if theirs in raw
    }
    return Statistics(stats, f"openpi {found[asset_id].relative_to(src)}")


def _dataset_stats(dataset: Path) -> tuple[Statistics, float]:
    try:
        meta = load_meta(dataset)
    except DatasetError as e:
        raise CheckpointError(f"--stats {dataset}: {e}") from e
    stats = {
        k: {s: np.asarray(v, np.float32) for s, v in meta.stats.get(k, {}).items()}
        for k in (STATE_KEY, ACTION_KEY)
    }
    return Statistics({k: v for k, v in stats.items() if v}, f"dataset {dataset}"), float(meta.fps)


def read_statistics(
    src: Path, layout: str, index: dict[str, str], *, asset_id: str | None, dataset: Path | None
) -> tuple[Statistics, float | None]:
    """The statistics to convert (and the dataset's fps when they come from ``dataset``)."""
    if dataset is not None:
        return _dataset_stats(dataset)
    tried = []
    if layout == "openpi":
        found = _openpi_stats(src, asset_id)
        tried.append("assets/*/norm_stats.json")
    else:
        found = _lerobot_processor_stats(src) or _old_lerobot_buffer_stats(src, index)
        tried += [f"{PREPROCESSOR_FILE} normalizer state", "normalization buffers in the weights"]
    if found is not None and not _finite(found.stats):
        raise CheckpointError(
            f"{src}: the checkpoint's statistics ({found.source}) hold inf/NaN placeholders: it was saved "
            "without dataset statistics (a base model). Pass --stats DATASET_DIR (the dataset you will run "
            "or fine-tune on; its meta/stats.json is read)"
        )
    if found is None or not found.stats:
        raise CheckpointError(
            f"{src}: no normalization statistics (looked for: {', '.join(tried)}). Base checkpoints ship "
            "without them: pass --stats DATASET_DIR (a LeRobot/vlaforge dataset whose meta/stats.json is used)"
        )
    return found, None


def pi0_normalizer(
    stats: Statistics, modes: dict[str, str], dims: dict[str, int], *, clip: bool = False
) -> Normalizer:
    """State/action normalizer: ``modes`` per feature, statistics cut to the robot's dimensions
    (openpi normalizes with ``stats[..., :dim]`` too). clip: quantile features clip to [-1, 1] (π0.5, as
    the ``pi05`` recipes; inference bins the state within [-1, 1] either way)."""
    feats = {}
    for key, mode in modes.items():
        raw = stats.stats.get(key)
        if mode == "identity":  # LeRobot's IDENTITY: no statistics needed
            feats[key] = FeatureNorm("identity")
            continue
        if not raw:
            raise CheckpointError(
                f"statistics from {stats.source} have no '{key}' entry (have {sorted(stats.stats)})"
            )
        dim = dims[key]
        cut = {}
        for name, v in raw.items():
            if name not in STAT_NAMES:  # e.g. a frame `count`
                continue
            v = np.asarray(v, np.float32).reshape(-1)
            if v.shape[0] < dim:
                raise CheckpointError(
                    f"statistics from {stats.source}: '{key}' {name} has {v.shape[0]} values, the policy's "
                    f"{key} has {dim} dimensions (pass --state-dim / --action-dim, or other statistics)"
                )
            cut[name] = v[:dim]
        try:
            feats[key] = FeatureNorm(mode, cut, clip=clip and mode == "quantile")
        except ValueError as e:
            raise CheckpointError(f"statistics from {stats.source}, '{key}': {e}") from e
    return Normalizer(feats)


# ------------------------------------------------------------------------------------------ plan


def negate(x: torch.Tensor) -> torch.Tensor:
    """openpi predicts ε − A, vlaforge A − ε: the output projection flips sign (exact in any dtype)."""
    return -x


def flip_time_columns(
    weight: torch.Tensor, width: int, min_period: float, max_period: float, *, first: int | None = None
) -> torch.Tensor:
    """A Linear weight whose columns ``[first, first + width)`` read φ(t) -> the same map reading φ(τ), τ = 1 − t.

    π0's ``action_time_mlp_in.weight`` is (De, 2·De) over ``[W1·a, φ]``: ``first`` = De (the default);
    π0.5's ``time_mlp_in.weight`` reads φ alone (``first`` = 0). Within the φ columns the first half
    reads sin(ω_j t), the second cos(ω_j t) (see the module docstring); per frequency
    ``[W_sin, W_cos] <- [-cos ω W_sin + sin ω W_cos, sin ω W_sin + cos ω W_cos]``. The map is its own
    inverse. Computed in float64, returned in the input dtype.
    """
    first = width if first is None else first
    if weight.dim() != 2 or width % 2 or not 0 <= first <= weight.shape[1] - width:
        raise ValueError(
            f"time features need an even width ({width}) of columns from {first} in a 2-D weight, "
            f"got {tuple(weight.shape)}"
        )
    half = width // 2
    w = weight.double()
    omega = sincos_frequencies(width, min_period, max_period, dtype=torch.float64)  # (De/2,)
    c, s = omega.cos()[None], omega.sin()[None]  # (1, De/2)
    w_sin, w_cos = w[:, first : first + half], w[:, first + half : first + width]  # (out, De/2) each
    out = torch.cat(
        [w[:, :first], -c * w_sin + s * w_cos, s * w_sin + c * w_cos, w[:, first + width :]], dim=1
    )
    return out.to(weight.dtype)


def action_layer_rules(config: Pi0Config) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The policy's own layers (outside the two Gemmas) -> their conversion; names are the published ones.

    π0: ``state_proj``, ``action_in_proj``, ``action_time_mlp_in`` (φ columns from De on, folded),
    ``action_time_mlp_out``, ``action_out_proj`` (negated). π0.5 (a :class:`Pi05Config`): no state layer,
    ``action_in_proj``, ``time_mlp_in`` (reads φ alone: every column folded), ``time_mlp_out``,
    ``action_out_proj`` (negated).
    """
    width, lo, hi = config.expert_width, config.time_min_period, config.time_max_period
    if isinstance(config, Pi05Config):
        time_mlp = "time_mlp"
        fold = lambda w: flip_time_columns(w, width, lo, hi, first=0)  # noqa: E731
        layers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    else:
        time_mlp = "action_time_mlp"
        fold = lambda w: flip_time_columns(w, width, lo, hi)  # noqa: E731
        layers = {"state_proj.weight": same, "state_proj.bias": same}
    return {
        **layers,
        "action_in_proj.weight": same,
        "action_in_proj.bias": same,
        f"{time_mlp}_in.weight": fold,
        f"{time_mlp}_in.bias": same,
        f"{time_mlp}_out.weight": same,
        f"{time_mlp}_out.bias": same,
        "action_out_proj.weight": negate,
        "action_out_proj.bias": negate,
    }


def expert_source_name(tail: str) -> str:
    """An ``ActionExpert`` name (``transformer.expert.`` removed) -> the HF Gemma name under ``model.``.

    The adaRMS norms of π0.5 (``AdaRMSNorm.modulation``, a Linear cond -> 3·width) are openpi's
    ``GemmaRMSNorm.dense`` of the same layer: ``layers.N.attn_norm`` = ``input_layernorm``,
    ``layers.N.mlp_norm`` = ``post_attention_layernorm``, ``final_norm`` = ``norm``. Both split the output
    into (scale, shift, gate) in that order and compute ``x̂·(1 + scale) + shift`` and ``x + gate·f(…)``,
    so the rows are copied unpermuted.
    """
    m = ADARMS_NAME.match(tail)
    if m is None:
        return ours_to_hf(tail).removeprefix("model.")
    layer, norm, param = m.groups()
    return f"{layer or ''}{ADARMS_NORMS[norm]}.dense.{param}"


def plan_pi0(
    expected: dict[str, tuple[int, ...]],
    names: SourceNames,
    config: Pi0Config,
    *,
    head_for_embeddings: bool = False,
) -> dict[str, Rule]:
    """A :class:`~vlaforge.convert.common.Rule` for every ``Pi0Policy`` / ``Pi05Policy`` tensor
    (``expected``: key -> shape; ``config`` a :class:`Pi05Config` for π0.5).

    head_for_embeddings: read the token embeddings from PaliGemma's tied ``lm_head`` (files that kept
    only that copy of the shared tensor). Every rule's conversion is an involution (identity,
    negation, the time reflection), which :func:`export_state_dict` relies on.
    """
    own = action_layer_rules(config)
    plan: dict[str, Rule] = {}
    unknown = []
    for key, shape in expected.items():
        rule: Rule | None = None
        for ours, theirs in (("transformer.backbone.", names.lm), ("transformer.expert.", names.expert)):
            if key.startswith(ours):
                tail = key[len(ours) :]
                hf = expert_source_name(tail) if ours == "transformer.expert." else ours_to_hf(tail)
                src = theirs + hf.removeprefix("model.")
                if tail == "embed_tokens.weight" and head_for_embeddings:
                    src = names.lm_head
                rule = Rule(src, (shape,), same)
        if key.startswith("vision_tower.model."):
            tail = key[len("vision_tower.model.") :].removeprefix("vision_model.")
            rule = Rule(names.vision + "vision_model." + tail, (shape,), same, (names.vision + tail,))
        elif key.startswith("projector.linear."):
            rule = Rule(names.projector + key.rsplit(".", 1)[1], (shape,), same)
        elif key in own:
            rule = Rule(names.prefix + key, (shape,), own[key])
        if rule is None:
            unknown.append(key)
        else:
            plan[key] = rule
    if unknown:
        raise Pi0ConversionError(
            f"the {config.recipe} policy has {len(unknown)} tensor(s) the π0 / π0.5 key map does not cover: "
            f"{unknown}"
        )
    return plan


def export_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: Pi0Config,
    *,
    layout: str = "lerobot",
    paligemma_keys: str = "transformers>=4.52",
) -> dict[str, torch.Tensor]:
    """A ``Pi0Policy.state_dict()`` (or ``Pi05Policy``'s, with its :class:`Pi05Config`) under the published
    names of ``layout`` (the inverse of the import: every rule is an involution). The openpi/LeRobot extras
    a real file also holds (the expert's ``lm_head``, a tied PaliGemma ``lm_head``) are not written."""
    names = SourceNames.build(layout, paligemma_keys)
    plan = plan_pi0({k: tuple(v.shape) for k, v in state_dict.items()}, names, config)
    return {rule.source: rule.convert(state_dict[k]) for k, rule in plan.items() if rule.source is not None}


# ---------------------------------------------------------------------------------------- convert


def pi0_policy_config(
    spec: CheckpointSpec,
    *,
    vocab_size: int,
    cameras: dict[str, list[int]],
    state_dim: int,
    action_dim: int,
    fps: float,
    state_norm: str,
    action_norm: str,
    variants: Mapping[str, GemmaVariant] | None = None,
    vision: dict[str, dict[str, Any]] | None = None,
    fast_tokenizer: FastTokenizer | None = None,
) -> Pi0Config:
    """The config of the converted policy: the ``pi0`` recipe with the checkpoint's shapes, or for a π0.5
    checkpoint (``spec.pi05``) a :class:`Pi05Config` of the ``pi05`` recipe: openpi's prompt
    (``OPENPI_PROMPT``), FAST ids below PaliGemma's last 128, no subtask prediction, and the scale of the
    ``fast_tokenizer`` when one is attached."""
    vlm, expert = (
        gemma_variant(spec.paligemma_variant, variants),
        gemma_variant(spec.expert_variant, variants),
    )
    for name in ("depth", "num_heads", "num_kv_heads", "head_dim"):
        if getattr(vlm, name) != getattr(expert, name):
            raise CheckpointError(
                f"variants {spec.paligemma_variant} and {spec.expert_variant} differ in {name}; π0's joint "
                "attention needs the same depth, heads and head_dim"
            )
    lm = LMConfig(**PALIGEMMA_LM).replace(
        vocab_size=vocab_size,
        hidden_size=vlm.width,
        intermediate_size=vlm.mlp_dim,
        num_layers=vlm.depth,
        num_heads=vlm.num_heads,
        num_kv_heads=vlm.num_kv_heads,
        head_dim=vlm.head_dim,
    )
    if vision is None:
        siglip = json.loads(json.dumps(SIGLIP_SO400M))
        siglip["hf"]["image_size"] = spec.image_size
        vision = {"siglip": siglip}
    if spec.image_resize != "stretch":  # the reference's frame resize, unless the caller chose one
        vision = {k: {"resize": spec.image_resize, **v} for k, v in vision.items()}
    fields: dict[str, Any] = {
        "recipe": "pi0",
        "cameras": cameras,
        "state_dim": state_dim,
        "action_dim": action_dim,
        "chunk": spec.chunk,
        "fps": fps,
        "lm": dataclasses.asdict(lm),
        "expert_width": expert.width,
        "expert_mlp_dim": expert.mlp_dim,
        "vision": vision,
        "prompt": PROMPT,
        "text_max_len": spec.token_len - 1,  # BOS is the policy's own token, outside the prompt budget
        "bos_token_id": PALIGEMMA_BOS,
        "language": "hf",
        "max_state_dim": spec.max_state_dim,
        "max_action_dim": spec.max_action_dim,
        "steps": spec.steps,
        "time_min_period": spec.min_period,
        "time_max_period": spec.max_period,
        "state_norm": state_norm,
        "action_norm": action_norm,
    }
    if not spec.pi05:
        return Pi0Config(**fields)
    fields |= {"recipe": "pi05", "prompt": OPENPI_PROMPT, "fast_skip_tokens": PI05_FAST_SKIP}
    if fast_tokenizer is not None:
        fields["fast_scale"] = fast_tokenizer.scale
        fields["fast_vocab_size"] = max(fast_tokenizer.vocab_size, Pi05Config.fast_vocab_size)
    return Pi05Config(**fields)


def _cameras(
    spec: CheckpointSpec, names: list[str] | None, frame_size: tuple[int, int] | None, notes: list[str]
) -> dict[str, list[int]]:
    """Camera name -> [h, w], in the checkpoint's image order, and a note if vlaforge's order differs."""
    cams = list(spec.cameras)
    if names is not None:
        if len(names) > len(cams):
            raise CheckpointError(
                f"--cameras lists {len(names)} cameras, the checkpoint was trained with {len(cams)} image "
                f"slots ({[c for c, _ in cams]})"
            )
        if len(set(names)) != len(names) or not all(names):
            raise CheckpointError(f"--cameras {names}: names must be unique and non-empty")
        if len(names) < len(cams):
            notes.append(
                f"image slots {[c for c, _ in cams[len(names) :]]} are omitted: a masked camera changes nothing, "
                "so this equals the reference with those cameras marked missing"
            )
        cams = [(n, hw) for n, (_, hw) in zip(names, cams)]
    out = {n: [int(frame_size[0]), int(frame_size[1])] if frame_size else [hw[0], hw[1]] for n, hw in cams}
    order = [n for n, _ in cams]
    if order != sorted(order):
        notes.append(
            f"the checkpoint's image order is {order}, but Pi0Policy orders cameras by name ({sorted(order)}): "
            "image tokens get other positions than in training. Rename the cameras (--cameras) so that "
            "their sorted order is the checkpoint's order"
        )
    return out


def convert_pi0(
    src: str | Path,
    out: str | Path,
    *,
    layout: str = "auto",
    tokenizer: str | Path | None = None,
    stats: str | Path | None = None,
    asset_id: str | None = None,
    cameras: list[str] | None = None,
    frame_size: tuple[int, int] | None = None,
    state_dim: int | None = None,
    action_dim: int | None = None,
    fps: float | None = None,
    dtype: torch.dtype = torch.float32,
    variants: Mapping[str, GemmaVariant] | None = None,
    vision: dict[str, dict[str, Any]] | None = None,
    fast_tokenizer: str | Path | None = None,
    overwrite: bool = False,
) -> Pi0ConversionReport:
    """Convert a local π0 or π0.5 PyTorch checkpoint directory (LeRobot or openpi layout) into a vlaforge
    ``pi0`` / ``pi05`` policy (which one: the weights' keys say).

    layout: "auto" (by the key prefix), "lerobot" or "openpi".
    tokenizer: PaliGemma's tokenizer.json or a directory holding it (default: ``src/tokenizer.json``).
    stats: a dataset directory whose meta/stats.json replaces / supplies the statistics.
    asset_id: openpi: which ``assets/<asset_id>/norm_stats.json``.
    cameras: camera names in the checkpoint's image order (default: its own names); frame_size: the
        (H, W) of every camera's frames (default: LeRobot's feature shapes, else 224 x 224).
    state_dim / action_dim: the robot's sizes (default: LeRobot's features, else the statistics').
    fps: control rate stored with the policy (default: the --stats dataset's, else 10).
    dtype: the stored weights' dtype. float32 (default) is what ``Pi0Policy`` computes with (bf16 runs
        through autocast); bfloat16 halves the file but the policy then needs autocast to run.
    variants / vision: extra Gemma variant shapes and a Pi0Config.vision override (tests use tiny sizes).
    fast_tokenizer: π0.5 only: a ``FastTokenizer.save`` directory fitted on (chunk, action_dim) chunks,
        attached so the converted policy can train its FAST loss (flow inference needs none).
    Returns the report (also written as ``conversion.json``); raises :class:`Pi0ConversionError`
    listing every missing / unexpected / wrongly shaped tensor, CheckpointError for other problems.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory; download the checkpoint there first")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory or pass --overwrite")
    index, shapes = source_index(src)
    layout = detect_layout(index, layout)
    names = SourceNames.detect(index, layout)
    pi05 = _is_pi05(set(index), names)
    kind = "π0.5" if pi05 else "π0"
    fast = _fast_tokenizer(fast_tokenizer, pi05)
    spec = checkpoint_spec(read_json(src / CONFIG_FILE, "the checkpoint's config.json"), layout, pi05=pi05)
    report = Pi0ConversionReport(
        source=str(src),
        output=str(out),
        layout=layout,
        policy_class="pi05" if pi05 else "pi0",
        paligemma_keys=names.paligemma_keys,
        fast_tokenizer="" if fast_tokenizer is None else str(fast_tokenizer),
        notes=list(spec.notes),
    )
    if pi05:
        report.notes += _pi05_notes(layout, fast is not None)

    statistics, dataset_fps = read_statistics(
        src, layout, index, asset_id=asset_id, dataset=None if stats is None else Path(stats)
    )
    report.statistics = statistics.source
    modes = {STATE_KEY: spec.state_norm, ACTION_KEY: spec.action_norm, **statistics.modes}
    dims = {
        STATE_KEY: state_dim or spec.state_dim or _stat_dim(statistics, STATE_KEY),
        ACTION_KEY: action_dim or spec.action_dim or _stat_dim(statistics, ACTION_KEY),
    }
    normalizer = pi0_normalizer(statistics, modes, dims, clip=pi05)

    tok_path = Path(tokenizer) if tokenizer is not None else src
    try:
        prompt_tokenizer = HFPromptTokenizer.from_file(tok_path)
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{e}. {kind} checkpoints do not ship PaliGemma's tokenizer: download it once "
            "(huggingface-cli download google/paligemma-3b-pt-224 tokenizer.json --local-dir DIR) and pass "
            "--tokenizer DIR"
        ) from e

    embed_in_file = names.embed in index
    vocab_source = names.embed if embed_in_file else names.lm_head
    vocab_size = shapes[vocab_source][0] if vocab_source in shapes else int(PALIGEMMA_LM["vocab_size"])
    try:
        config = pi0_policy_config(
            spec,
            vocab_size=vocab_size,
            cameras=_cameras(spec, cameras, frame_size, report.notes),
            state_dim=dims[STATE_KEY],
            action_dim=dims[ACTION_KEY],
            fps=float(fps or dataset_fps or 10.0),
            state_norm=modes[STATE_KEY],
            action_norm=modes[ACTION_KEY],
            variants=variants,
            vision=vision,
            fast_tokenizer=fast,
        )
        # Shapes only: the parameters live on the meta device (no 3B random init); it is used to save.
        with parameters_on_meta():
            if isinstance(config, Pi05Config):
                policy: Pi0Policy = Pi05Policy(config, normalizer, prompt_tokenizer, fast, lm_on_meta=True)
            else:
                policy = Pi0Policy(config, normalizer, prompt_tokenizer, lm_on_meta=True)
    except ValueError as e:
        raise CheckpointError(
            f"{src}: the checkpoint does not describe a valid vlaforge {kind} policy: {e}"
        ) from e
    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    plan = plan_pi0(expected, names, config, head_for_embeddings=not embed_in_file)
    tied_head = names.lm_head if embed_in_file and names.lm_head in index else None

    def dropped(name: str) -> bool:
        rest = (
            name[len(names.vision) :].removeprefix("vision_model.") if name.startswith(names.vision) else ""
        )
        return (
            name in (names.expert_head, tied_head)
            or name.endswith(_DROPPED_SUFFIXES)
            or rest.startswith("head.")
            or (layout == "lerobot" and name.startswith(OLD_LEROBOT_BUFFERS))
        )

    found = match_plan(plan, index, shapes, report, dropped=dropped)
    raise_if_invalid(
        report,
        f"{src}: the {layout} {kind} checkpoint does not match the {report.policy_class} policy it describes",
        Pi0ConversionError,
    )
    weights = read_planned(plan, found, index, expected, dtype)
    untied = None if tied_head is None else _check_tied(index, names.embed, tied_head)
    if untied is not None:
        report.notes.append(untied)
    report.converted = len(weights)
    policy.save(out, state_dict=weights)
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _fast_tokenizer(directory: str | Path | None, pi05: bool) -> FastTokenizer | None:
    """The --fast-tokenizer directory's FastTokenizer (π0.5 only; its shape is checked with the config)."""
    if directory is None:
        return None
    if not pi05:
        raise CheckpointError(
            f"--fast-tokenizer {directory}: the checkpoint is a π0 one, which has no FAST head (π0.5 only)"
        )
    try:
        return FastTokenizer.load(directory)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"--fast-tokenizer {directory}: not a vlaforge FAST tokenizer directory ({e}); fit one with "
            "vlaforge.policies.pi0.fast_recipes.fit_fast_tokenizer and FastTokenizer.save(DIR)"
        ) from e


def _pi05_notes(layout: str, has_fast: bool) -> list[str]:
    """What the user of a converted π0.5 checkpoint should know (conversion.json notes)."""
    notes = [
        "π0.5: the FAST-token head (knowledge insulation) trains with the backbone's own lm_head; "
        + (
            "the --fast-tokenizer FAST tokenizer is attached"
            if has_fast
            else "no FAST tokenizer is attached (published π0.5 checkpoints ship none): predict works, "
            "training the FAST loss needs one (policy.set_fast_tokenizer(fit_fast_tokenizer(...)) or "
            "--fast-tokenizer DIR)"
        ),
        "π0.5 state text: openpi writes the state's own dimensions and a state below q01 as bin -1; vlaforge "
        "clips it to bin 0"
        + (
            ". Some LeRobot versions zero-pad the state to max_state_dim before binning (32 numbers in the "
            "prompt); vlaforge writes the robot's dimensions only"
            if layout == "lerobot"
            else ""
        ),
    ]
    return notes


def _stat_dim(statistics: Statistics, key: str) -> int:
    feat = statistics.stats.get(key) or {}
    values = feat.get("mean", feat.get("q01"))
    if values is None:
        raise CheckpointError(
            f"cannot tell the {key} size: the checkpoint's config has no feature shape and the statistics "
            f"({statistics.source}) no '{key}' mean; pass --{'state' if key == STATE_KEY else 'action'}-dim"
        )
    return int(np.asarray(values).reshape(-1).shape[0])


def _check_tied(index: dict[str, str], embed: str, head: str) -> str | None:
    """PaliGemma ties its head to the embeddings; vlaforge uses the embeddings for both. A head of another
    shape is an inconsistent file (raises); a head with other values is a note: LeRobot >= 0.6 builds its
    PaliGemma untied (``PaliGemmaForConditionalGenerationWithPiGemma`` replaces the model the head was tied
    to), so the file's head keeps its initial values while the embeddings train; π0 / π0.5 action sampling
    reads only the embeddings."""
    with safe_open(index[embed], framework="pt") as f:
        a = f.get_tensor(embed)
    with safe_open(index[head], framework="pt") as f:
        b = f.get_tensor(head)
    if a.shape != b.shape:
        raise CheckpointError(
            f"{head} {tuple(b.shape)} and {embed} {tuple(a.shape)} differ in shape, but PaliGemma ties them; "
            "the file is inconsistent"
        )
    if torch.equal(a, b):
        return None
    return (
        f"{head} differs from {embed} (LeRobot >= 0.6 does not tie them; its action sampling reads only the "
        "embeddings): the converted policy ties its head to the embeddings and drops the file's head"
    )


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlaforge.convert.pi0", description=PI0_HELP)
    add_pi0_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Convert as the parsed command line says; errors are printed (no traceback), exit status 1."""
    try:
        report = convert_pi0(
            args.src,
            args.out,
            layout=args.layout,
            tokenizer=args.tokenizer,
            stats=args.stats,
            asset_id=args.asset_id,
            cameras=None if args.cameras is None else [c.strip() for c in args.cameras.split(",")],
            frame_size=None if args.frame_size is None else tuple(args.frame_size),
            state_dim=args.state_dim,
            action_dim=args.action_dim,
            fps=args.fps,
            dtype=DTYPES[args.dtype or "float32"],
            fast_tokenizer=args.fast_tokenizer,
            overwrite=args.overwrite,
        )
    except (CheckpointError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {report.output} ({report.policy_class} policy): {report.converted} tensors from the "
        f"{report.layout} layout "
        f"({report.paligemma_keys} PaliGemma names), statistics from {report.statistics}, "
        f"{len(report.dropped)} unused source tensors dropped; details in {REPORT_FILE}"
    )
    for note in report.notes:
        print(f"note: {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
