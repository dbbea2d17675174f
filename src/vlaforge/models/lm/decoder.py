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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode
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
    """Grouped-query self-attention with RoPE; keys/values optionally appended to a :class:`KVCache`,
    or, with ``cache_position``, written at those slots, attending over the whole cache buffer."""

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
        cache_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, n, _ = x.shape  # (B, L, D)
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KVH, L, hd)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KVH, L, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None and cache_position is not None:
            k, v = cache.write_at(layer_idx, k, v, cache_position)  # (B, KVH, max_len, hd): static shape
        elif cache is not None:
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
        cache_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache, layer_idx, cache_position)
        x = x + h  # (B, L, D)
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
    cache_position (L,) int64: the **static-shape** cache path (for ``torch.compile``; see
      :meth:`compile_decoding`). This pass's keys/values are written at these cache slots
      (:meth:`KVCache.write_at`) and the queries attend over the whole buffer, so the key columns
      are all ``kv_cache.max_len`` slots whatever the fill level. ``attention_mask`` is then
      required: (B or 1, L, max_len) bool, True for the slots each query may read (its own included;
      unfilled slots hold zeros or stale keys and must be False). ``kv_cache.length`` is neither read
      nor moved: the caller tracks the fill level. ``position_ids`` default to ``cache_position``.
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
        # compile_decoding(): whether the static-shape path runs compiled, and the compiled function.
        # The compiled function is unbound (it takes the model as its first argument), so a deep copy
        # of the model, which shares it, still runs its own weights.
        self.decode_compiled = False
        self._compiled_static: Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self._compile_mode: str | None = None
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
        cache_position: torch.Tensor | None = None,
    ) -> DecoderOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "DecoderLM.forward: pass exactly one of input_ids (B, L) or inputs_embeds (B, L, D)"
            )
        if cache_position is not None:
            return self._static_forward(
                input_ids, inputs_embeds, attention_mask, position_ids, kv_cache, cache_position, logits,
                output_layer_inputs,
            )  # fmt: skip
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

    # ------------------------------------------------------------------------- static-shape decoding

    def compile_decoding(self, enabled: bool = True, *, mode: str | None = None) -> DecoderLM:
        """Opt in to (or out of) a ``torch.compile``d static-shape decode step; returns ``self``.

        Why a separate path: the growing cache hands attention a key view one slot longer every step,
        so a static-shape compile would build one graph per length. The static path
        (``forward(cache_position=...)``) writes the new key/value at a slot held in a tensor and
        attends over the whole fixed-size buffer under a mask of the filled slots, so one graph
        (``dynamic=False``, ``fullgraph=True``) serves every decode step. Once enabled,
        :func:`~vlaforge.models.lm.generate_greedy` with ``use_cache=True`` (the VLA / π0-FAST
        policies' default ``predict``) decodes through it; the prompt pass stays eager.

        The first decode step compiles (several CPU-seconds per graph; inductor needs a C++ compiler
        on CPU, Triton on GPU). A graph is specialized to the batch size, the cache length (prompt +
        ``max_new_tokens`` - 1, fixed for a policy whose prompts are padded to ``text_max_len``) and
        the grad mode (``predict``'s inference_mode and a bare ``no_grad`` call compile one each);
        another shape compiles another graph, as many as torch._dynamo's ``recompile_limit`` allows.
        ``compile_decoding(False)`` goes back to the eager growing-cache path; the compiled step is kept
        for re-enabling. Under a ``TorchDispatchMode`` (e.g. ``FlopCounterMode``), which torch.compile
        does not support, the static step runs eagerly. mode: ``torch.compile``'s mode (None =
        default); changing it recompiles.
        """
        if enabled and (self._compiled_static is None or mode != self._compile_mode):
            self._compiled_static = torch.compile(
                DecoderLM._static_layers, dynamic=False, fullgraph=True, mode=mode
            )
            self._compile_mode = mode
        self.decode_compiled = bool(enabled)
        return self

    def _static_forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        kv_cache: KVCache | None,
        cache_position: torch.Tensor,
        logits: LogitsMode,
        output_layer_inputs: bool,
    ) -> DecoderOutput:
        """``forward(cache_position=...)``: check shapes (never values: no host sync per step), then run
        :meth:`_static_layers`, compiled when :meth:`compile_decoding` is on."""
        x = input_ids if input_ids is not None else inputs_embeds
        assert x is not None
        b, n = x.shape[:2]
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got {tuple(input_ids.shape)}")
        if inputs_embeds is not None and (
            inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size
        ):
            raise ValueError(
                f"inputs_embeds must be (B, L, {self.config.hidden_size}), got {tuple(inputs_embeds.shape)}"
            )
        if logits not in ("all", "last", "none"):
            raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        if output_layer_inputs:
            raise ValueError("output_layer_inputs is not supported with cache_position (static decoding)")
        if kv_cache is None:
            raise ValueError(
                "cache_position needs a kv_cache: the static path writes keys/values at those slots"
            )
        if kv_cache.num_layers != self.config.num_layers or kv_cache.batch_size != b:
            raise ValueError(
                f"kv_cache has {kv_cache.num_layers} layers and batch {kv_cache.batch_size}; the model has "
                f"{self.config.num_layers} layers and the input batch is {b}"
            )
        if cache_position.dim() != 1 or cache_position.shape[0] != n or cache_position.dtype != torch.long:
            raise ValueError(
                f"cache_position must be ({n},) int64 cache slots for {n} tokens, got "
                f"{tuple(cache_position.shape)} {cache_position.dtype}"
            )
        slots = kv_cache.max_len
        if (
            attention_mask is None
            or attention_mask.dtype != torch.bool
            or attention_mask.dim() != 3
            or attention_mask.shape[0] not in (1, b)
            or attention_mask.shape[1:] != (n, slots)
        ):
            got = None if attention_mask is None else (tuple(attention_mask.shape), attention_mask.dtype)
            raise ValueError(
                f"with cache_position, attention_mask must be a (B={b} or 1, L={n}, max_len={slots}) bool "
                f"mask of the cache slots each query may read (its own included), got {got}"
            )
        if position_ids is None:
            position_ids = cache_position[None]  # (1, L)
        elif position_ids.dim() != 2 or position_ids.shape[1] != n or position_ids.shape[0] not in (1, b):
            raise ValueError(f"position_ids must be ({b} or 1, {n}), got {tuple(position_ids.shape)}")
        # Under a TorchDispatchMode (FlopCounterMode counting the bench's FLOPs) torch.compile refuses
        # the frame, and a refused frame is skipped for the rest of the process; there the same step
        # runs eagerly: the same ops, so the same FLOP count.
        compiled = self.decode_compiled and _get_current_dispatch_mode() is None
        run = self._compiled_static if compiled else DecoderLM._static_layers
        assert run is not None
        h, out_logits = run(
            self, input_ids, inputs_embeds, attention_mask, position_ids, kv_cache, cache_position, logits
        )
        return DecoderOutput(h, out_logits)

    def _static_layers(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        kv_cache: KVCache,
        cache_position: torch.Tensor,
        logits: LogitsMode,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The traced body of the static path (no Python branch on tensor values, no graph break):
        embed -> layers over the whole cache buffer -> final norm -> logits. -> (h (B, L, D), logits)."""
        x = self.embed(input_ids) if input_ids is not None else inputs_embeds  # (B, L, D)
        assert x is not None
        cos, sin = self.rotary(position_ids, x.dtype)  # (B|1, L, hd) each
        mask = attention_mask[:, None]  # (B|1, 1, L, max_len)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, False, kv_cache, i, cache_position)  # (B, L, D)
        h = self.final_norm(x)  # (B, L, D)
        if logits == "all":
            return h, self.compute_logits(h)  # (B, L, V)
        if logits == "last":
            return h, self.compute_logits(h[:, -1:])  # (B, 1, V)
        return h, None

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
