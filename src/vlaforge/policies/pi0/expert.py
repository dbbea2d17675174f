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

Two options serve π0.5 (arXiv 2504.16054, ``pi05_policy.py``); their defaults are π0's:

* ``ActionExpert(time_conditioning="adarms", cond_dim=...)``: the flow time enters the expert through
  **adaptive RMSNorm** (:class:`AdaRMSNorm`, every norm of the expert) instead of being concatenated into
  the action-token MLP (``"concat"``, π0); ``JointTransformer.forward(..., expert_cond=(B, cond_dim))``
  then carries the time features;
* ``JointTransformer(..., insulate=True)``: **knowledge insulation** (arXiv 2505.23705): the expert's
  queries read *stop-gradient* (detached) keys and values of the backbone tokens, so no loss on the
  expert's outputs reaches the backbone; backbone tokens must not attend to expert tokens (checked).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlaforge.models.lm import DecoderLM, KVCache, LMConfig
from vlaforge.models.lm.decoder import DecoderLayer, RMSNorm, apply_rope, repeat_kv

TIME_CONDITIONING = ("concat", "adarms")  # how the flow time enters the expert: π0, π0.5


def expert_lm_config(backbone: LMConfig, width: int, mlp_dim: int) -> LMConfig:
    """The expert's shape: the backbone's depth, heads, KV heads, head_dim, RoPE and family; own width/MLP.

    ``vocab_size`` is 1 because the expert has no embedding table (LMConfig needs a positive value).
    """
    return backbone.replace(hidden_size=width, intermediate_size=mlp_dim, vocab_size=1, tie_embeddings=True)


class AdaRMSNorm(nn.Module):
    """Adaptive RMSNorm (π0.5's time conditioning): gain, shift and a residual gate from a condition c.

    ``[scale, shift, gate] = modulation(c)`` (one Linear, cond_dim -> 3·dim, openpi's layout) and
    ``forward(x, c) = (x̂ · (1 + scale) + shift, gate)`` with ``x̂ = x / rms(x)`` in float32; the layer
    that owns the norm adds its branch as ``x + gate · f(x̂ …)``. There is no gain parameter of its own:
    the condition supplies it.

    Initialisation: weight 0 and bias (scale 0, shift 0, gate 1), so at init the output is exactly the
    plain RMSNorm at its own init (Gemma's ``(1 + 0)·x̂``, Llama's ``1·x̂``) and the gate is 1 (the plain
    residual): an adaRMS expert starts as the unconditioned one and learns how the time modulates it.
    (openpi zero-initialises the whole modulation, gate included, which starts each expert layer
    closed; trained weights mean the same either way because the formula is the same.)
    """

    def __init__(self, dim: int, eps: float, cond_dim: int):
        super().__init__()
        if dim < 1 or cond_dim < 1:
            raise ValueError(f"AdaRMSNorm: dim and cond_dim must be >= 1, got {dim} and {cond_dim}")
        self.dim, self.eps = dim, eps
        self.modulation = nn.Linear(cond_dim, 3 * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.modulation.weight)
        with torch.no_grad():
            self.modulation.bias.zero_()
            self.modulation.bias[2 * self.dim :] = 1.0  # gate 1: the plain residual

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, dim), cond (B, cond_dim) -> normed (B, L, dim) in x's dtype, gate (B, 1, dim)."""
        mod = self.modulation(cond.to(x.dtype))[:, None]  # (B, 1, 3·dim)
        scale, shift, gate = mod.chunk(3, dim=-1)  # (B, 1, dim) each
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (B, L, dim) float32
        return (h * (1.0 + scale.float()) + shift.float()).type_as(x), gate


def apply_norm(
    norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A plain RMSNorm -> (norm(x), None); an :class:`AdaRMSNorm` -> (normed, gate) under ``cond``."""
    if isinstance(norm, AdaRMSNorm):
        if cond is None:
            raise ValueError("an adaRMS expert needs its condition: pass expert_cond (B, cond_dim)")
        return norm(x, cond)
    return norm(x), None


def gated_residual(x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``x + branch`` (plain), or ``x + branch · gate`` under an :class:`AdaRMSNorm`'s gate."""
    return x + branch if gate is None else x + branch * gate


class ActionExpert(nn.Module):
    """The expert's weights: ``num_layers`` decoder layers and a final RMSNorm (no embeddings, no head).

    time_conditioning: ``"concat"`` (π0: plain RMSNorms; the policy mixes φ(τ) into the action tokens)
    or ``"adarms"`` (π0.5: every norm of the expert, the final one included, is an :class:`AdaRMSNorm`
    driven by a ``cond_dim`` condition passed to ``JointTransformer.forward`` as ``expert_cond``).
    """

    def __init__(self, config: LMConfig, *, time_conditioning: str = "concat", cond_dim: int | None = None):
        super().__init__()
        if time_conditioning not in TIME_CONDITIONING:
            raise ValueError(
                f"ActionExpert: time_conditioning={time_conditioning!r}, choose one of {TIME_CONDITIONING}"
            )
        if (time_conditioning == "adarms") != (cond_dim is not None):
            raise ValueError(
                f"ActionExpert: cond_dim (the adaRMS condition width) is required with time_conditioning='adarms' "
                f"and not accepted with 'concat'; got {time_conditioning!r} and cond_dim={cond_dim}"
            )
        self.config = config
        self.time_conditioning = time_conditioning
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_layers)])
        D, eps = config.hidden_size, config.rms_norm_eps
        if cond_dim is not None:
            for layer in self.layers:
                layer.attn_norm = AdaRMSNorm(D, eps, cond_dim)
                layer.mlp_norm = AdaRMSNorm(D, eps, cond_dim)
            self.final_norm: nn.Module = AdaRMSNorm(D, eps, cond_dim)
        else:
            self.final_norm = RMSNorm(D, eps, one_plus_weight=config.family == "gemma")
        self.reset_parameters()

    @property
    def adaptive(self) -> bool:
        """True when the norms are adaptive (an ``expert_cond`` is required)."""
        return self.time_conditioning == "adarms"

    def reset_parameters(self, std: float = 0.02) -> None:
        """Same init as DecoderLM: normal(0, 0.02) projections, norms at identity; adaRMS norms last
        (their modulation Linear is zero-initialised, see :class:`AdaRMSNorm`)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, RMSNorm):
                m.reset_parameters()
        for m in self.modules():
            if isinstance(m, AdaRMSNorm):
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
    expert_cond: ``(B, cond_dim)`` condition of an adaRMS expert (π0.5: the flow-time features);
        required when the expert is adaptive and the suffix stream is given, refused otherwise.

    insulate: knowledge insulation. The expert's queries attend to ``detach()``-ed keys/values of every
        key that is not one of this pass's expert tokens (the backbone tokens and any cached token: a
        cache is filled without gradients at inference); the backbone's queries never read expert
        tokens (the mask must say so, checked). The forward values are unchanged; only the gradient
        from the expert's outputs into the backbone is cut (one attention call per stream).
    """

    def __init__(self, backbone: DecoderLM, expert: ActionExpert, *, insulate: bool = False):
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
        self.insulate = insulate
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype; inputs are cast to it and outputs come back in it (a bf16 copy for inference)."""
        return self.backbone.final_norm.weight.dtype

    @property
    def config(self) -> LMConfig:
        return self.backbone.config

    def forward(
        self,
        streams: Sequence[torch.Tensor | None],
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        kv_cache: KVCache | None = None,
        *,
        expert_cond: torch.Tensor | None = None,
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
        cond = self._check_cond(expert_cond, xs[1] is not None, batch)
        if self.insulate and lengths[0] and lengths[1]:
            expert_keys = attention_mask[:, : lengths[0], n_past + lengths[0] :]  # backbone rows, expert keys
            if bool(expert_keys.any()):
                raise ValueError(
                    "knowledge insulation: backbone tokens must not attend to expert tokens; the mask lets "
                    "some backbone query read a suffix key"
                )
        dtype = self.dtype  # streams in another dtype (fp32 embeddings, bf16 weights) are cast to it
        xs = [None if x is None else x.to(dtype) for x in xs]
        cond = None if cond is None else cond.to(dtype)
        cos, sin = self.backbone.rotary(position_ids.to(attention_mask.device), dtype)  # (B|1, L, hd) each
        mask = attention_mask[:, None]  # (B|1, 1, L, Lk)
        use_ckpt = (
            self.gradient_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        )
        for i in range(self.config.num_layers):
            if use_ckpt:
                xs = checkpoint(self._layer, i, xs, lengths, cos, sin, mask, None, cond, use_reentrant=False)
            else:
                xs = self._layer(i, xs, lengths, cos, sin, mask, kv_cache, cond)
        if kv_cache is not None:
            kv_cache.advance(n)
        norms = (self.backbone.final_norm, self.expert.final_norm)
        return [None if x is None else apply_norm(norm, x, cond)[0] for x, norm in zip(xs, norms)]

    def _check_cond(self, cond: torch.Tensor | None, has_suffix: bool, batch: int) -> torch.Tensor | None:
        """The adaRMS condition (B, cond_dim) when the expert runs and needs one; None otherwise."""
        if not self.expert.adaptive:
            if cond is not None:
                raise ValueError(
                    "expert_cond given, but the expert is not adaptive (time_conditioning='concat')"
                )
            return None
        if not has_suffix:
            return None  # a backbone-only pass (prefix into the cache) needs no condition
        width = self.expert.final_norm.modulation.in_features
        if cond is None or cond.dim() != 2 or cond.shape[0] != batch or cond.shape[1] != width:
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"the adaRMS expert needs expert_cond of shape (B={batch}, {width}), got {got}")
        return cond

    def _layer(
        self,
        i: int,
        xs: list[torch.Tensor | None],
        lengths: list[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        kv_cache: KVCache | None,
        cond: torch.Tensor | None = None,
    ) -> list[torch.Tensor | None]:
        """One layer: per-stream norm + QKV, one joint attention, per-stream output projection + MLP.

        cond: the adaRMS condition (expert stream only; the backbone's norms are plain)."""
        layers = (self.backbone.layers[i], self.expert.layers[i])
        qs, ks, vs = [], [], []
        gates: list[torch.Tensor | None] = []
        start = 0
        for x, layer, n in zip(xs, layers, lengths):
            if x is None:
                gates.append(None)
                continue
            attn = layer.attn
            b = x.shape[0]
            h, gate = apply_norm(layer.attn_norm, x, cond)  # (B, n, D_stream)
            gates.append(gate)
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
        n0 = lengths[0]
        if self.insulate and lengths[1] and k.shape[2] > lengths[1]:
            # Knowledge insulation: backbone queries read the backbone keys (cached + this pass's prefix),
            # expert queries read those keys/values detached, plus their own.
            n_bb = k.shape[2] - lengths[1]  # key columns before this pass's expert tokens
            parts = []
            if n0:
                kb, vb = repeat_kv(k[:, :, :n_bb], groups), repeat_kv(v[:, :, :n_bb], groups)
                parts.append(
                    F.scaled_dot_product_attention(q[:, :, :n0], kb, vb, attn_mask=mask[..., :n0, :n_bb])
                )
            ke = torch.cat([k[:, :, :n_bb].detach(), k[:, :, n_bb:]], dim=2)  # (B, KVH, Lk, hd)
            ve = torch.cat([v[:, :, :n_bb].detach(), v[:, :, n_bb:]], dim=2)
            parts.append(
                F.scaled_dot_product_attention(
                    q[:, :, n0:], repeat_kv(ke, groups), repeat_kv(ve, groups), attn_mask=mask[..., n0:, :]
                )
            )
            y = torch.cat(parts, dim=2)  # (B, H, L, hd)
        else:
            y = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=mask)
        b, L = y.shape[0], y.shape[2]
        y = y.transpose(1, 2).reshape(b, L, attn0.num_heads * attn0.head_dim)  # (B, L, H * hd)
        out: list[torch.Tensor | None] = []
        start = 0
        for x, layer, n, gate in zip(xs, layers, lengths, gates):
            if x is None:
                out.append(None)
                continue
            o = layer.attn.o_proj(y[:, start : start + n].to(x.dtype))  # (B, n, D_stream)
            x = gated_residual(x, o, gate)
            h, gate2 = apply_norm(layer.mlp_norm, x, cond)
            out.append(gated_residual(x, layer.mlp(h), gate2))
            start += n
        return out
