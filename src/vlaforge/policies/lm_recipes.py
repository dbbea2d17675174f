"""Recipe-building code shared by the pretrained-LM recipes (`vla/recipes.py`, `pi0/recipes.py`,
`pi0/fast_recipes.py`).

The three families build their policies the same way: a recipe is a dict of config fields, the
embodiment (cameras, state/action sizes, fps) is read from the dataset, the normalizer comes from the
dataset statistics with gripper-style dimensions left unnormalized, and the prompt tokenizer is
either a word vocabulary of the dataset's prompts (tiny recipes) or a checkpoint's ``tokenizer.json``
(full-size recipes). Only the token layout differs (which prompts, how many extra LM ids), so that
stays in each recipe module and everything else lives here once. The tiny and published tower / LM
shapes they share (SigLIP, Gemma) are defined here too, so ``pi0-tiny``, ``pi0-fast-tiny`` and
``rt2-tiny`` cannot drift apart by accident.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vlaforge.models.lm import lm_preset
from vlaforge.models.prompt import HFPromptTokenizer, PromptTokenizer, WordPromptTokenizer
from vlaforge.policies.embodiment import dataset_embodiment
from vlaforge.policies.pretrained import LITE0, SMOLLM2, lite0_spec, merge_pretrained, pretrained_lm_fields
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, STATE_KEY

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class VLARecipe:
    """A named pretrained-LM recipe: config fields (`model`), TrainConfig defaults (`train`) and which
    dataset cameras it reads by default."""

    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    cameras: str = "main"  # "main": one third-person camera (OpenVLA, RT-2); "all": every camera (OFT, π0)


def get_from(registry: dict[str, VLARecipe], name: str, family: str) -> VLARecipe:
    """`registry[name]`, or an error listing the `family`'s recipe names."""
    if name not in registry:
        raise ValueError(f"unknown {family} recipe '{name}'; available: {sorted(registry)}")
    return registry[name]


def train_defaults(
    lr: float,
    batch_size: int,
    *,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    ema_decay: float = 0.0,
    precision: str | None = None,
) -> dict[str, Any]:
    """TrainConfig defaults of a recipe; by default OpenVLA's (no weight decay, no EMA, gradients
    clipped at 1)."""
    train: dict[str, Any] = {
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "grad_clip": 1.0,
        "ema_decay": ema_decay,
        "batch_size": batch_size,
    }
    if precision is not None:
        train["precision"] = precision
    return train


# Every tiny recipe trains alike (CPU-sized, random init); the full-size π0 / π0-FAST use openpi's values.
TINY_TRAIN = train_defaults(5e-4, 32, warmup_steps=100)
PI0_TRAIN = train_defaults(
    2.5e-5, 32, warmup_steps=1000, weight_decay=1e-10, ema_decay=0.99, precision="bf16"
)


# ---------------------------------------------------------------------- shapes
def lm_fields(preset: str, **changes: Any) -> dict[str, Any]:
    """`LMConfig` fields of an `lm_preset` with `changes`, as the plain dict a recipe stores."""
    return dataclasses.asdict(lm_preset(preset).replace(**changes))


def siglip_spec(
    size: int, patch: int, width: int, layers: int, heads: int, mlp: int, feature_layer: int | None = None
) -> dict[str, Any]:
    """A SigLIP vision-tower spec. feature_layer None: the post-norm last layer (PaliGemma, π0, RT-2);
    -2: the second-to-last layer's raw output (prismatic / OpenVLA)."""
    return {
        "hf": {
            "model_type": "siglip_vision_model",
            "hidden_size": width,
            "intermediate_size": mlp,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": size,
            "patch_size": patch,
        },
        "feature_layer": feature_layer,
    }


# The CPU-sized Gemma of rt2-tiny / pi0-tiny / pi0-fast-tiny (vocab_size is filled at build).
TINY_GEMMA = lm_fields(
    "gemma-tiny",
    hidden_size=128,
    intermediate_size=512,
    num_layers=4,
    num_heads=4,
    num_kv_heads=1,
    head_dim=32,
    max_position=512,
)
# Tiny SigLIP: 32 px, patch 8 -> 16 tokens per camera, 3 layers, post-norm features (PaliGemma-style).
TINY_SIGLIP = siglip_spec(32, 8, 64, 3, 2, 128)
# PaliGemma-3B's parts: SigLIP So400m/14-224 (post-norm) and Gemma-2B with its 257152-id vocabulary.
SIGLIP_SO400M = siglip_spec(224, 14, 1152, 27, 16, 4304)
PALIGEMMA_LM = lm_fields("gemma-2b", vocab_size=257152)
# The config fields of a PaliGemma-3B backbone with its own tokenizer.json (BOS id 2 first): rt2, pi0, pi0-fast.
PALIGEMMA = {"lm": PALIGEMMA_LM, "vision": {"siglip": SIGLIP_SO400M}, "language": "hf", "bos_token_id": 2}


# The recipes on pretrained parts (issue 16, docs/pretrained.md "Recipes"): SmolLM2-135M-Instruct cut to
# its first 15 of 30 layers (SmolVLA keeps the first half of SmolVLM's LM) with its own tokenizer, and a
# frozen ImageNet EfficientNet-Lite0 (128 px -> 16 tokens of 320 channels per camera; frozen: the CPU
# budget). `lm` is read from the source at build (`with_pretrained_lm`); no BOS before the prompt.
SMOL_LM_LAYERS = 15
SMOL_LITE0 = {
    "pretrained": {"lm": SMOLLM2, "lm_layers": SMOL_LM_LAYERS, "vision": LITE0},
    "language": "hf",
    "vision": {"lite0": lite0_spec(128)},
}
# SmolVLA's optimizer (lr 1e-4, weight decay 1e-10) at a CPU batch.
SMOL_TRAIN = train_defaults(1e-4, 16, warmup_steps=100, weight_decay=1e-10)


def config_from_dataset(
    config_class: type[ConfigT], recipe: VLARecipe, dataset: Any, overrides: dict[str, Any], **fields: Any
) -> ConfigT:
    """``config_class`` of `recipe` with the embodiment read from `dataset`.

    Precedence, lowest first: the embodiment, `fields` (derived from the dataset, e.g. gripper
    dimensions), the recipe's own fields, then the non-None `overrides` (config fields, or
    ``camera_names=[...]`` to choose the cameras). A ``pretrained`` override is merged key by key into
    the recipe's (`policies.pretrained.merge_pretrained`).
    """
    overrides = dict(overrides)
    if "pretrained" in recipe.model and overrides.get("pretrained") is not None:
        overrides["pretrained"] = merge_pretrained(recipe.model["pretrained"], overrides["pretrained"])
    base: dict[str, Any] = {
        "recipe": recipe.name,
        **dataset_embodiment(dataset, overrides.pop("camera_names", None), cameras=recipe.cameras),
        **fields,
        **recipe.model,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return config_class(**base)


def with_pretrained_lm(cfg: ConfigT, tokenizer_dir: str | Path | None) -> tuple[ConfigT, str | Path | None]:
    """A recipe on a pretrained LM (``cfg.pretrained["lm"]``): its ``lm`` fields read from the source (cut
    to ``lm_layers``), and the source's directory as the tokenizer directory unless one is given.
    Other configs are returned as they are. The weights load after the build (`load_pretrained_parts`)."""
    pretrained = getattr(cfg, "pretrained", None) or {}
    if pretrained.get("lm") is None:
        return cfg, tokenizer_dir
    lm, directory = pretrained_lm_fields(pretrained)
    return cfg.replace(lm=lm), tokenizer_dir if tokenizer_dir is not None else directory  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- normalizer and tokenizer
def normalized_action_mask(cfg: Any) -> np.ndarray:
    """(A,) bool: False for the config's ``unnormalized_action_dims`` (grippers), True elsewhere."""
    mask = np.ones(cfg.action_dim, dtype=bool)
    for d in cfg.unnormalized_action_dims:
        mask[d] = False
    return mask


def recipe_normalizer(cfg: Any, stats: dict[str, Any], *, clip: bool = False) -> Normalizer:
    """The config's state/action normalization from dataset statistics (clip: to [-1, 1], q01/q99 recipes)."""
    return Normalizer.from_dataset_stats(
        stats,
        {STATE_KEY: cfg.state_norm, ACTION_KEY: cfg.action_norm},
        masks={ACTION_KEY: normalized_action_mask(cfg)},
        clip=clip,
    )


def require_tokenizer_dir(cfg: Any, tokenizer_dir: str | Path | None, checkpoint: str = "checkpoint") -> Path:
    """A ``language="hf"`` recipe needs a local directory with the checkpoint's tokenizer.json."""
    if tokenizer_dir is None:
        raise ValueError(
            f"recipe '{cfg.recipe}' uses its checkpoint's tokenizer: pass tokenizer_dir=DIR (a local "
            f"directory with tokenizer.json, e.g. the downloaded {checkpoint})"
        )
    return Path(tokenizer_dir)


def prompt_tokenizer(
    cfg: Any,
    prompts: Iterable[str],
    tokenizer_dir: str | Path | None,
    *,
    reserved: Sequence[str] = (),
    checkpoint: str = "checkpoint",
) -> PromptTokenizer:
    """``language="words"``: a word vocabulary of `prompts` (+ `reserved` words); ``"hf"``: the
    checkpoint's tokenizer.json from `tokenizer_dir` (`prompts` are then not read)."""
    if cfg.language == "words":
        return WordPromptTokenizer.build(prompts, reserved=reserved)
    return HFPromptTokenizer.from_file(require_tokenizer_dir(cfg, tokenizer_dir, checkpoint))
