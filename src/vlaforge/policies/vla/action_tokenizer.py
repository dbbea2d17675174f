"""Discrete action tokens for RT-2 / OpenVLA: 256 bins per action dimension, one LM token per bin.

Actions are first normalized to [-1, 1] by the policy's :class:`~vlaforge.transforms.normalize.Normalizer`
(q01/q99, clipped; dimensions whose mask is False, e.g. the gripper, pass through unnormalized and
are clipped to [-1, 1] here, as OpenVLA does). Each value then becomes a bin index, and each bin a
token id of the language model's vocabulary. Two binnings:

* ``"uniform"`` (our default, RT-2's description): ``n_bins`` equal bins over [-1, 1], bin width
  ``2 / n_bins``; decoding returns the bin centre, so a round trip is off by at most half a bin.
* ``"openvla"``: the reference code's rule, needed to decode a released OpenVLA checkpoint. It
  digitizes against ``n_bins`` *edges* ``linspace(-1, 1, n_bins)`` (so there are ``n_bins - 1``
  intervals, width ``2 / (n_bins - 1)``), ``id = vocab_size - digitize(a)``, and decodes
  ``centres[clip(vocab_size - id - 1, 0, n_bins - 2)]``: 255 decodable centres for 256 ids.

Which ids (``token_ids[bin]``):

* OpenVLA: the last ``n_bins`` ids of the *tokenizer's* vocabulary, bin b -> ``vocab_size - 1 - b``
  (the highest bin gets the lowest id, as in the reference). :meth:`ActionTokenizer.last_ids`.
  For the released checkpoint ``vocab_size`` is the Llama tokenizer's 32000, not the padded
  embedding size 32064.
* RT-2 (PaLI-X): the vocabulary's own integer tokens "0" .. "255". :meth:`ActionTokenizer.integer_text`
  takes a lookup (e.g. a tokenizer's ``token_to_id``) and refuses a tokenizer that has no single
  token for one of them (Gemma splits numbers into digits: use reserved ids instead).
* Any explicit list of ids, e.g. PaliGemma's first 256 ``<locXXXX>`` tokens: :meth:`ActionTokenizer.from_ids`.

A token that is not an action id never decodes to a silent value: :meth:`decode` returns a
validity mask and counts the invalid tokens (``invalid_count``), and ``strict=True`` raises
:class:`ActionDecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

BINNINGS = ("uniform", "openvla")


class ActionDecodeError(ValueError):
    """A generated token is not one of the action tokens."""


@dataclass
class DecodedActions:
    """values: (..., A) normalized actions, bin centres where valid and NaN elsewhere;
    valid: (..., A) bool, False where the token was not an action token."""

    values: torch.Tensor
    valid: torch.Tensor


class ActionTokenizer:
    """Maps normalized actions in [-1, 1] to token ids and back (see the module docstring).

    token_ids: ``n_bins`` distinct ids, ``token_ids[b]`` is the token of bin b.
    vocab_size: the size of the vocabulary those ids live in (every id must be below it).
    """

    def __init__(
        self,
        token_ids: Sequence[int],
        vocab_size: int,
        *,
        binning: str = "uniform",
        kind: str = "ids",
    ):
        ids = [int(i) for i in token_ids]
        if binning not in BINNINGS:
            raise ValueError(f"ActionTokenizer: binning must be one of {BINNINGS}, got {binning!r}")
        if len(ids) < 2:
            raise ValueError(f"ActionTokenizer needs at least 2 bins, got {len(ids)} token ids")
        if len(set(ids)) != len(ids):
            raise ValueError("ActionTokenizer: token_ids must be distinct (one token per bin)")
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise ValueError(
                f"ActionTokenizer: token ids must lie in [0, vocab_size={vocab_size}), got min {min(ids)} "
                f"max {max(ids)}"
            )
        self.token_ids = ids
        self.n_bins = len(ids)
        self.vocab_size = int(vocab_size)
        self.binning = binning
        self.kind = kind
        self.invalid_count = 0  # tokens seen by decode() that were not action tokens
        self._ids = torch.tensor(ids, dtype=torch.long)  # (n_bins,)
        bin_of = torch.full((self.vocab_size,), -1, dtype=torch.long)  # id -> bin, -1 = not an action id
        bin_of[self._ids] = torch.arange(self.n_bins)
        self._bin_of = bin_of
        if binning == "uniform":
            self.bin_width = 2.0 / self.n_bins
            self._centres = -1.0 + (torch.arange(self.n_bins, dtype=torch.float64) + 0.5) * self.bin_width
        else:  # the reference's n_bins edges -> n_bins - 1 intervals
            edges = torch.linspace(-1.0, 1.0, self.n_bins, dtype=torch.float64)
            self._edges = edges
            self.bin_width = float(edges[1] - edges[0])
            centres = (edges[:-1] + edges[1:]) / 2  # (n_bins - 1,)
            # Decodable value of each bin: bin b (digitize value b + 1) -> centres[clip(b, 0, n_bins - 2)].
            self._centres = centres[torch.arange(self.n_bins).clamp(max=self.n_bins - 2)]

    # ---------------------------------------------------------------------------------------- builders

    @classmethod
    def last_ids(
        cls, vocab_size: int, n_bins: int = 256, *, n_text_tokens: int = 0, binning: str = "uniform"
    ) -> ActionTokenizer:
        """OpenVLA's ids: bin b -> ``vocab_size - 1 - b`` (the last ``n_bins`` ids of the vocabulary).

        n_text_tokens: ids ``0 .. n_text_tokens - 1`` that text needs and actions must not take
        (the whole word vocabulary of a tiny recipe; the special tokens of a pretrained one). A
        vocabulary smaller than ``n_bins + n_text_tokens`` is an error.
        """
        if vocab_size < n_bins + n_text_tokens:
            raise ValueError(
                f"vocabulary of {vocab_size} ids cannot hold {n_bins} action tokens after {n_text_tokens} "
                f"text tokens; it needs at least {n_bins + n_text_tokens} ids"
            )
        return cls([vocab_size - 1 - b for b in range(n_bins)], vocab_size, binning=binning, kind="last")

    @classmethod
    def integer_text(
        cls,
        lookup: Callable[[str], int | None],
        vocab_size: int,
        n_bins: int = 256,
        *,
        binning: str = "uniform",
    ) -> ActionTokenizer:
        """RT-2 (PaLI-X): bin b is the vocabulary's token for the text ``str(b)``.

        lookup: string -> its single token id, or None when the vocabulary has no such token.
        """
        ids, missing = [], []
        for b in range(n_bins):
            i = lookup(str(b))
            if i is None:
                missing.append(str(b))
            else:
                ids.append(int(i))
        if missing:
            raise ValueError(
                f"the vocabulary has no single token for the integers {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''} ({len(missing)} of {n_bins}); RT-2's integer action "
                "tokens need one token per number (PaLI-X). For a tokenizer that splits digits (Llama, "
                "Gemma) use ActionTokenizer.last_ids or from_ids with reserved ids instead"
            )
        return cls(ids, vocab_size, binning=binning, kind="integer")

    @classmethod
    def from_ids(
        cls, token_ids: Sequence[int], vocab_size: int, *, binning: str = "uniform"
    ) -> ActionTokenizer:
        """Explicit reserved ids (e.g. PaliGemma's ``<loc0000>`` .. ``<loc0255>``)."""
        return cls(token_ids, vocab_size, binning=binning, kind="ids")

    # --------------------------------------------------------------------------------------- encoding

    @property
    def action_token_ids(self) -> list[int]:
        """All action ids (for constrained decoding: ``generate_greedy(allowed_token_ids=...)``)."""
        return list(self.token_ids)

    def bins(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (..., A) -> bin indices (..., A) long in [0, n_bins); clipped to [-1, 1]."""
        if not torch.isfinite(actions).all():
            raise ValueError("ActionTokenizer.encode: actions contain NaN or Inf")
        x = actions.detach().to(torch.float64).clamp(-1.0, 1.0)
        if self.binning == "uniform":
            return ((x + 1.0) / self.bin_width).floor().long().clamp(0, self.n_bins - 1)
        # np.digitize(x, edges) (right=False) = number of edges <= x, in 1 .. n_bins; bin = that - 1.
        d = torch.bucketize(x, self._edges.to(x.device), right=True)  # (..., A) in 1 .. n_bins
        return (d - 1).clamp(0, self.n_bins - 1)

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (..., A) -> token ids (..., A) long."""
        return self._ids.to(actions.device)[self.bins(actions)]

    def bin_centres(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin indices (...) -> decoded values (...) float32."""
        return self._centres.to(bins.device)[bins].float()

    def is_action(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) bool: True where the id is an action token."""
        inside = (ids >= 0) & (ids < self.vocab_size)
        b = self._bin_of.to(ids.device)[ids.clamp(0, self.vocab_size - 1)]
        return inside & (b >= 0)

    def decode(self, ids: torch.Tensor, *, strict: bool = False) -> DecodedActions:
        """Token ids (..., A) -> :class:`DecodedActions`; non-action ids give NaN + valid False.

        Every invalid token is added to ``invalid_count``; ``strict=True`` raises instead.
        """
        ids = ids.long()
        valid = self.is_action(ids)  # (..., A)
        n_bad = int((~valid).sum())
        if n_bad:
            if strict:
                bad = sorted(set(ids[~valid].tolist()))[:8]
                raise ActionDecodeError(
                    f"{n_bad} generated token(s) are not action tokens (ids {bad}); action ids are "
                    f"{min(self.token_ids)}..{max(self.token_ids)} ({self.kind}). Use constrained decoding "
                    "to rule them out"
                )
            self.invalid_count += n_bad
        b = self._bin_of.to(ids.device)[ids.clamp(0, self.vocab_size - 1)].clamp(min=0)  # (..., A)
        values = self.bin_centres(b).masked_fill(~valid, float("nan"))
        return DecodedActions(values, valid)

    # -------------------------------------------------------------------------------- serialization

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "binning": self.binning,
            "token_ids": list(self.token_ids),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionTokenizer:
        return cls(
            d["token_ids"], d["vocab_size"], binning=d.get("binning", "uniform"), kind=d.get("kind", "ids")
        )

    def __repr__(self) -> str:
        return (
            f"ActionTokenizer({self.kind}, {self.n_bins} bins {self.binning}, ids "
            f"{min(self.token_ids)}..{max(self.token_ids)} of {self.vocab_size})"
        )
