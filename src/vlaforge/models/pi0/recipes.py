"""The π0 recipes: ``pi0-tiny`` (CPU size, tests), ``pi0-small`` (benchmarks) and ``pi0`` (published shapes).

``make_pi0_policy(recipe, dataset)`` fills the embodiment (all cameras, state/action sizes, fps), the
mean/std statistics and (``language="words"``) a word-level prompt vocabulary from the dataset; it
is what ``models.recipes.make_policy`` calls for these names, so ``vlaforge train --recipe pi0-tiny``
works like any other recipe.

* ``pi0-tiny``: tiny random SigLIP (32 px, patch 8 -> 16 tokens per camera, post-norm features) ->
  Linear -> 4-layer Gemma (width 128, MLP 512, 4 heads, 1 KV head, head_dim 32) + expert (width 64,
  MLP 256); chunk 8 (0.1 s at Meta-World's 80 Hz: execute 4, re-plan), 10 Euler steps.
* ``pi0-small``: SigLIP 64 px / patch 8 (64 tokens per camera, width 256, 4 layers) -> Gemma
  width 512, depth 8, MLP 2048, 8 heads of 64, 1 KV head + expert width 256, MLP 1024; chunk 8.
  A mid-size model for the cache benchmark (``benchmarks/bench_pi0_cache.py``); random init.
* ``pi0``: π0 as published: SigLIP So400m/14-224 (256 tokens per camera) -> Linear -> PaliGemma's
  Gemma-2B (width 2048, depth 18, MLP 16384, 8 heads, 1 KV head, head_dim 256, vocabulary 257152)
  + expert (width 1024, MLP 4096, same depth / heads), chunk 50, state/actions padded to 32. Needs
  the checkpoint's ``tokenizer.json`` from a local directory (``tokenizer_dir=``); the Gemma weights
  load with ``policy.load_backbone(paligemma_dir, config=cfg["text_config"])``. Never built in tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vlaforge.models.lm import lm_preset
from vlaforge.models.pi0.config import Pi0Config
from vlaforge.models.vla.recipes import VLARecipe
from vlaforge.models.vla.text import HFPromptTokenizer, PromptTokenizer, WordPromptTokenizer
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY


def _siglip(size: int, patch: int, width: int, layers: int, heads: int, mlp: int) -> dict[str, Any]:
    """A SigLIP vision tower spec; π0 / PaliGemma read the post-norm last layer (feature_layer None)."""
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
        "feature_layer": None,
    }


def _gemma(**changes: Any) -> dict[str, Any]:
    return dataclasses.asdict(lm_preset("gemma-tiny").replace(**changes))


_TINY_TRAIN = {
    "lr": 5e-4,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "grad_clip": 1.0,
    "ema_decay": 0.0,
    "batch_size": 32,
}

PI0_RECIPES: dict[str, VLARecipe] = {
    r.name: r
    for r in [
        VLARecipe(
            "pi0-tiny",
            "π0 layout at CPU size: tiny SigLIP -> linear -> 4-layer Gemma (width 128) + action expert (width 64) "
            "with joint attention; flow matching, chunk 8, 10 Euler steps, prefix KV cache",
            {
                "chunk": 8,
                "lm": _gemma(hidden_size=128, intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=1,
                             head_dim=32, max_position=512),
                "expert_width": 64,
                "expert_mlp_dim": 256,
                "vision": {"siglip": _siglip(32, 8, 64, 3, 2, 128)},
                "text_max_len": 16,
            },
            _TINY_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "pi0-small",
            "π0 layout, mid size: SigLIP 64 px (64 tokens/camera) -> Gemma width 512 / depth 8 + expert width 256",
            {
                "chunk": 8,
                "lm": _gemma(hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8, num_kv_heads=1,
                             head_dim=64, max_position=1024),
                "expert_width": 256,
                "expert_mlp_dim": 1024,
                "vision": {"siglip": _siglip(64, 8, 256, 4, 4, 1024)},
                "text_max_len": 16,
            },
            {**_TINY_TRAIN, "lr": 2.5e-4},
            cameras="all",
        ),
        VLARecipe(
            "pi0",
            "π0 as published: SigLIP So400m/14-224 -> linear -> PaliGemma Gemma-2B + 300M action expert "
            "(1024 / 4096), chunk 50, 10 Euler steps; weights from local files only",
            {
                "chunk": 50,
                "lm": dataclasses.asdict(lm_preset("gemma-2b").replace(vocab_size=257152)),
                "expert_width": 1024,
                "expert_mlp_dim": 4096,
                "vision": {"siglip": _siglip(224, 14, 1152, 27, 16, 4304)},
                "language": "hf",
                "bos_token_id": 2,
                "text_max_len": 48,
            },
            {"lr": 2.5e-5, "weight_decay": 1e-10, "warmup_steps": 1000, "grad_clip": 1.0, "ema_decay": 0.99,
             "batch_size": 32, "precision": "bf16"},
            cameras="all",
        ),
    ]
}  # fmt: skip


def get_pi0_recipe(name: str) -> VLARecipe:
    if name not in PI0_RECIPES:
        raise ValueError(f"unknown π0 recipe '{name}'; available: {sorted(PI0_RECIPES)}")
    return PI0_RECIPES[name]


def pi0_config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> Pi0Config:
    """Pi0Config for `recipe` with the embodiment read from a `vlaforge.data.Dataset` (all its cameras)."""
    r = get_pi0_recipe(recipe)
    feats = dataset.features
    for key in (STATE_KEY, ACTION_KEY):
        if key not in feats:
            raise ValueError(f"dataset has no '{key}' feature (features: {sorted(feats)})")
    cams = {
        k[len(IMAGE_PREFIX) :]: [int(feats[k]["shape"][0]), int(feats[k]["shape"][1])]
        for k in feats
        if k.startswith(IMAGE_PREFIX)
    }
    cameras = overrides.pop("camera_names", None) or list(cams)
    unknown = [c for c in cameras if c not in cams]
    if unknown or not cameras:
        raise ValueError(f"cameras {cameras} are not in the dataset (it has {sorted(cams)})")
    base: dict[str, Any] = {
        "recipe": recipe,
        "cameras": {c: cams[c] for c in cameras},
        "state_dim": int(feats[STATE_KEY]["shape"][0]),
        "action_dim": int(feats[ACTION_KEY]["shape"][0]),
        "fps": float(dataset.fps),
        **r.model,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Pi0Config(**base)


def make_pi0_policy(recipe: str, dataset: Any, *, tokenizer_dir: str | Path | None = None, **overrides: Any):
    """Build an untrained π0 policy for `dataset` (statistics, vocabulary and sizes come from it).

    tokenizer_dir: the full-size recipe's local checkpoint directory holding ``tokenizer.json``.
    overrides: Pi0Config fields (e.g. ``chunk=4``), or ``camera_names=[...]`` to choose the cameras.
    """
    from vlaforge.models.recipes import task_texts

    if recipe in PI0_FAST_RECIPES:  # π0-FAST: its own policy class, FAST tokenizer fitted on the dataset
        return make_pi0_fast_policy(recipe, dataset, tokenizer_dir=tokenizer_dir, **overrides)
    cfg = pi0_config_from_dataset(recipe, dataset, **overrides)
    return pi0_policy_from_config(cfg, dataset.stats, task_texts(dataset), tokenizer_dir=tokenizer_dir)


def pi0_policy_from_config(
    cfg: Pi0Config, stats: dict[str, Any], texts: list[str], *, tokenizer_dir: str | Path | None = None
):
    """Normalizer (mean/std) + prompt tokenizer + Pi0Policy (the tiny LM vocabulary sized here)."""
    import numpy as np

    from vlaforge.models.pi0.policy import Pi0Policy

    mask = np.ones(cfg.action_dim, dtype=bool)
    for d in cfg.unnormalized_action_dims:
        mask[d] = False
    normalizer = Normalizer.from_dataset_stats(
        stats, {STATE_KEY: cfg.state_norm, ACTION_KEY: cfg.action_norm}, masks={ACTION_KEY: mask}
    )
    tokenizer: PromptTokenizer
    if cfg.language == "words":
        tokenizer = WordPromptTokenizer.build([cfg.prompt.format(instruction=t) for t in texts])
        cfg = cfg.replace(lm={**cfg.lm, "vocab_size": tokenizer.vocab_size})
    else:
        if tokenizer_dir is None:
            raise ValueError(
                f"recipe '{cfg.recipe}' uses its checkpoint's tokenizer: pass tokenizer_dir=DIR (a local "
                "directory with tokenizer.json, e.g. the downloaded PaliGemma / π0 checkpoint)"
            )
        tokenizer = HFPromptTokenizer.from_file(tokenizer_dir)
    return Pi0Policy(cfg, normalizer, tokenizer)


# π0-FAST (models/pi0/fast_recipes.py) shares this registry, so get_recipe / make_policy / vlaforge train find it.
from vlaforge.models.pi0.fast_recipes import PI0_FAST_RECIPES, make_pi0_fast_policy  # noqa: E402

PI0_RECIPES.update(PI0_FAST_RECIPES)
