"""The π0.5 recipes: ``pi05-tiny`` (CPU size, tests, Meta-World) and ``pi05`` (published shapes).

``make_pi05_policy(recipe, dataset)`` fills the embodiment (all cameras, state/action sizes, fps) and
the q01/q99 statistics from the dataset, fits the FAST tokenizer on the dataset's action chunks (as
π0-FAST: ``fast_recipes.fit_fast_tokenizer``) and, for ``language="words"``, builds a word vocabulary of
the prompts (with the integers "0".."255" for the state, "Action: |", "Subtask: ;" and the subtask
texts) and sizes the LM vocabulary as ``n_words + n_fast``. The π0 recipe table (``pi0/recipes.py``)
routes these names here, so ``vlaforge train --recipe pi05-tiny`` works like any other recipe.

Subtask texts: ``subtasks=[...]``, else ``dataset.subtasks`` or ``dataset.meta.subtasks`` (a list, or a
dict like ``meta.tasks``). When there are any, the policy is built with ``predict_subtask=True`` (train
on ``batch["subtask"]``, decode a subtask before the actions) and their words join the vocabulary.

* ``pi05-tiny``: ``pi0-tiny``'s towers (tiny SigLIP 32 px, 16 tokens per camera -> 4-layer Gemma width
  128 + expert width 64), adaRMS time conditioning, FAST tokens on the last LM ids, knowledge
  insulation, α = 10; chunk 8 (Meta-World's 80 Hz); prompt budget 48 words.
* ``pi05-smol``: ``pi0-smol``'s pretrained parts (frozen Lite0 -> SmolLM2-135M cut to 15 layers, its
  tokenizer) with π0.5's changes: state as text, adaRMS expert (288 / 768), FAST tokens on SmolLM2's last
  1024 vocabulary ids (cross-entropy through the backbone) + α·flow with knowledge insulation; chunk 8,
  prompt budget 64 subword tokens (SmolLM2 writes each digit of the state as its own token).
* ``pi05``: SigLIP So400m/14-224 -> Linear -> PaliGemma's Gemma-2B (vocabulary 257152, BOS 2) + expert
  1024 / 4096 (openpi's gemma_300m), chunk 50, prompt budget 200 tokens (openpi's pi05
  ``max_token_len``), FAST ids below PaliGemma's last 128 ids. Needs the checkpoint's
  ``tokenizer.json`` from a local directory (``tokenizer_dir=``). Never built in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    with_pretrained_lm,
)
from vlaforge.policies.pi0.fast_recipes import fast_token_policy
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer
from vlaforge.policies.pi0.pi05_config import SUBTASK_END, SUBTASK_PROMPT, Pi05Config
from vlaforge.policies.pi0.pi05_policy import Pi05Policy
from vlaforge.policies.pretrained import load_pretrained_parts

_CHECKPOINT = "PaliGemma / π0.5 checkpoint"

PI05_RECIPES: dict[str, VLARecipe] = {
    r.name: r
    for r in [
        VLARecipe(
            "pi05-tiny",
            "π0.5 + knowledge insulation at CPU size: tiny SigLIP -> linear -> 4-layer Gemma (width 128) + "
            "adaRMS action expert (width 64); state as text, FAST tokens (CE) + flow (α = 10), chunk 8",
            {
                "chunk": 8,
                "lm": TINY_GEMMA,
                "expert_width": 64,
                "expert_mlp_dim": 256,
                "vision": {"siglip": TINY_SIGLIP},
                "text_max_len": 48,
                "subtask_max_len": 12,
            },
            TINY_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "pi05-smol",
            "π0.5 + knowledge insulation on pretrained parts, CPU-trainable: pi0-smol's frozen Lite0 -> "
            "SmolLM2-135M (15 of 30 layers) + adaRMS expert (288 / 768); FAST tokens on SmolLM2's last "
            "ids (CE) + flow (α = 10), chunk 8",
            {
                "chunk": 8,
                **SMOL_LITE0,
                "expert_width": 288,
                "expert_mlp_dim": 768,
                "text_max_len": 64,
                "subtask_max_len": 16,
            },
            SMOL_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "pi05",
            "π0.5 + knowledge insulation: SigLIP So400m/14-224 -> linear -> PaliGemma Gemma-2B + adaRMS "
            "action expert (1024 / 4096), FAST tokens + flow, chunk 50; weights from local files only",
            {
                "chunk": 50,
                **PALIGEMMA,
                "expert_width": 1024,
                "expert_mlp_dim": 4096,
                "text_max_len": 200,
                "fast_skip_tokens": 128,
                "subtask_max_len": 32,
            },
            PI0_TRAIN,
            cameras="all",
        ),
    ]
}  # fmt: skip


def get_pi05_recipe(name: str) -> VLARecipe:
    return get_from(PI05_RECIPES, name, "π0.5")


def pi05_config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> Pi05Config:
    """Pi05Config for `recipe` with the embodiment read from a dataset (all its cameras)."""
    return config_from_dataset(Pi05Config, get_pi05_recipe(recipe), dataset, overrides)


def dataset_subtasks(dataset: Any) -> list[str]:
    """The subtask texts a dataset declares (``dataset.subtasks`` or ``dataset.meta.subtasks``: a list, or
    a dict of index -> text / text -> index like ``meta.tasks``); [] when it declares none."""
    for owner in (dataset, getattr(dataset, "meta", None)):
        found = getattr(owner, "subtasks", None) if owner is not None else None
        if found is None:
            continue
        if isinstance(found, dict):
            found = found.values() if all(isinstance(k, int) for k in found) else found.keys()
        return [str(t) for t in found if str(t).strip()]
    return []


def make_pi05_policy(
    recipe: str,
    dataset: Any,
    *,
    tokenizer_dir: str | Path | None = None,
    fast_tokenizer: FastTokenizer | None = None,
    subtasks: Sequence[str] | None = None,
    **overrides: Any,
):
    """Build an untrained π0.5 policy for `dataset` (statistics, FAST tokenizer, vocabulary, sizes).

    tokenizer_dir: the full-size recipe's local checkpoint directory holding ``tokenizer.json``.
    fast_tokenizer: use this (already fitted) tokenizer instead of fitting one on the dataset.
    subtasks: the subtask texts of the dataset's ``"subtask"`` labels (default: `dataset_subtasks`);
        any -> ``predict_subtask=True`` unless overridden.
    overrides: Pi05Config fields (e.g. ``knowledge_insulation=False``), or ``camera_names=[...]``.
    """
    texts = list(subtasks) if subtasks is not None else dataset_subtasks(dataset)
    if texts and overrides.get("predict_subtask") is None:
        overrides["predict_subtask"] = True
    cfg = pi05_config_from_dataset(recipe, dataset, **overrides)
    cfg, tokenizer_dir = with_pretrained_lm(cfg, tokenizer_dir)  # pi05-smol: SmolLM2's shape and tokenizer
    policy = fast_token_policy(
        Pi05Policy,
        cfg,
        dataset,
        tokenizer_dir=tokenizer_dir,
        fast_tokenizer=fast_tokenizer,
        checkpoint=_CHECKPOINT,
        vocab_texts=[SUBTASK_PROMPT + SUBTASK_END, *texts],
    )
    load_pretrained_parts(cfg.pretrained, lm=policy.backbone, vision=policy.vision_tower)
    return policy
