"""Prompt tokenizers for the pretrained-LM policies: prompts -> LEFT-padded ids (B, L) + validity mask.

Left padding keeps the last prompt token real in every row, which generation needs: each generated
token reads what the last prompt token reads (``lm.generate``). Positions are counted over real
tokens only, so padding changes nothing but the shapes.

* :class:`WordPromptTokenizer` (tiny recipes): the word-level vocabulary of
  :mod:`vlaforge.models.word_tokenizer` built from the dataset's prompts, optionally with reserved
  words (RT-2's integer tokens "0".."255"); serializes into config.json.
* :class:`HFPromptTokenizer` (full-size recipes): a checkpoint's ``tokenizer.json`` through the
  ``tokenizers`` library, without special tokens: the policy puts the BOS embedding (config
  ``bos_token_id``) before the image tokens, where prismatic / OpenVLA have it.

Prompt budget: :func:`fit_prompts` encodes prompts into ``max_len`` tokens (``text_max_len``); a
prompt that does not fit has its *instruction* shortened to the longest run of leading words that
fits (``overflow="truncate"``) or is refused with a ValueError (``"error"``). The template's fixed
parts ("In: What action should the robot take to ...?\\nOut:", π0-FAST's ", State: ...;") are never
cut: the action tokens follow the prompt's end, and π0-FAST's state lives in it. (The tokenizers'
own ``encode`` keeps a too-long row's *end*; :func:`fit_prompts` never lets it get that far.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from vlaforge.models.word_tokenizer import PAD, UNK, WordTokenizer, split_words

TOKENIZER_FILE = "tokenizer.json"
# A pretrained-LM config's prompt_overflow: what an instruction too long for the prompt budget
# (text_max_len tokens) does: shortened to its leading words that fit, with a warning, or a ValueError.
PROMPT_OVERFLOW = ("truncate", "error")


class PromptTokenizer(Protocol):
    vocab_size: int

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def token_id(self, token: str) -> int | None: ...


def _left_pad(rows: list[list[int]], max_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)  # (B, L)
    valid = torch.zeros(len(rows), max_len, dtype=torch.bool)  # (B, L)
    for i, row in enumerate(rows):
        if row:
            ids[i, max_len - len(row) :] = torch.tensor(row, dtype=torch.long)
            valid[i, max_len - len(row) :] = True
    return ids, valid


class WordPromptTokenizer:
    """Word vocabulary of the prompts (``<pad>`` = 0, ``<unk>`` = 1) plus reserved words."""

    def __init__(self, words: WordTokenizer):
        self.words = words
        self.vocab_size = words.vocab_size

    @classmethod
    def build(cls, prompts: Iterable[str], reserved: Sequence[str] = ()) -> WordPromptTokenizer:
        """reserved: words that must have their own id even if no prompt uses them (RT-2's "0".."255")."""
        base = WordTokenizer.build(prompts).vocab
        present = set(base)
        extra = [w for w in reserved if w not in present]
        for w in extra:
            if split_words(w) != [w]:
                raise ValueError(f"reserved word {w!r} is not a single word token")
        return cls(WordTokenizer([*base, *extra]))

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [
            [self.words.index.get(w, self.words.unk_id) for w in split_words(t)][-max_len:] for t in texts
        ]
        return _left_pad(rows, max_len, self.words.pad_id)

    def token_id(self, token: str) -> int | None:
        i = self.words.index.get(token)
        return None if i is None or token in (PAD, UNK) else i

    def unknown_words(self, text: str) -> list[str]:
        return self.words.unknown_words(text)

    def to_dict(self) -> dict[str, Any]:
        return self.words.to_dict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WordPromptTokenizer:
        return cls(WordTokenizer.from_dict(d))


class HFPromptTokenizer:
    """A Hugging Face ``tokenizer.json`` (Llama / Gemma) through the ``tokenizers`` library."""

    def __init__(self, tokenizer: Any, *, pad_id: int = 0):
        self.tok = tokenizer
        self.pad_id = pad_id
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))

    @classmethod
    def from_file(cls, path: str | Path) -> HFPromptTokenizer:
        """path: a tokenizer.json file or a checkpoint directory holding one (local only)."""
        from tokenizers import Tokenizer

        p = Path(path)
        f = p / TOKENIZER_FILE if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(
                f"{f}: no {TOKENIZER_FILE}; the full-size VLA recipes read the checkpoint's fast tokenizer "
                "from a local directory (download it with the model)"
            )
        return cls(Tokenizer.from_file(str(f)))

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for enc in self.tok.encode_batch(list(texts), add_special_tokens=False):
            rows.append(list(enc.ids)[-max_len:])
        return _left_pad(rows, max_len, self.pad_id)

    def token_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def save(self, directory: str | Path) -> None:
        self.tok.save(str(Path(directory) / TOKENIZER_FILE))


# ---------------------------------------------------------------------- prompt budget
@dataclass
class FittedPrompts:
    """Prompts encoded within a token budget.

    ids, valid: (B, L) left-padded, exactly ``tokenizer.encode(prompts, L)`` of the fitted prompts;
    truncated: (instruction, kept words) of each row whose instruction was shortened.
    """

    ids: torch.Tensor
    valid: torch.Tensor
    truncated: list[tuple[str, str]] = field(default_factory=list)


def count_tokens(tokenizer: PromptTokenizer, text: str) -> int:
    """How many ids `text` encodes to (no truncation: every token takes at least one UTF-8 byte)."""
    _, valid = tokenizer.encode([text], len(text.encode()) + 1)
    return int(valid.sum())


def fit_prompts(
    tokenizer: PromptTokenizer,
    instructions: Sequence[str],
    render: Callable[[int, str], str],
    max_len: int,
    overflow: str = "truncate",
) -> FittedPrompts:
    """Encode ``render(i, instructions[i])`` into (B, max_len) ids, shortening only the instruction.

    render(i, instruction) -> row i's whole prompt (the template's fixed parts around the instruction;
    π0-FAST's also hold row i's state). A prompt that does not fit: ``overflow="truncate"`` keeps the
    instruction's longest run of leading (whitespace-separated) words that fits; ``"error"`` raises a
    ValueError with the instruction's token count and the budget. Prompts that fit encode exactly as
    ``tokenizer.encode(prompts, max_len)``; one encode call checks them all.
    """
    if overflow not in PROMPT_OVERFLOW:
        raise ValueError(f"prompt_overflow={overflow!r}: choose one of {PROMPT_OVERFLOW}")
    instructions = [str(t) for t in instructions]
    prompts = [render(i, t) for i, t in enumerate(instructions)]
    ids, valid = tokenizer.encode(prompts, max_len + 1)  # (B, L + 1): a real first slot = too long
    too_long = valid[:, 0].tolist()
    if not any(too_long):
        return FittedPrompts(ids[:, 1:], valid[:, 1:])

    def fits(text: str) -> bool:
        return not bool(tokenizer.encode([text], max_len + 1)[1][0, 0])

    truncated = []
    for i in (i for i, over in enumerate(too_long) if over):
        t = instructions[i]
        n_fixed = count_tokens(tokenizer, render(i, ""))
        n_instruction = count_tokens(tokenizer, prompts[i]) - n_fixed
        room = max_len - n_fixed
        if overflow == "error" or room < 0:
            fix = (
                "shorten the instruction, raise text_max_len, or set prompt_overflow='truncate'"
                if room >= 0
                else "raise text_max_len: the template alone does not fit"
            )
            raise ValueError(
                f"instruction {t[:80]!r}{'...' if len(t) > 80 else ''} takes {n_instruction} prompt tokens but "
                f"the prompt budget leaves it {max(room, 0)} (text_max_len={max_len}, of which the "
                f"template's fixed parts take {n_fixed}); {fix}"
            )
        words = t.split()
        lo, hi = 0, len(words)  # the longest fitting prefix of words: fits(lo) holds, fits(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(render(i, " ".join(words[:mid]))):
                lo = mid
            else:
                hi = mid
        kept = " ".join(words[:lo])
        prompts[i] = render(i, kept)
        truncated.append((t, kept))
    ids, valid = tokenizer.encode(prompts, max_len)  # (B, L)
    return FittedPrompts(ids, valid, truncated)
