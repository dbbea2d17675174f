"""The π0-FAST recipes: ``pi0-fast-tiny`` (CPU size, tests) and ``pi0-fast`` (published shapes).

``make_pi0_fast_policy(recipe, dataset)`` fills the embodiment (all cameras, state/action sizes, fps)
and the q01/q99 statistics from the dataset, **fits the FAST tokenizer on the dataset's action
chunks** (at most ``fast_fit_chunks`` of them, a fixed-seed sample: the same dataset gives the same
tokenizer) and, for ``language="words"``, builds a word-level vocabulary of the π0-FAST prompts
(plus the integers "0".."255" for the state) and sizes the LM vocabulary as
``n_words + n_fast``, the FAST ids being the last ``n_fast`` (``Pi0FastPolicy`` docstring). The π0
recipe table (``pi0/recipes.py``) routes these names here, so ``vlaforge train --recipe
pi0-fast-tiny`` works like any other recipe.

* ``pi0-fast-tiny``: tiny random SigLIP (32 px, patch 8 -> 16 tokens per camera, post-norm) -> Linear
  -> 4-layer Gemma (width 128, MLP 512, 4 heads, 1 KV head, head_dim 32), as ``pi0-tiny`` without the
  action expert; chunk 8 (0.1 s at Meta-World's 80 Hz; FAST gives ~6 tokens per chunk there, see
  docs/recipes.md), at most 64 generated tokens.
* ``pi0-fast``: SigLIP So400m/14-224 -> Linear -> PaliGemma's Gemma-2B (vocabulary 257152, BOS 2),
  FAST ids below PaliGemma's last 128 ids (openpi's ``fast_skip_tokens``), at most 256 generated tokens
  (openpi's ``max_decoding_steps``), chunk 50. Needs the checkpoint's ``tokenizer.json`` from a local
  directory (``tokenizer_dir=``). Never built in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.policies.embodiment import task_texts
from vlaforge.policies.lm_recipes import (
    PALIGEMMA,
    PI0_TRAIN,
    TINY_GEMMA,
    TINY_SIGLIP,
    TINY_TRAIN,
    VLARecipe,
    config_from_dataset,
    get_from,
    normalized_action_mask,
    prompt_tokenizer,
    recipe_normalizer,
    require_tokenizer_dir,
)
from vlaforge.policies.pi0.fast_config import (
    ACTION_PROMPT,
    END_TOKEN,
    PREFIX_TEMPLATE,
    Pi0FastConfig,
    clean_instruction,
)
from vlaforge.policies.pi0.fast_policy import Pi0FastPolicy
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer
from vlaforge.types import ACTION_KEY

_CHECKPOINT = "PaliGemma / π0-FAST checkpoint"

PI0_FAST_RECIPES: dict[str, VLARecipe] = {
    r.name: r
    for r in [
        VLARecipe(
            "pi0-fast-tiny",
            "π0-FAST at CPU size: tiny SigLIP -> linear -> 4-layer Gemma (width 128); FAST action tokens "
            "(DCT + BPE fitted on the dataset), prefix-LM cross-entropy, cached greedy decoding; chunk 8",
            {
                "chunk": 8,
                "lm": TINY_GEMMA,
                "vision": {"siglip": TINY_SIGLIP},
                "text_max_len": 48,
                "max_decode_tokens": 64,
            },
            TINY_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "pi0-fast",
            "π0-FAST as published: SigLIP So400m/14-224 -> linear -> PaliGemma Gemma-2B; FAST tokens on the "
            "vocabulary's last ids (skipping 128), chunk 50; weights from local files only",
            {
                "chunk": 50,
                **PALIGEMMA,
                "text_max_len": 200,
                "fast_skip_tokens": 128,
                "max_decode_tokens": 256,
            },
            PI0_TRAIN,
            cameras="all",
        ),
    ]
}  # fmt: skip


def get_pi0_fast_recipe(name: str) -> VLARecipe:
    return get_from(PI0_FAST_RECIPES, name, "π0-FAST")


def pi0_fast_config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> Pi0FastConfig:
    """Pi0FastConfig for `recipe` with the embodiment read from a dataset (all its cameras)."""
    return config_from_dataset(Pi0FastConfig, get_pi0_fast_recipe(recipe), dataset, overrides)


def dataset_action_chunks(dataset: Any, horizon: int, max_chunks: int, seed: int = 0) -> np.ndarray:
    """Action chunks (N, H, A) of a dataset, N = min(len, max_chunks), for fitting the FAST tokenizer.

    The chunk of frame t is the actions t .. t+H-1 exactly as training sees them (the last action
    repeated past the episode end). More frames than ``max_chunks``: a sample without replacement drawn
    with ``seed``, in index order, so the result is a function of the dataset and the arguments only. A
    dataset with ``actions_only(H)`` (a ``vlaforge.data.Dataset``) is read through it: re-opened without
    cameras and with ``chunk=H``, so no video is decoded; anything else is indexed as it is.
    """
    if hasattr(dataset, "dataset_dims"):  # a MixtureDataset (what make_mixture_policy reads)
        raise ValueError("π0-FAST does not support dataset mixtures yet: fit the tokenizer on one dataset")
    actions_only = getattr(dataset, "actions_only", None)
    source = dataset if actions_only is None else actions_only(horizon)
    n = len(source)
    if n == 0:
        raise ValueError("the dataset is empty: no action chunks to fit the FAST tokenizer on")
    idx = np.arange(n)
    if n > max_chunks:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_chunks, replace=False))
    chunks = []
    for i in idx.tolist():
        a = np.asarray(source[i][ACTION_KEY], dtype=np.float64)
        a = a.reshape(1, -1) if a.ndim == 1 else a  # chunk 1: (A,) -> (1, A)
        if a.shape[0] != horizon:
            raise ValueError(
                f"dataset item {i} has an action chunk of {a.shape[0]} steps, the recipe's chunk is {horizon}; "
                f"open the dataset with chunk={horizon}"
            )
        chunks.append(a)
    return np.stack(chunks)  # (N, H, A)


def fit_fast_tokenizer(cfg: Pi0FastConfig, dataset: Any, action_mask: np.ndarray) -> FastTokenizer:
    """The FAST tokenizer of `cfg` fitted on the dataset's chunks with its q01/q99 action statistics."""
    chunks = dataset_action_chunks(dataset, cfg.chunk, cfg.fast_fit_chunks, cfg.fast_fit_seed)
    stats = dataset.stats[ACTION_KEY]
    tok = FastTokenizer.fit(
        chunks,
        vocab_size=cfg.fast_vocab_size,
        scale=cfg.fast_scale,
        stats={"q01": stats["q01"], "q99": stats["q99"]},
        mask=None if action_mask.all() else action_mask,
    )
    return tok


def make_pi0_fast_policy(
    recipe: str,
    dataset: Any,
    *,
    tokenizer_dir: str | Path | None = None,
    fast_tokenizer: FastTokenizer | None = None,
    **overrides: Any,
):
    """Build an untrained π0-FAST policy for `dataset` (statistics, FAST tokenizer, vocabulary, sizes).

    tokenizer_dir: the full-size recipe's local checkpoint directory holding ``tokenizer.json``.
    fast_tokenizer: use this (already fitted) tokenizer instead of fitting one on the dataset.
    overrides: Pi0FastConfig fields (e.g. ``chunk=4``), or ``camera_names=[...]`` to choose the cameras.
    """
    cfg = pi0_fast_config_from_dataset(recipe, dataset, **overrides)
    return fast_token_policy(
        Pi0FastPolicy,
        cfg,
        dataset,
        tokenizer_dir=tokenizer_dir,
        fast_tokenizer=fast_tokenizer,
        checkpoint=_CHECKPOINT,
    )


def fast_token_policy(
    policy_class: Any,
    cfg: Any,
    dataset: Any,
    *,
    tokenizer_dir: str | Path | None,
    fast_tokenizer: FastTokenizer | None,
    checkpoint: str,
    vocab_texts: Sequence[str] = (),
) -> Any:
    """What π0-FAST and π0.5 build the same way: the q01/q99 normalizer, the FAST tokenizer (fitted on the
    dataset unless given), the prompt tokenizer over the FAST prompts, ``"Action: |"`` and ``vocab_texts``
    (the state integers reserved), and with ``language="words"`` an LM vocabulary of words + FAST ids.

    policy_class: `Pi0FastPolicy` or `Pi05Policy`, called as (cfg, normalizer, tokenizer, fast_tokenizer).
    """
    normalizer = recipe_normalizer(cfg, dataset.stats, clip=True)
    if cfg.language == "hf":  # before the (slower) FAST tokenizer fit
        require_tokenizer_dir(cfg, tokenizer_dir, checkpoint)
    if fast_tokenizer is None:
        fast_tokenizer = fit_fast_tokenizer(cfg, dataset, normalized_action_mask(cfg))
    prompts = [
        PREFIX_TEMPLATE.format(instruction=clean_instruction(t), state="") for t in task_texts(dataset)
    ]
    tokenizer = prompt_tokenizer(
        cfg,
        [*prompts, ACTION_PROMPT + END_TOKEN, *vocab_texts],
        tokenizer_dir,
        reserved=[str(b) for b in range(cfg.state_bins)],
        checkpoint=checkpoint,
    )
    if cfg.language == "words":
        vocab = tokenizer.vocab_size + fast_tokenizer.vocab_size + cfg.fast_skip_tokens
        cfg = cfg.replace(lm={**cfg.lm, "vocab_size": vocab})
    return policy_class(cfg, normalizer, tokenizer, fast_tokenizer)
