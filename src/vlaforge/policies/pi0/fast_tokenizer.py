"""FAST action tokens for π0-FAST (Pertsch et al., arXiv 2501.09747): DCT of an action chunk, then BPE.

A chunk ``(H, A)`` of actions becomes a short sequence of token ids:

1. **Normalize** with q01/q99 to [-1, 1] through the project's one
   :class:`~vlaforge.transforms.normalize.Normalizer` (quantile mode, clipped); dimensions whose
   ``mask`` entry is False (e.g. a gripper already in [-1, 1]) pass through unnormalized, and every
   dimension is then clipped to [-1, 1], as :mod:`vlaforge.policies.vla.action_tokenizer` does. Without
   statistics (``stats=None``) the chunks are taken as already normalized and only clipped.
2. **DCT-II** (orthonormal) along time, separately for each dimension: ``C = dct(X, axis=0)`` (H, A).
   Smooth motion puts almost all of its energy into the first few rows.
3. **Quantize**: ``Q = round(scale * C)`` (scale γ = 10 in the paper); most high-frequency entries
   become 0. This rounding is the only lossy step: the reconstruction error of each coefficient is at
   most ``0.5 / scale``, so (the DCT being orthonormal) the error of the whole normalized chunk has
   an L2 norm of at most ``0.5 · sqrt(H · A) / scale``.
4. **Flatten** row-major: coefficient 0 of every dimension, then coefficient 1 of every dimension, ...
   (the lowest frequencies of all dimensions come first, so an autoregressive model emits the coarse
   shape of the whole chunk before its details).
5. **Characters + BPE**: each integer q becomes the character ``chr(q - min_token)`` (``min_token`` =
   the smallest quantized coefficient of the fitting data) and a BPE with a ``vocab_size`` of 1024
   (paper) is trained on those strings, so long runs of zeros and frequent patterns collapse into
   single tokens.

What we match in the reference (``physical-intelligence/fast``, ``UniversalActionProcessor``): the
steps above; a byte-level BPE exactly like its ``ByteLevelBPETokenizer()`` (characters are UTF-8
encoded, bytes mapped to GPT-2's printable symbols, the GPT-2 pre-tokenizing regex splits the string
before merging; ``min_frequency=2``, no special tokens, ``max_token_length=10000``); encoding clips
coefficients below ``min_token`` to it; a failed decode gives a chunk of zeros in normalized units
(the q01/q99 midpoint in robot units after unnormalization).

Where we differ:

* the BPE's initial alphabet is the 256 byte symbols (``ByteLevel.alphabet()``); the reference passes
  the raw characters ``chr(0 .. max_token - min_token)``, part of which the byte-level pre-tokenizer
  never produces, so they occupy vocabulary entries that can never be used;
* a failed decode is never silent: :meth:`FastTokenizer.decode` returns ``valid=False`` and counts it
  in ``failed_count`` (``strict=True`` raises :class:`FastDecodeError`); the reference prints the error.
  A decode fails when an id is outside the vocabulary (``tokenizers`` would silently skip it), when the
  bytes are not valid UTF-8, when a coefficient lies outside what encoding can produce
  (``[min_token, ceil(scale · sqrt(H))]``: inputs are clipped to [-1, 1], so ``|C| <= sqrt(H)``), or
  when the number of coefficients is not ``H · A``;
* coefficients clipped up to ``min_token`` during encoding are counted in ``clipped_count``;
* ``encode`` checks the chunk shape against the fitted ``(H, A)`` instead of accepting any horizon;
* the statistics and mask travel with the tokenizer (``save`` writes them next to ``tokenizer.json``;
  no pickle), so a policy normalizes exactly as at fitting time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from vlaforge.transforms.normalize import FeatureNorm, Normalizer

CONFIG_NAME = "fast_config.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT = "vlaforge-fast"
FORMAT_VERSION = 1
# Characters chr(0xD800 ..) are UTF-16 surrogates that cannot be UTF-8 encoded: the span of quantized
# coefficients must stay below this.
MAX_CHAR_SPAN = 0xD800
_REPLACEMENT_CHAR = "\ufffd"  # what the byte-level decoder emits for bytes that are not valid UTF-8


class FastDecodeError(ValueError):
    """A token sequence does not decode to an (H, A) chunk of DCT coefficients."""


@dataclass
class FastDecoded:
    """One decoded chunk.

    actions: (H, A) float32 in robot units (normalized units when the tokenizer has no statistics);
    normalized: (H, A) float32 in [-1, 1]-ish normalized units (zeros when ``valid`` is False);
    valid: False when the ids did not decode to H·A coefficients (``error`` says why).
    """

    actions: np.ndarray
    normalized: np.ndarray
    valid: bool
    error: str | None = None


@dataclass
class FastDecodedBatch:
    """actions / normalized: (N, H, A) float32; valid: (N,) bool; errors: one message or None per chunk."""

    actions: np.ndarray
    normalized: np.ndarray
    valid: np.ndarray
    errors: list[str | None]


def dct(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II along time: (..., H, A) -> (..., H, A) coefficients (row k = frequency k)."""
    return scipy.fft.dct(np.asarray(x, dtype=np.float64), type=2, axis=-2, norm="ortho")


def idct(c: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct` (the orthonormal DCT-III): (..., H, A) coefficients -> (..., H, A) values."""
    return scipy.fft.idct(np.asarray(c, dtype=np.float64), type=2, axis=-2, norm="ortho")


def coefficient_bound(horizon: int, scale: float) -> int:
    """Largest |round(scale · C)| that a chunk in [-1, 1] can produce: ``|C_k| <= ||x||_2 <= sqrt(H)``."""
    return math.ceil(scale * math.sqrt(horizon))


def _new_bpe() -> Tokenizer:
    """An empty byte-level BPE, configured as ``tokenizers.ByteLevelBPETokenizer()`` (the reference's)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


class FastTokenizer:
    """Action chunks (H, A) <-> FAST token ids (see the module docstring). Build one with :meth:`fit`
    or :meth:`load`.

    bpe: the trained byte-level BPE over the coefficient characters.
    horizon, action_dim: the chunk shape (H, A) the tokenizer was fitted on.
    min_token: the integer mapped to ``chr(0)``; smaller coefficients are clipped to it when encoding.
    scale: γ, the DCT coefficients are multiplied by it before rounding.
    stats: per-dimension ``q01`` / ``q99`` (A,) in robot units, or None for already-normalized chunks.
    mask: (A,) bool, False = leave that dimension unnormalized (it is still clipped to [-1, 1]).
    """

    def __init__(
        self,
        bpe: Tokenizer,
        *,
        horizon: int,
        action_dim: int,
        min_token: int,
        scale: float = 10.0,
        stats: Mapping[str, Sequence[float] | np.ndarray] | None = None,
        mask: Sequence[bool] | np.ndarray | None = None,
    ):
        if horizon < 1 or action_dim < 1:
            raise ValueError(
                f"FastTokenizer: horizon and action_dim must be >= 1, got ({horizon}, {action_dim})"
            )
        if not scale > 0:
            raise ValueError(f"FastTokenizer: scale must be > 0, got {scale}")
        self.bpe = bpe
        self.horizon, self.action_dim = int(horizon), int(action_dim)
        self.scale = float(scale)
        self.min_token = int(min_token)
        self.max_token = coefficient_bound(self.horizon, self.scale)  # largest coefficient encode can emit
        if self.max_token - self.min_token >= MAX_CHAR_SPAN:
            raise ValueError(
                f"FastTokenizer: coefficients span {self.min_token}..{self.max_token}, more characters than "
                f"UTF-8 can hold ({MAX_CHAR_SPAN}); lower scale={scale} or the horizon"
            )
        self.stats, self.mask, self._normalizer = self._build_normalizer(stats, mask)
        self.clipped_count = 0  # coefficients below min_token clipped up by encode()
        self.failed_count = 0  # chunks that decode() could not decode (returned as zeros)

    # --------------------------------------------------------------------------- normalization

    def _build_normalizer(
        self,
        stats: Mapping[str, Sequence[float] | np.ndarray] | None,
        mask: Sequence[bool] | np.ndarray | None,
    ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None, Normalizer | None]:
        mask_arr = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
        if mask_arr is not None and mask_arr.shape[0] != self.action_dim:
            raise ValueError(
                f"FastTokenizer: mask has {mask_arr.shape[0]} entries for action_dim {self.action_dim}"
            )
        if stats is None:
            if mask_arr is not None:
                raise ValueError(
                    "FastTokenizer: a mask needs q01/q99 stats (stats=None means normalized input)"
                )
            return None, None, None
        missing = [k for k in ("q01", "q99") if k not in stats]
        if missing:
            raise ValueError(
                f"FastTokenizer: stats need 'q01' and 'q99' (missing {missing}, have {sorted(stats)}); pass "
                "the dataset's stats['action'] (meta/stats.json)"
            )
        kept = {k: np.asarray(stats[k], dtype=np.float32).reshape(-1) for k in ("q01", "q99")}
        for k, v in kept.items():
            if v.shape[0] != self.action_dim:
                raise ValueError(
                    f"FastTokenizer: stats['{k}'] has {v.shape[0]} dimensions, chunks have {self.action_dim}"
                )
        norm = Normalizer({"action": FeatureNorm("quantile", dict(kept), mask_arr, clip=True)})
        return kept, mask_arr, norm

    def normalize(self, chunks: np.ndarray) -> np.ndarray:
        """Robot units (..., H, A) -> normalized (..., H, A) float64, every value clipped to [-1, 1]."""
        x = np.asarray(chunks, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("FastTokenizer: action chunks contain NaN or Inf")
        if self._normalizer is not None:
            x = self._normalizer.normalize("action", torch.from_numpy(x)).numpy()
        return np.clip(x, -1.0, 1.0)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized (..., H, A) -> robot units (..., H, A) float64 (identity without statistics)."""
        y = np.asarray(normalized, dtype=np.float64)
        if self._normalizer is None:
            return y
        return self._normalizer.unnormalize("action", torch.from_numpy(y)).numpy()

    # ---------------------------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        chunks: np.ndarray,
        *,
        vocab_size: int = 1024,
        scale: float = 10.0,
        stats: Mapping[str, Sequence[float] | np.ndarray] | None = None,
        mask: Sequence[bool] | np.ndarray | None = None,
        min_frequency: int = 2,
    ) -> FastTokenizer:
        """Train the BPE on action chunks (N, H, A) in robot units (normalized ones when ``stats=None``).

        Deterministic: the same chunks and arguments give the same vocabulary and merges. The BPE stops
        early (fewer than ``vocab_size`` entries) when no pair occurs ``min_frequency`` times.
        """
        x = np.asarray(chunks)
        if x.ndim != 3 or x.shape[0] == 0:
            raise ValueError(f"FastTokenizer.fit: chunks must be (N, H, A) with N >= 1, got shape {x.shape}")
        if vocab_size < 256:
            raise ValueError(
                f"FastTokenizer.fit: vocab_size {vocab_size} is below the 256 byte symbols of the byte-level "
                "BPE; use at least 256 (the paper uses 1024)"
            )
        _, horizon, action_dim = x.shape
        # min_token is a placeholder until the data has been quantized (it does not affect normalization).
        tok = cls(
            _new_bpe(),
            horizon=horizon,
            action_dim=action_dim,
            min_token=0,
            scale=scale,
            stats=stats,
            mask=mask,
        )
        q = tok.quantize(tok.normalize(x))  # (N, H, A) int64
        tok.min_token = int(q.min())  # >= -max_token, so the character span stays below 2·max_token + 1
        strings = [tok._to_string(row) for row in q]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            max_token_length=10000,
        )
        tok.bpe.train_from_iterator(strings, trainer=trainer, length=len(strings))
        return tok

    # --------------------------------------------------------------------------------- encoding

    def quantize(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized chunks (..., H, A) -> integer DCT coefficients ``round(scale · dct)`` (..., H, A) int64."""
        return np.rint(self.scale * dct(normalized)).astype(np.int64)

    def _check_shape(self, x: np.ndarray, batched: bool) -> None:
        want = ("N", self.horizon, self.action_dim) if batched else (self.horizon, self.action_dim)
        if x.ndim != len(want) or tuple(x.shape[-2:]) != (self.horizon, self.action_dim):
            raise ValueError(
                f"FastTokenizer: expected {'chunks' if batched else 'a chunk'} of shape {want}, got {x.shape}; "
                f"this tokenizer was fitted on chunks of H={self.horizon} steps and A={self.action_dim} dims"
            )

    def _to_string(self, q: np.ndarray) -> str:
        """Integer coefficients (H, A) -> one character per coefficient, lowest frequencies first."""
        flat = q.reshape(-1) - self.min_token  # (H·A,), row-major: all dims' coefficient 0, then 1, ...
        below = flat < 0
        if below.any():
            self.clipped_count += int(below.sum())
            flat = np.maximum(flat, 0)
        return "".join(map(chr, flat.tolist()))

    def encode(self, chunk: np.ndarray) -> list[int]:
        """One chunk (H, A) in robot units -> token ids."""
        x = np.asarray(chunk)
        self._check_shape(x, batched=False)
        return self.bpe.encode(self._to_string(self.quantize(self.normalize(x)))).ids

    def encode_batch(self, chunks: np.ndarray) -> list[list[int]]:
        """Chunks (N, H, A) in robot units -> N lists of token ids (of varying length)."""
        x = np.asarray(chunks)
        self._check_shape(x, batched=True)
        q = self.quantize(self.normalize(x))  # (N, H, A)
        return [e.ids for e in self.bpe.encode_batch([self._to_string(row) for row in q])]

    # --------------------------------------------------------------------------------- decoding

    def _coefficients(self, ids: Sequence[int], horizon: int, action_dim: int) -> np.ndarray:
        """Token ids -> integer coefficients (H, A); raises FastDecodeError on anything malformed."""
        ids = [int(i) for i in ids]
        n_vocab = self.bpe.get_vocab_size()
        bad = [i for i in ids if not 0 <= i < n_vocab]
        if bad:
            raise FastDecodeError(f"ids {bad[:8]} are outside the FAST vocabulary 0..{n_vocab - 1}")
        text = self.bpe.decode(ids)
        if _REPLACEMENT_CHAR in text:
            raise FastDecodeError("the tokens' bytes are not valid UTF-8 (a character was split or garbled)")
        q = np.fromiter(map(ord, text), dtype=np.int64, count=len(text)) + self.min_token  # (n,)
        if q.size != horizon * action_dim:
            raise FastDecodeError(
                f"the tokens decode to {q.size} coefficients, a ({horizon}, {action_dim}) chunk needs "
                f"{horizon * action_dim}"
            )
        bound = coefficient_bound(horizon, self.scale)
        if q.size and (q.max() > bound or q.min() < self.min_token):
            raise FastDecodeError(
                f"coefficients {int(q.min())}..{int(q.max())} lie outside [{self.min_token}, {bound}], the range "
                "encoding can produce"
            )
        return q.reshape(horizon, action_dim)  # (H, A)

    def decode(
        self,
        ids: Sequence[int],
        horizon: int | None = None,
        action_dim: int | None = None,
        *,
        strict: bool = False,
    ) -> FastDecoded:
        """Token ids -> :class:`FastDecoded` (H, A). horizon / action_dim default to the fitted ones.

        A sequence that does not decode to H·A coefficients gives zeros in normalized units with
        ``valid=False`` and increments ``failed_count`` (as the reference returns zeros); with
        ``strict=True`` it raises :class:`FastDecodeError` instead.
        """
        h = self.horizon if horizon is None else int(horizon)
        a = self.action_dim if action_dim is None else int(action_dim)
        if self.stats is not None and a != self.action_dim:
            raise ValueError(
                f"FastTokenizer.decode: action_dim={a}, but the q01/q99 statistics have {self.action_dim} "
                "dimensions; leave action_dim unset to decode fitted chunks"
            )
        try:
            q = self._coefficients(ids, h, a)
            normalized = idct(q / self.scale)  # (H, A)
            valid, error = True, None
        except FastDecodeError as err:
            if strict:
                raise
            self.failed_count += 1
            normalized, valid, error = np.zeros((h, a)), False, str(err)
        actions = self.unnormalize(normalized)  # (H, A)
        return FastDecoded(actions.astype(np.float32), normalized.astype(np.float32), valid, error)

    def decode_batch(
        self,
        batch: Sequence[Sequence[int]],
        horizon: int | None = None,
        action_dim: int | None = None,
        *,
        strict: bool = False,
    ) -> FastDecodedBatch:
        """N id sequences -> :class:`FastDecodedBatch` with (N, H, A) arrays and a (N,) validity mask."""
        out = [self.decode(ids, horizon, action_dim, strict=strict) for ids in batch]
        h = self.horizon if horizon is None else int(horizon)
        a = self.action_dim if action_dim is None else int(action_dim)
        if not out:
            empty = np.zeros((0, h, a), np.float32)
            return FastDecodedBatch(empty, empty.copy(), np.zeros(0, bool), [])
        return FastDecodedBatch(
            np.stack([d.actions for d in out]),  # (N, H, A)
            np.stack([d.normalized for d in out]),  # (N, H, A)
            np.array([d.valid for d in out], dtype=bool),  # (N,)
            [d.error for d in out],
        )

    # ---------------------------------------------------------------------------- serialization

    @property
    def vocab_size(self) -> int:
        """Number of BPE ids actually trained (at most the requested ``vocab_size``)."""
        return self.bpe.get_vocab_size()

    def to_dict(self) -> dict[str, Any]:
        """Everything but the BPE itself, as JSON-able values."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "scale": self.scale,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "min_token": self.min_token,
            "vocab_size": self.vocab_size,
            "stats": None if self.stats is None else {k: v.tolist() for k, v in self.stats.items()},
            "mask": None if self.mask is None else self.mask.tolist(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` (the BPE) and ``fast_config.json`` (scale, shape, stats) into a directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.bpe.save(str(d / TOKENIZER_NAME))
        (d / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FastTokenizer:
        d = Path(directory)
        for name in (TOKENIZER_NAME, CONFIG_NAME):
            if not (d / name).is_file():
                raise FileNotFoundError(
                    f"{d / name} is missing; FastTokenizer.save(dir) writes {TOKENIZER_NAME} "
                    f"and {CONFIG_NAME}"
                )
        cfg = json.loads((d / CONFIG_NAME).read_text())
        if cfg.get("format") != FORMAT or cfg.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{d / CONFIG_NAME}: format {cfg.get('format')!r} version {cfg.get('version')!r}, expected "
                f"{FORMAT!r} version {FORMAT_VERSION}"
            )
        return cls(
            Tokenizer.from_file(str(d / TOKENIZER_NAME)),
            horizon=cfg["horizon"],
            action_dim=cfg["action_dim"],
            min_token=cfg["min_token"],
            scale=cfg["scale"],
            stats=cfg["stats"],
            mask=cfg["mask"],
        )

    def __repr__(self) -> str:
        norm = "normalized input" if self.stats is None else "q01/q99"
        return (
            f"FastTokenizer(H={self.horizon}, A={self.action_dim}, scale={self.scale:g}, vocab={self.vocab_size}, "
            f"coefficients {self.min_token}..{self.max_token}, {norm})"
        )
