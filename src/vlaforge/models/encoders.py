"""Encoders that turn raw inputs into tokens of the transformer's width.

Every encoder returns (..., N, D) tokens that already carry a learned positional embedding for
their own block, so the transformer itself needs no positional encoding (Octo's design: "each
token group: linear projection + learned positional embedding").

* :class:`ConvStemTokenizer` — images -> patch tokens (Octo's small conv stem).
* :class:`StateEncoder` — proprioception -> one token.
* :class:`LanguageEncoder` — word ids (from :class:`WordTokenizer`) -> tokens, trained from scratch.
* :class:`PretrainedTextEncoder` — a frozen Hugging Face text model loaded from a local directory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.pretrained_text import PretrainedTextEncoder, find_minilm_dir
from vlaforge.models.text_positions import TextPositions
from vlaforge.models.word_tokenizer import WordTokenizer

__all__ = [
    "ConvStemTokenizer",
    "StateEncoder",
    "LanguageEncoder",
    "WordTokenizer",
    "PretrainedTextEncoder",
    "find_minilm_dir",
]


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardization (zero mean, unit variance per output filter).

    Octo's stem uses it (with GroupNorm) because it keeps the stem stable with small batches
    and large learning rates, where BatchNorm would not be usable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight  # (C_out, C_in, k, k)
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _as_pair(x: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    x = tuple(x)
    if len(x) != 2:
        raise ValueError(f"{name} must be an int or (height, width), got {x}")
    return (int(x[0]), int(x[1]))


class ConvStemTokenizer(nn.Module):
    """Octo's small image stem: stride-2 3x3 convs + GroupNorm + ReLU, then a patch x patch conv.

    With the default 4 convs (32/96/192/384 channels) the image is reduced 16x, so ``patch=1``
    gives Octo's "16x16 patches": a 128x128 image -> 8x8 = 64 tokens, 256x256 -> 256 tokens.
    Tiny configs use fewer convs (shorter ``channels``) and/or a larger ``patch``.

    Input, chosen by dtype so there is no silent guessing:
      * ``uint8 (..., Hi, Wi, C)`` channels-last, 0..255 (what cameras and datasets give) —
        scaled to [-1, 1] here;
      * floating ``(..., C, Hi, Wi)`` channels-first, already in [-1, 1].
    Leading dims (batch, time, camera...) are kept: output is ``(..., N, D)``.

    The positional embedding is sized from ``image_size`` at construction, so the input size
    is checked on every call.

    norm_groups: GroupNorm groups per conv; a layer with C channels uses gcd(norm_groups, C)
        groups so that small channel counts of tiny configs stay valid.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        width: int,
        channels: Sequence[int] = (32, 96, 192, 384),
        patch: int = 1,
        norm_groups: int = 32,
        stride: int = 2,
        in_channels: int = 3,
        weight_standardization: bool = True,
    ):
        super().__init__()
        self.image_size = _as_pair(image_size, "image_size")
        if len(channels) < 1 or any(c < 1 for c in channels):
            raise ValueError(
                f"ConvStemTokenizer: channels must be a non-empty list of positive ints, got {channels}"
            )
        if patch < 1 or stride < 1 or width < 1 or in_channels < 1 or norm_groups < 1:
            raise ValueError(
                f"ConvStemTokenizer: patch, stride, width, in_channels, norm_groups must be >= 1 "
                f"(got patch={patch}, stride={stride}, width={width}, in_channels={in_channels}, "
                f"norm_groups={norm_groups})"
            )
        self.in_channels = in_channels
        self.width = width
        conv = StdConv2d if weight_standardization else nn.Conv2d
        layers: list[nn.Module] = []
        c_in = in_channels
        h, w = self.image_size
        for c in channels:
            layers += [
                conv(c_in, c, kernel_size=3, stride=stride, padding=1),
                nn.GroupNorm(math.gcd(norm_groups, c), c),
                nn.ReLU(),
            ]
            c_in = c
            h, w = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1  # conv output size
        if h < patch or w < patch:
            raise ValueError(
                f"ConvStemTokenizer: image {self.image_size} shrinks to {h}x{w} after {len(channels)} "
                f"stride-{stride} convs, smaller than patch={patch}; use fewer convs or a smaller patch"
            )
        self.stem = nn.Sequential(*layers)
        self.patchify = nn.Conv2d(c_in, width, kernel_size=patch, stride=patch)
        self.grid = (h // patch, w // patch)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.pos_emb = nn.Parameter(torch.randn(1, self.num_tokens, width) * 0.02)  # (1, N, D)

    def _to_float_nchw(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        hi, wi = self.image_size
        c = self.in_channels
        if images.dim() < 4:
            raise ValueError(
                f"images need a batch dimension: (B, ..., H, W, C) uint8 or (B, ..., C, H, W) float, "
                f"got {tuple(images.shape)}; use images[None] for a single image"
            )
        if images.dtype == torch.uint8:
            if tuple(images.shape[-3:]) != (hi, wi, c):
                raise ValueError(
                    f"uint8 images must be channels-last (..., {hi}, {wi}, {c}), got {tuple(images.shape)}; "
                    "resize to the tokenizer's image_size"
                )
            lead = tuple(images.shape[:-3])
            x = images.reshape(-1, hi, wi, c).permute(0, 3, 1, 2)  # (B*, C, Hi, Wi)
            x = x.float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
        elif images.is_floating_point():
            if tuple(images.shape[-3:]) != (c, hi, wi):
                raise ValueError(
                    f"float images must be channels-first (..., {c}, {hi}, {wi}) in [-1, 1], "
                    f"got {tuple(images.shape)}"
                )
            lead = tuple(images.shape[:-3])
            x = images.reshape(-1, c, hi, wi)  # (B*, C, Hi, Wi)
        else:
            raise TypeError(
                f"images must be uint8 (..., H, W, C) or float (..., C, H, W), got {images.dtype}"
            )
        return x, lead

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, lead = self._to_float_nchw(images)  # (B*, C, Hi, Wi)
        x = x.to(self.pos_emb.dtype)
        x = self.stem(x)  # (B*, C_last, h, w)
        x = self.patchify(x)  # (B*, D, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B*, N, D), row-major over the patch grid
        x = x + self.pos_emb  # (B*, N, D)
        return x.reshape(*lead, self.num_tokens, self.width)  # (..., N, D)


class FeatureTokenizer(nn.Module):
    """Feature-map tokens of a pretrained image tower (B, N, C) -> (B, N, D): Octo's per-group linear
    projection + learned positional embedding (the conv stem's last two steps, after a pretrained stem)."""

    def __init__(self, in_dim: int, width: int, num_tokens: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.num_tokens, self.width = num_tokens, width
        self.pos_emb = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)  # (1, N, D)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[-2] != self.num_tokens:
            raise ValueError(
                f"FeatureTokenizer: expected (B, {self.num_tokens}, C) features, got {tuple(feats.shape)}"
            )
        return self.proj(feats.to(self.proj.weight.dtype)) + self.pos_emb  # (B, N, D)


class StateEncoder(nn.Module):
    """Proprioceptive state (..., S) -> one token (..., 1, D): linear projection + learned embedding."""

    def __init__(self, state_dim: int, width: int):
        super().__init__()
        if state_dim < 1 or width < 1:
            raise ValueError(f"StateEncoder: state_dim and width must be >= 1, got {state_dim}, {width}")
        self.state_dim = state_dim
        self.proj = nn.Linear(state_dim, width)
        self.pos_emb = nn.Parameter(torch.randn(1, width) * 0.02)  # (1, D)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state must be (..., {self.state_dim}), got {tuple(state.shape)}")
        x = self.proj(state.to(self.proj.weight.dtype))  # (..., D)
        return (x + self.pos_emb[0]).unsqueeze(-2)  # (..., 1, D)


class LanguageEncoder(TextPositions, nn.Module):
    """Word ids (B, L) -> tokens (B, L, D): an embedding table trained from scratch + learned positions
    (``positions=False``: none).

    Used with :class:`WordTokenizer` when no pretrained text model is wanted (tiny configs,
    tests, small task sets where instructions are effectively task ids). Pad id 0 embeds to
    zero; callers also mask padding keys in attention.
    """

    def __init__(self, vocab_size: int, width: int, max_len: int, pad_id: int = 0, positions: bool = True):
        super().__init__()
        if vocab_size < 2 or width < 1 or max_len < 1:
            raise ValueError(
                f"LanguageEncoder: need vocab_size >= 2, width >= 1, max_len >= 1 "
                f"(got {vocab_size}, {width}, {max_len})"
            )
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.init_positions(max_len, width, positions)  # positions=False: a bag of words

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must be (B, L) with L <= {self.max_len}, got {tuple(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}); the tokenizer's vocabulary does not match "
                "this encoder (rebuild the encoder with vocab_size=len(tokenizer))"
            )
        return self.add_positions(self.embed(ids.long()))  # (B, L, D)
