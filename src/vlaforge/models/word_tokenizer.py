"""A tiny word-level tokenizer built offline from the instructions of a dataset.

Robot datasets have few distinct instructions ("open the drawer", "push the puck to the goal"),
so a vocabulary of their words is enough for a from-scratch language encoder, needs no download,
and serializes to a few lines of JSON stored in the checkpoint's config.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

PAD, UNK = "<pad>", "<unk>"
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lowercase and split into words and single punctuation marks: "Open it!" -> ["open", "it", "!"]."""
    return _TOKEN_RE.findall(text.lower())


class WordTokenizer:
    """Word -> id mapping with ``<pad>`` = 0 and ``<unk>`` = 1.

    Build with :meth:`build` from the training instructions; words not seen there map to
    ``<unk>`` at inference (and are counted by :meth:`unknown_words` so callers can warn).
    """

    version = 1

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if vocab[:2] != [PAD, UNK]:
            raise ValueError(f"WordTokenizer vocab must start with [{PAD!r}, {UNK!r}], got {vocab[:2]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("WordTokenizer vocab has duplicate entries")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    pad_id = 0
    unk_id = 1

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_vocab: int | None = None) -> WordTokenizer:
        """Vocabulary of the words in ``texts``, most frequent first (ties alphabetical, so it is deterministic)."""
        counts = Counter(w for t in texts for w in split_words(t))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[: max(0, max_vocab - 2)]
        return cls([PAD, UNK, *words])

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included (the LanguageEncoder's ``vocab_size``)."""
        return len(self.vocab)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in split_words(text) if w not in self.index]

    def encode(self, texts: str | Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """texts (B strings) -> ids (B, max_len) long, mask (B, max_len) bool (True = real token).

        Longer texts are truncated to ``max_len`` words; shorter ones are right-padded with ``<pad>``.
        A single string is treated as a batch of one.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        ids = torch.full((len(texts), max_len), self.pad_id, dtype=torch.long)  # (B, L)
        mask = torch.zeros(len(texts), max_len, dtype=torch.bool)  # (B, L)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
            tok = [self.index.get(w, self.unk_id) for w in split_words(text)][:max_len]
            ids[i, : len(tok)] = torch.tensor(tok, dtype=torch.long)
            mask[i, : len(tok)] = True
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join(self.vocab[i] for i in ids if i != self.pad_id)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "version": self.version, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WordTokenizer:
        if not isinstance(d, dict) or d.get("type") != "word" or "vocab" not in d:
            raise ValueError(
                "not a WordTokenizer state: expected a dict with type='word' and a 'vocab' list, "
                f"got keys {sorted(d) if isinstance(d, dict) else type(d).__name__}"
            )
        if d.get("version", 1) > cls.version:
            raise ValueError(
                f"WordTokenizer state version {d['version']} is newer than supported ({cls.version})"
            )
        return cls(d["vocab"])
