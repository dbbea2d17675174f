"""Learned position embeddings of an instruction's tokens, shared by the two text encoders
(`encoders.LanguageEncoder`, `pretrained_text.PretrainedTextEncoder`) and the ONNX graph that reuses them."""

from __future__ import annotations

import torch
from torch import nn


class TextPositions:
    """Mixin for an ``nn.Module`` text encoder: ``pos_emb`` (1, L, D), or None with ``positions=False`` (Octo's
    ``text_positions``: a word's token then does not change when a rewording moves it)."""

    pos_emb: nn.Parameter | None

    def init_positions(self, max_len: int, width: int, positions: bool) -> None:
        self.pos_emb = nn.Parameter(torch.randn(1, max_len, width) * 0.02) if positions else None  # (1, L, D)

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) tokens + the first L position embeddings (none with positions=False)."""
        return x if self.pos_emb is None else x + self.pos_emb[:, : x.shape[1]]
