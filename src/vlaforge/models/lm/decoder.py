"""`DecoderLM`: a Llama / Gemma decoder-only language model, written to load HF weights unchanged.

Per layer (pre-norm, no biases)::

    h = x + o_proj(attn(rope(q_proj(n1(x))), rope(k_proj(n1(x))), v_proj(n1(x)), mask))
    y = h + down_proj(act(gate_proj(n2(h))) * up_proj(n2(h)))

then a final RMSNorm and the output projection (``lm_head``, or the embedding matrix when tied).
The two families differ in three places, all switched by ``config.family``:

=================  ===============================  ====================================
                   llama                            gemma
=================  ===============================  ====================================
RMSNorm gain       ``weight * x_hat`` (init 1)      ``(1 + weight) * x_hat`` (init 0)
token embeddings   as stored                        scaled by sqrt(hidden_size)
MLP activation     SiLU (SwiGLU)                    tanh-approximate GELU (GeGLU)
=================  ===============================  ====================================

Numerics follow transformers exactly where it matters for parity: RMSNorm in float32 (Llama casts
back before the gain, Gemma after), RoPE angles in float32 with the ``rotate_half`` layout (first
half / second half of each head, not interleaved pairs), attention scale 1/sqrt(head_dim).

Differences from ``transformers`` (on purpose):

* the attention mask is any boolean ``(B, L, L_keys)`` matrix (True = may attend), so recipes can
  pass the prefix-LM / block masks of :mod:`vlaforge.models.attention` directly; a 2-D mask is HF's
  key padding mask and is combined with causality here;
* ``inputs_embeds`` are used as given: Gemma's sqrt(hidden) factor is applied by :meth:`embed`
  (the ``input_ids`` path), not to caller-provided embeddings. This is what both transformers 5.x
  (the scale lives in the embedding module) and openpi do, so image tokens are not rescaled;
* with a key padding mask and no ``position_ids``, positions count only real tokens
  (``cumsum(mask) - 1``, as HF's ``generate`` does), so left-padded prompts get the same positions
  as unpadded ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlaforge.models.lm.cache import KVCache
from vlaforge.models.lm.config import LMConfig

LogitsMode = Literal["all", "last", "none"]


class RMSNorm(nn.Module):
    """Root-mean-square norm in float32; Gemma's gain is ``1 + weight`` (so zero-init = identity)."""

    def __init__(self, dim: int, eps: float, one_plus_weight: bool):
        super().__init__()
        self.eps = eps
        self.one_plus_weight = one_plus_weight
        self.weight = nn.Parameter(torch.zeros(dim) if one_plus_weight else torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight) if self.one_plus_weight else nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., D) float32
        if self.one_plus_weight:
            # Gemma multiplies in float32 and casts last (HF PR 29402: differs from Llama in bf16).
            return (h * (1.0 + self.weight.float())).type_as(x)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE angles: cos/sin ``(B, L, head_dim)`` for integer positions, computed in float32, then cast.

    The inverse frequencies are recomputed on every call (head_dim / 2 numbers) instead of living in
    a buffer: a buffer would be rounded by ``model.to(torch.bfloat16)``, shifting every angle, and
    would be left uninitialized by a meta-device build (how the checkpoint loader avoids a random
    init of 7B parameters).
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float, device=device) / self.head_dim
        return 1.0 / (self.theta**exponents)  # (hd/2,) float32, as transformers computes it

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq(position_ids.device)  # (B, L, hd/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, L, hd): HF's rotate_half layout
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, h, L, hd), cos/sin (B, L, hd) -> (B, h, L, hd)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, hd): broadcast over heads
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, KVH, L, hd) -> (B, KVH * groups, L, hd): each KV head serves ``groups`` query heads.

    Explicit (rather than SDPA's ``enable_gqa``) so that the memory-efficient CUDA kernel, which
    accepts arbitrary masks, stays available; the copy is small next to the attention itself.
    """
    if groups == 1:
        return x
    b, kvh, n, hd = x.shape
    return x[:, :, None].expand(b, kvh, groups, n, hd).reshape(b, kvh * groups, n, hd)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE; keys/values optionally appended to a :class:`KVCache`."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer_idx: int,
    ) -> torch.Tensor:
        b, n, _ = x.shape  # (B, L, D)
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KVH, L, hd)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KVH, L, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)  # (B, KVH, Lpast + L, hd)
        groups = self.num_heads // self.num_kv_heads
        y = F.scaled_dot_product_attention(
            q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=mask, is_causal=is_causal
        )  # (B, H, L, hd)
        y = y.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)  # (B, L, H * hd)
        return self.o_proj(y)  # (B, L, D)


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``: SwiGLU with SiLU (Llama), GeGLU with tanh-GELU (Gemma)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.hidden_act = config.hidden_act

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden_act == "silu":
            return F.silu(x)
        if self.hidden_act == "gelu_pytorch_tanh":
            return F.gelu(x, approximate="tanh")
        return F.gelu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # (B, L, D)


class DecoderLayer(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        gemma = config.family == "gemma"
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, one_plus_weight=gemma)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, one_plus_weight=gemma)
        self.mlp = GatedMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer_idx: int,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache, layer_idx)  # (B, L, D)
        return x + self.mlp(self.mlp_norm(x))  # (B, L, D)


@dataclass
class DecoderOutput:
    """hidden_states: (B, L, D) after the final norm (what the LM head reads; OFT-style heads read it too).
    logits: (B, L, V) for ``logits="all"``, (B, 1, V) for ``"last"``, None for ``"none"``.
    layer_inputs: the input of every layer, embeddings first (num_layers tensors of (B, L, D)),
        only when ``output_layer_inputs=True``.
    """

    hidden_states: torch.Tensor
    logits: torch.Tensor | None = None
    layer_inputs: tuple[torch.Tensor, ...] | None = None


class DecoderLM(nn.Module):
    """Llama / Gemma decoder-only LM. See the module docstring for the exact computation.

    forward(input_ids (B, L) | inputs_embeds (B, L, D), attention_mask, position_ids, kv_cache)

    attention_mask (bool; True = real token / may attend):
      * None: causal over cached + current tokens;
      * (B, Lk) key padding, Lk = cached + current tokens (HF's ``attention_mask``): causal AND the
        key is real. A padding query still reads itself (as in ``attention.apply_key_padding``) so
        its row is finite; its output is meaningless;
      * (B or 1, L, Lk): the full query-by-key matrix, used as given, e.g. a prefix-LM mask from
        ``attention.build_attention_mask(attention.prefix_lm_blocks(...))``. Every row must allow at
        least one key. A shared (L, Lk) matrix must be passed as ``mask[None]`` (2-D means padding).
    position_ids (B or 1, L) int: RoPE positions; default = count of real tokens before each token
      (key padding mask given), else ``cached + arange(L)``.
    kv_cache: a :class:`KVCache`; this pass's keys/values are appended to it and its cached tokens
      are the first ``kv_cache.length`` key columns of the mask.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, one_plus_weight=config.family == "gemma"
        )
        # Tied models have no lm_head module at all, so a state_dict never holds two names for one
        # tensor (which loading with assign=True would silently untie).
        self.lm_head = (
            None if config.tie_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Random init as transformers does (normal(0, initializer_range=0.02), norms at identity)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, RMSNorm):
                m.reset_parameters()

    @property
    def output_weight(self) -> torch.Tensor:
        """(V, D) matrix of the output projection: lm_head, or the token embeddings when tied."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> layer-0 inputs (B, L, D); Gemma's sqrt(hidden) scale included."""
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"input_ids must be int64/int32 token ids, got {input_ids.dtype}")
        e = self.embed_tokens(input_ids)  # (B, L, D)
        if self.config.family == "gemma":
            # float32 constant cast to the weight dtype, as transformers does (sqrt(2048) -> 45.25 in bf16).
            e = e * torch.tensor(math.sqrt(self.config.hidden_size)).to(e.dtype)
        return e

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, D) final-normed hidden states -> (B, L, V)."""
        return F.linear(hidden_states, self.output_weight)

    # ------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        logits: LogitsMode = "all",
        output_layer_inputs: bool = False,
    ) -> DecoderOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "DecoderLM.forward: pass exactly one of input_ids (B, L) or inputs_embeds (B, L, D)"
            )
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (B, L), got {tuple(input_ids.shape)}")
            x = self.embed(input_ids)  # (B, L, D)
        else:
            assert inputs_embeds is not None
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be (B, L, {self.config.hidden_size}), got {tuple(inputs_embeds.shape)}"
                )
            x = inputs_embeds
        if logits not in ("all", "last", "none"):
            raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        b, n, _ = x.shape
        if n == 0:
            raise ValueError("DecoderLM.forward: empty sequence (L = 0)")
        n_past = 0
        if kv_cache is not None:
            if kv_cache.num_layers != self.config.num_layers or kv_cache.batch_size != b:
                raise ValueError(
                    f"kv_cache has {kv_cache.num_layers} layers and batch {kv_cache.batch_size}; the model has "
                    f"{self.config.num_layers} layers and the input batch is {b}"
                )
            n_past = kv_cache.length

        mask, is_causal = self._prepare_mask(attention_mask, b, n, n_past, x.device)
        if position_ids is None:
            position_ids = self._default_positions(attention_mask, n, n_past, x.device)
        elif position_ids.dim() != 2 or position_ids.shape[1] != n or position_ids.shape[0] not in (1, b):
            raise ValueError(f"position_ids must be ({b} or 1, {n}), got {tuple(position_ids.shape)}")
        cos, sin = self.rotary(position_ids.to(x.device), x.dtype)  # (B|1, L, hd) each

        use_ckpt = (
            self.gradient_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        )
        layer_inputs: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            if output_layer_inputs:
                layer_inputs.append(x)
            if use_ckpt:
                x = checkpoint(layer, x, cos, sin, mask, is_causal, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, is_causal, kv_cache, i)  # (B, L, D)
        if kv_cache is not None:
            kv_cache.advance(n)
        h = self.final_norm(x)  # (B, L, D)
        out_logits = None
        if logits == "all":
            out_logits = self.compute_logits(h)  # (B, L, V)
        elif logits == "last":
            out_logits = self.compute_logits(h[:, -1:])  # (B, 1, V)
        return DecoderOutput(h, out_logits, tuple(layer_inputs) if output_layer_inputs else None)

    def _default_positions(
        self, attention_mask: torch.Tensor | None, n: int, n_past: int, device: torch.device
    ) -> torch.Tensor:
        if n_past + n > self.config.max_position:
            raise ValueError(
                f"sequence of {n_past + n} tokens exceeds the model's max_position {self.config.max_position}"
            )
        if attention_mask is not None and attention_mask.dim() == 2:
            pos = attention_mask.long().cumsum(-1) - 1  # (B, Lk): index among real tokens
            return pos.clamp(min=0)[:, n_past:].to(device)  # (B, L)
        return torch.arange(n_past, n_past + n, device=device)[None]  # (1, L)

    @staticmethod
    def _prepare_mask(
        attention_mask: torch.Tensor | None, b: int, n: int, n_past: int, device: torch.device
    ) -> tuple[torch.Tensor | None, bool]:
        """-> (mask (B|1, 1, L, Lk) bool or None, is_causal) for scaled_dot_product_attention."""
        n_keys = n_past + n
        if attention_mask is None:
            if n_past == 0 and n > 1:
                return None, True  # SDPA's own causal path (flash kernel on GPU)
            if n == 1:
                return None, False  # one new token reads every cached key
            return causal_mask(n, n_past, device)[None, None], False
        if attention_mask.dtype != torch.bool:
            raise TypeError(
                f"attention_mask must be torch.bool (True = real token / may attend), got {attention_mask.dtype}; "
                "an HF tokenizer's 0/1 mask converts with .bool()"
            )
        attention_mask = attention_mask.to(device)
        if attention_mask.dim() == 2:
            if attention_mask.shape != (b, n_keys):
                raise ValueError(
                    f"2-D attention_mask is a key padding mask and must be (B={b}, cached + current = {n_keys}), "
                    f"got {tuple(attention_mask.shape)}; pass a shared (L, Lk) attention matrix as mask[None]"
                )
            mask = causal_mask(n, n_past, device)[None] & attention_mask[:, None, :]  # (B, L, Lk)
            mask = mask | self_mask(n, n_past, device)[None]  # a padding query still reads itself
            return mask[:, None], False  # (B, 1, L, Lk)
        if attention_mask.dim() == 3:
            if attention_mask.shape[1:] != (n, n_keys) or attention_mask.shape[0] not in (1, b):
                raise ValueError(
                    f"3-D attention_mask must be (B={b} or 1, L={n}, cached + current = {n_keys}), "
                    f"got {tuple(attention_mask.shape)}"
                )
            if not bool(attention_mask.any(dim=-1).all()):
                raise ValueError(
                    "attention_mask has a query row with no allowed key; attention would return NaN. "
                    "Let every token at least attend to itself (see attention.apply_key_padding)."
                )
            return attention_mask[:, None], False  # (B|1, 1, L, Lk)
        raise ValueError(
            f"attention_mask must be (B, Lk) key padding or (B, L, Lk) bool, got {tuple(attention_mask.shape)}"
        )


def causal_mask(n: int, n_past: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(L, Lpast + L) bool: query i (absolute position n_past + i) reads keys 0 .. n_past + i."""
    return torch.ones(n, n_past + n, dtype=torch.bool, device=device).tril(diagonal=n_past)


def self_mask(n: int, n_past: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(L, Lpast + L) bool: only each query's own key."""
    q = torch.arange(n, device=device)[:, None] + n_past  # (L, 1)
    return q == torch.arange(n_past + n, device=device)[None]  # (L, Lk)
