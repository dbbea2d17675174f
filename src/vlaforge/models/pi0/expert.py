"""π0's action expert and the joint ("mixture of two transformers") attention.

π0 runs two sets of transformer weights over one sequence::

    [ images + language (prefix) | state | noisy actions ]   <- one sequence, ONE attention per layer
      backbone (Gemma) weights     action-expert weights

At every layer each token goes through the norms, Q/K/V/O projections and MLP of *its own* weight
set; the queries, keys and values of both sets are concatenated and attend together under the
three-block rule of :func:`vlaforge.models.attention.pi0_blocks` (full inside a block, causal
between blocks). The two weight sets therefore interact only through self-attention, which is why
they must share depth, number of heads, KV heads and head_dim, while width and MLP size differ
(π0: Gemma-2B 2048 / 16384 and an expert of 1024 / 4096).

The prefix part is *not* a copy of the Gemma code: :class:`JointTransformer` owns a
:class:`~vlaforge.models.lm.DecoderLM` and calls its layer modules (RMSNorm, q/k/v/o projections,
RoPE, gated MLP, final norm), so a PaliGemma language-model checkpoint loads into
``JointTransformer.backbone`` unchanged, and a prefix-only pass equals ``DecoderLM.forward``. The
expert is built from the same :class:`~vlaforge.models.lm.decoder.DecoderLayer` class with its own
``LMConfig`` (:func:`expert_lm_config`); it has no embeddings and no output head (its inputs and
outputs are the policy's action projections).

Because the prefix never attends to later blocks its keys/values do not depend on the actions, so
sampling stores them in a :class:`~vlaforge.models.lm.KVCache` once per chunk and each flow step
runs only the expert on the action tokens (``streams = [None, actions]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlaforge.models.lm import DecoderLM, KVCache, LMConfig
from vlaforge.models.lm.decoder import DecoderLayer, RMSNorm, apply_rope, repeat_kv


def expert_lm_config(backbone: LMConfig, width: int, mlp_dim: int) -> LMConfig:
    """The expert's shape: the backbone's depth, heads, KV heads, head_dim, RoPE and family; own width/MLP.

    ``vocab_size`` is 1 because the expert has no embedding table (LMConfig needs a positive value).
    """
    return backbone.replace(hidden_size=width, intermediate_size=mlp_dim, vocab_size=1, tie_embeddings=True)


class ActionExpert(nn.Module):
    """The expert's weights: ``num_layers`` decoder layers and a final RMSNorm (no embeddings, no head)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, one_plus_weight=config.family == "gemma"
        )
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Same init as DecoderLM: normal(0, 0.02) projections, norms at identity."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, RMSNorm):
                m.reset_parameters()


class JointTransformer(nn.Module):
    """Backbone + expert over one sequence ``[stream 0 (backbone) | stream 1 (expert)]`` with joint attention.

    forward(streams, attention_mask, position_ids, kv_cache) -> per-stream final-normed outputs.

    streams: ``[prefix (B, P, D_backbone) or None, suffix (B, S, D_expert) or None]``; at least one.
    attention_mask: bool ``(B or 1, P + S, cached + P + S)``, True = may attend; the key columns are
        the cached tokens first, then this pass's prefix tokens, then its suffix tokens.
    position_ids: ``(B or 1, P + S)`` RoPE positions of this pass's tokens.
    kv_cache: a :class:`KVCache` with ``num_layers`` layers; this pass's keys/values (both streams)
        are appended to it, and its cached tokens are attended to as the mask says.
    """

    def __init__(self, backbone: DecoderLM, expert: ActionExpert):
        super().__init__()
        b, e = backbone.config, expert.config
        for name in ("num_layers", "num_heads", "num_kv_heads", "head_dim", "rope_theta"):
            if getattr(b, name) != getattr(e, name):
                raise ValueError(
                    f"JointTransformer: backbone and expert must share {name} (joint attention per layer), "
                    f"got {getattr(b, name)} and {getattr(e, name)}"
                )
        self.backbone = backbone
        self.expert = expert
        self.gradient_checkpointing = False

    @property
    def config(self) -> LMConfig:
        return self.backbone.config

    def forward(
        self,
        streams: Sequence[torch.Tensor | None],
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        kv_cache: KVCache | None = None,
    ) -> list[torch.Tensor | None]:
        if len(streams) != 2 or all(x is None for x in streams):
            raise ValueError(
                "JointTransformer.forward: streams = [prefix or None, suffix or None], not both None"
            )
        widths = (self.backbone.config.hidden_size, self.expert.config.hidden_size)
        xs = list(streams)
        lengths = [0 if x is None else x.shape[1] for x in xs]
        batch = next(x.shape[0] for x in xs if x is not None)
        for i, (x, d) in enumerate(zip(xs, widths)):
            if x is not None and (x.dim() != 3 or x.shape[0] != batch or x.shape[2] != d):
                raise ValueError(f"stream {i} must be (B={batch}, L, {d}), got {tuple(x.shape)}")
        n = sum(lengths)
        n_past = 0 if kv_cache is None else kv_cache.length
        if attention_mask.dtype != torch.bool or attention_mask.dim() != 3:
            raise ValueError(
                f"attention_mask must be bool (B, L, Lk), got {attention_mask.dtype} {tuple(attention_mask.shape)}"
            )
        if attention_mask.shape[1:] != (n, n_past + n) or attention_mask.shape[0] not in (1, batch):
            raise ValueError(
                f"attention_mask must be (B={batch} or 1, L={n}, cached + current = {n_past + n}), "
                f"got {tuple(attention_mask.shape)}"
            )
        if position_ids.dim() != 2 or position_ids.shape[1] != n or position_ids.shape[0] not in (1, batch):
            raise ValueError(f"position_ids must be ({batch} or 1, {n}), got {tuple(position_ids.shape)}")
        if kv_cache is not None and kv_cache.num_layers != self.config.num_layers:
            raise ValueError(f"kv_cache has {kv_cache.num_layers} layers, the model {self.config.num_layers}")
        dtype = next(x for x in xs if x is not None).dtype
        cos, sin = self.backbone.rotary(position_ids.to(attention_mask.device), dtype)  # (B|1, L, hd) each
        mask = attention_mask[:, None]  # (B|1, 1, L, Lk)
        use_ckpt = (
            self.gradient_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        )
        for i in range(self.config.num_layers):
            if use_ckpt:
                xs = checkpoint(self._layer, i, xs, lengths, cos, sin, mask, None, use_reentrant=False)
            else:
                xs = self._layer(i, xs, lengths, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(n)
        norms = (self.backbone.final_norm, self.expert.final_norm)
        return [None if x is None else norm(x) for x, norm in zip(xs, norms)]

    def _layer(
        self,
        i: int,
        xs: list[torch.Tensor | None],
        lengths: list[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        kv_cache: KVCache | None,
    ) -> list[torch.Tensor | None]:
        """One layer: per-stream norm + QKV, one joint attention, per-stream output projection + MLP."""
        layers = (self.backbone.layers[i], self.expert.layers[i])
        qs, ks, vs = [], [], []
        start = 0
        for x, layer, n in zip(xs, layers, lengths):
            if x is None:
                continue
            attn = layer.attn
            b = x.shape[0]
            h = layer.attn_norm(x)  # (B, n, D_stream)
            q = attn.q_proj(h).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, n, hd)
            k = attn.k_proj(h).view(b, n, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # (B, KVH, n, hd)
            v = attn.v_proj(h).view(b, n, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # (B, KVH, n, hd)
            c, s = cos[:, start : start + n], sin[:, start : start + n]
            qs.append(apply_rope(q, c, s))
            ks.append(apply_rope(k, c, s))
            vs.append(v)
            start += n
        q, k, v = torch.cat(qs, dim=2), torch.cat(ks, dim=2), torch.cat(vs, dim=2)  # (B, H|KVH, L, hd)
        if kv_cache is not None:
            k, v = kv_cache.update(i, k, v)  # (B, KVH, cached + L, hd)
        attn0 = layers[0].attn
        groups = attn0.num_heads // attn0.num_kv_heads
        y = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=mask)
        b, L = y.shape[0], y.shape[2]
        y = y.transpose(1, 2).reshape(b, L, attn0.num_heads * attn0.head_dim)  # (B, L, H * hd)
        out: list[torch.Tensor | None] = []
        start = 0
        for x, layer, n in zip(xs, layers, lengths):
            if x is None:
                out.append(None)
                continue
            x = x + layer.attn.o_proj(y[:, start : start + n].to(x.dtype))  # (B, n, D_stream)
            out.append(x + layer.mlp(layer.mlp_norm(x)))
            start += n
        return out


def sincos_time_embedding(tau: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """φ(τ): (B,) -> (B, dim) = [sin(2π τ / p_j), cos(2π τ / p_j)], periods p_j log-spaced in [min, max].

    openpi's ``posemb_sincos`` (min 4e-3, max 4.0): the short periods resolve small differences of τ,
    the long ones give a smooth code of the whole range.
    """
    if dim % 2:
        raise ValueError(f"sincos_time_embedding: dim must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=tau.device)  # (dim/2,)
    period = min_period * (max_period / min_period) ** fraction  # (dim/2,)
    angles = tau.double()[:, None] * (2 * math.pi / period)[None]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(tau.dtype)  # (B, dim)
