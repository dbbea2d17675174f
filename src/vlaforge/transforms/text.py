"""Instruction augmentation for training: random word deletion (EDA's "random deletion").

A LIBERO suite gives one instruction per task, so a policy can learn to key on the exact token
sequence; reworded instructions (LIBERO-PRO's `_lan` suites) then fail. Deleting each word with
probability ``p`` during training shows the policy the same task under many shorter phrasings, so
no single word or position decides it. It is generic: no synonyms, no word lists, nothing tuned to
a test set.

The randomness comes from Python's ``random`` module, which the trainer seeds per sample from
(seed, step, index) (`train.sampler.StepSeededDataset`): the same run sees the same instructions,
whatever the number of loader workers and after a resume.
"""

from __future__ import annotations

import random
from typing import Any


def _check_p(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word dropout p={p}: must be in [0, 1)")


def drop_words(text: str, p: float, rng: random.Random | None = None) -> str:
    """``text`` with each whitespace-separated word deleted with probability ``p``; never all of them
    (if every word would go, one of them, chosen at random, stays). ``p = 0`` returns ``text``."""
    _check_p(p)
    words = text.split()
    if p == 0.0 or len(words) < 2:
        return text
    r = rng if rng is not None else random
    kept = [w for w in words if r.random() >= p]
    if not kept:
        kept = [words[r.randrange(len(words))]]
    return " ".join(kept)


class WordDropoutDataset:
    """``dataset[i]`` with its ``"task"`` instruction passed through :func:`drop_words`.

    Meant to sit inside `StepSeededDataset` (which seeds ``random`` per sample); everything else of
    the item is returned unchanged.
    """

    def __init__(self, dataset: Any, p: float):
        _check_p(p)
        self.dataset, self.p = dataset, p

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        if isinstance(item, dict) and isinstance(item.get("task"), str):
            item = {**item, "task": drop_words(item["task"], self.p)}
        return item
