"""A pre-norm transformer over a block-masked token sequence, with a prefix KV cache.

Reads like nanoGPT: LayerNorm -> self-attention -> residual, LayerNorm -> MLP -> residual,
and a final LayerNorm. Differences that matter here:

* the attention mask is an arbitrary boolean (N, N) or (B, N, N) matrix built by
  :mod:`vlaforge.models.attention` (True = may attend), not a fixed causal triangle;
* no positional encoding inside: callers add a learned positional embedding per token block
  (image patches, language, readouts), as Octo does;
* ``return_kv`` / ``past_kv`` let a caller run a prefix once and then run only a suffix
  against the cached keys/values (π0's flow steps, autoregressive action decoding).

Cache format (`PastKV`): a tuple with one ``(k, v)`` pair per layer, each ``(B, heads, N_past, head_dim)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Keys/values of earlier tokens: one (k, v) per layer, each (B, heads, N_past, head_dim). Not
# `models.lm.KVCache` (the LM's preallocated cache object): a plain tuple, as Octo's task prefix needs.
PastKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]


class SelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values can be extended by a cache of earlier tokens.

    ``project_qkv`` and ``attend`` are separate so that a second set of weights (an action
    expert) can share the attention computation with this layer token by token.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = width // heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.resid_dropout = nn.Dropout(dropout)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape  # (B, N, D)
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, N, D)
        q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, hd)
        k = k.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, hd)
        v = v.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, hd)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (B, h, Nq, hd), k/v (B, h, Nk, hd), mask (B, 1, Nq, Nk) bool -> (B, Nq, D)."""
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, h, Nq, hd)
        b, h, nq, hd = y.shape
        y = y.transpose(1, 2).reshape(b, nq, h * hd)  # (B, Nq, D)
        return self.resid_dropout(self.proj(y))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        q, k, v = self.project_qkv(x)  # (B, h, N, hd) each
        if past_kv is not None:
            pk, pv = past_kv  # (B or 1, h, Np, hd)
            if pk.shape[0] != k.shape[0]:
                pk, pv = pk.expand(k.shape[0], -1, -1, -1), pv.expand(k.shape[0], -1, -1, -1)
            k = torch.cat([pk, k], dim=2)  # (B, h, Np + N, hd)
            v = torch.cat([pv, v], dim=2)  # (B, h, Np + N, hd)
        return self.attend(q, k, v, mask), (k, v)


class MLP(nn.Module):
    def __init__(self, width: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(width, mlp_dim)
        self.proj = nn.Linear(mlp_dim, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))  # (B, N, D)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_dim, dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln_1(x), mask, past_kv)
        x = x + a  # (B, N, D)
        x = x + self.mlp(self.ln_2(x))  # (B, N, D)
        return x, kv


class BlockTransformer(nn.Module):
    """Stack of pre-norm blocks with an arbitrary boolean attention mask.

    forward(x (B, N, D), mask (N, Nk) or (B, N, Nk) bool, past_kv=None, return_kv=False)
      -> y (B, N, D)                        if not return_kv
      -> (y (B, N, D), kv: PastKV)          if return_kv (kv covers past + current tokens)

    Nk = N without a cache, Np + N with a cache of Np tokens (mask columns: cached keys
    first, then the current tokens). Running ``prefix`` with ``return_kv=True`` and then
    ``suffix`` with ``past_kv`` gives the same suffix outputs as one pass over the
    concatenation, provided the prefix rows of the full mask do not read the suffix.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        for name, value in (("width", width), ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BlockTransformer: {name} must be a positive int, got {value!r}")
        if width % heads != 0:
            raise ValueError(f"BlockTransformer: width ({width}) must be divisible by heads ({heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BlockTransformer: dropout must be in [0, 1), got {dropout}")
        self.width, self.depth, self.heads, self.mlp_dim = width, depth, heads, mlp_dim
        self.gradient_checkpointing = gradient_checkpointing
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, mlp_dim, dropout) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width)
        self.apply(self._init_weights)
        # GPT-2 scaling: residual projections shrink with depth so the residual stream's variance
        # does not grow with the number of layers at initialization.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _prepare_mask(self, mask: torch.Tensor, b: int, n: int, n_keys: int) -> torch.Tensor:
        if mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be torch.bool (True = may attend), got {mask.dtype}")
        if mask.dim() == 2:
            mask = mask[None]  # (1, N, Nk)
        if mask.dim() != 3 or mask.shape[-2:] != (n, n_keys) or mask.shape[0] not in (1, b):
            raise ValueError(
                f"attention mask must be ({n}, {n_keys}) or ({b}, {n}, {n_keys}) for {n} queries and "
                f"{n_keys} keys (cached + current), got {tuple(mask.shape)}"
            )
        if not bool(mask.any(dim=-1).all()):
            raise ValueError(
                "attention mask has a query row with no allowed key; attention would return NaN. "
                "Every token must at least attend to itself (see attention.apply_key_padding)."
            )
        return mask[:, None]  # (B or 1, 1, N, Nk): broadcast over heads

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        *,
        past_kv: PastKV | None = None,
        return_kv: bool = False,
        check_mask: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, PastKV]:
        """check_mask=False: take the mask as given, (B|1, N, Nk) bool, without `_prepare_mask`'s checks,
        which read tensor values (the ONNX graph, `export/graph.py`, runs the transformer this way)."""
        if x.dim() != 3 or x.shape[-1] != self.width:
            raise ValueError(f"x must be (B, N, {self.width}), got {tuple(x.shape)}")
        b, n, _ = x.shape  # (B, N, D)
        n_past = 0
        if past_kv is not None:
            if len(past_kv) != self.depth:
                raise ValueError(f"past_kv has {len(past_kv)} layers, the transformer has {self.depth}")
            n_past = past_kv[0][0].shape[2]
            if past_kv[0][0].shape[0] not in (1, b):
                raise ValueError(f"past_kv batch {past_kv[0][0].shape[0]} does not match x batch {b}")
        if check_mask:
            attn_mask = self._prepare_mask(mask.to(x.device), b, n, n_past + n)  # (B|1, 1, N, Np + N)
        else:
            attn_mask = mask[:, None]  # (B|1, 1, N, Nk): broadcast over heads
        out_dtype = x.dtype
        x = x.to(self.dtype)  # a bf16 copy for inference (`Policy.cast_for_inference`) runs in bf16 inside

        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        new_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, block in enumerate(self.blocks):
            layer_past = past_kv[i] if past_kv is not None else None
            if use_ckpt:
                x, kv = checkpoint(block, x, attn_mask, layer_past, use_reentrant=False)
            else:
                x, kv = block(x, attn_mask, layer_past)  # (B, N, D)
            if return_kv:
                new_kv.append(kv)
        y = self.ln_f(x).to(out_dtype)  # (B, N, D) in the caller's dtype; cached keys/values in self.dtype
        return (y, tuple(new_kv)) if return_kv else y

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype: inputs are cast to it, outputs come back in the input's dtype."""
        return self.ln_f.weight.dtype
