"""Read a llama.cpp GGUF file of a Llama-architecture LM: its shape, its weights dequantized to float32
under Hugging Face names, and its tokenizer. What :mod:`vlaforge.models.lm.pretrained` converts once
into a cached Hugging Face directory that :func:`~vlaforge.models.lm.checkpoint.load_hf_checkpoint` loads.

The file is read with the ``gguf`` package (llama.cpp's own reader and numpy dequantizers, one
implementation of every quantization format), not through transformers' ``from_pretrained(gguf_file=)``:
the mapping below is strict (every tensor named, every shape checked, nothing silently skipped or
randomly initialized), and the parity test then compares our result with transformers' independent
GGUF path (its own reader and torch dequantizers) — see docs/pretrained.md.

Tensor names (GGUF -> HF)::

    token_embd.weight            model.embed_tokens.weight
    output_norm.weight           model.norm.weight
    output.weight                lm_head.weight            (absent when the embeddings are tied)
    blk.N.attn_norm.weight       model.layers.N.input_layernorm.weight
    blk.N.attn_{q,k,v}.weight    model.layers.N.self_attn.{q,k,v}_proj.weight
    blk.N.attn_output.weight     model.layers.N.self_attn.o_proj.weight
    blk.N.ffn_norm.weight        model.layers.N.post_attention_layernorm.weight
    blk.N.ffn_{gate,up,down}.weight  model.layers.N.mlp.{gate,up,down}_proj.weight

llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` from HF's rotate-half RoPE layout
(first half / second half of each head) to interleaved pairs; :func:`unpermute_rope_rows` undoes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.errors import mismatch_report
from vlaforge.models.lm.checkpoint import LMCheckpointError, ours_to_hf
from vlaforge.models.lm.config import LMConfig
from vlaforge.models.lm.decoder import DecoderLM

_TOP_LEVEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_PARTS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
# Tensors llama.cpp may add that carry nothing DecoderLM uses (precomputed RoPE tables).
_IGNORED = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
# Metadata arrays too large to keep (the vocabulary and merges are read by the tokenizer converter).
_BIG_ARRAYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
)


def import_gguf() -> Any:
    """The ``gguf`` package, or an ImportError that says how to install it."""
    try:
        import gguf
    except ImportError as e:
        raise ImportError(
            "reading a GGUF file needs the 'gguf' package: pip install gguf  (or pip install 'vlaforge[pretrained]')"
        ) from e
    return gguf


def gguf_to_hf(name: str) -> str | None:
    """GGUF tensor name -> Hugging Face Llama parameter name, or None when it is not a decoder weight."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    m = _GGUF_LAYER.match(name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"model.layers.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}"
    return None


def hf_to_gguf(name: str) -> str:
    """Hugging Face Llama parameter name -> GGUF tensor name (the inverse of :func:`gguf_to_hf`)."""
    for g, h in _TOP_LEVEL.items():
        if h == name:
            return g
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
    if m:
        for g, h in _LAYER_PARTS.items():
            if h == m.group(2):
                return f"blk.{m.group(1)}.{g}"
    raise KeyError(f"no GGUF name for {name!r}")


def unpermute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's interleaved-pair row order -> HF's rotate-half order, per head. w: (heads * hd, D)."""
    hd = w.shape[0] // heads
    return w.reshape(heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)  # (heads*hd, D)


def permute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half row order -> llama.cpp's interleaved pairs (what its converter writes)."""
    hd = w.shape[0] // heads
    return w.reshape(heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)  # (heads*hd, D)


@dataclass
class GGUFCheckpoint:
    """A GGUF file read into HF terms.

    config: the decoder's shape from the file's ``llama.*`` metadata;
    tensors: HF name -> float32 tensor (dequantized, RoPE rows back in HF order);
    metadata: the scalar metadata (``general.*``, ``llama.*``, ``tokenizer.*`` without the big arrays);
    quantization: GGUF tensor type name -> how many tensors were stored in it (e.g. {"Q4_1": 210}).
    """

    config: LMConfig
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, int] = field(default_factory=dict)


def _metadata(reader: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in _BIG_ARRAYS:
            continue
        try:
            out[key] = f.contents()
        except Exception:  # an exotic field type: not needed by this loader
            continue
    return out


def config_from_gguf(meta: dict[str, Any], path: Path, *, tied: bool, vocab_size: int) -> LMConfig:
    """LMConfig from a GGUF file's ``llama.*`` metadata (only the default RoPE is accepted)."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        hint = (
            " (Gemma-3 GGUF files are not supported yet: the decoder lacks Gemma-3's QK-norm, sandwich "
            "norms and local/global attention layers)"
            if isinstance(arch, str) and arch.startswith("gemma")
            else ""
        )
        raise LMCheckpointError(
            f"{path}: GGUF general.architecture is {arch!r}; only 'llama' files load into DecoderLM{hint}"
        )

    def need(key: str) -> Any:
        full = f"llama.{key}"
        if full not in meta:
            raise LMCheckpointError(f"{path}: GGUF metadata lacks '{full}'")
        return meta[full]

    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise LMCheckpointError(
            f"{path}: GGUF llama.rope.scaling.type is {scaling!r}; only the default RoPE is implemented"
        )
    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(
        meta.get("llama.attention.key_length") or meta.get("llama.rope.dimension_count") or hidden // heads
    )
    try:
        return LMConfig(
            family="llama",
            vocab_size=int(meta.get("llama.vocab_size") or vocab_size),
            hidden_size=hidden,
            intermediate_size=int(need("feed_forward_length")),
            num_layers=int(need("block_count")),
            num_heads=heads,
            num_kv_heads=int(meta.get("llama.attention.head_count_kv") or heads),
            head_dim=head_dim,
            rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
            rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
            max_position=int(meta.get("llama.context_length", 2048)),
            tie_embeddings=tied,
            hidden_act="silu",
        )
    except ValueError as e:
        raise LMCheckpointError(f"{path}: GGUF metadata describes an invalid model: {e}") from e


def read_gguf(path: str | Path) -> GGUFCheckpoint:
    """Config + float32 HF-named weights of a Llama GGUF file; strict (see the module docstring).

    Raises :class:`LMCheckpointError` naming every missing, unexpected or wrongly shaped tensor.
    """
    gguf = import_gguf()
    path = Path(path)
    if not path.is_file():
        raise LMCheckpointError(f"{path}: GGUF file not found")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError / struct errors on a damaged file
        raise LMCheckpointError(f"{path}: not a readable GGUF file ({e})") from e
    meta = _metadata(reader)
    by_name = {t.name: t for t in reader.tensors}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    cfg = config_from_gguf(
        meta,
        path,
        tied="output.weight" not in by_name,
        vocab_size=len(tokens.data) if tokens is not None else 0,
    )

    with torch.device("meta"):
        expected_model = DecoderLM(cfg)  # shapes only
    expected = {ours_to_hf(k): tuple(v.shape) for k, v in expected_model.state_dict().items()}
    missing = [hf_to_gguf(h) for h in expected if hf_to_gguf(h) not in by_name]
    unexpected: list[str] = []
    mismatched: list[str] = []
    for name, t in by_name.items():
        hf = gguf_to_hf(name)
        if hf is None or hf not in expected:
            if name not in _IGNORED:
                unexpected.append(name)
            continue
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists the fastest dimension first
        if shape != expected[hf]:
            mismatched.append(
                f"{name}: file has {list(shape)}, the model expects {list(expected[hf])} ({hf})"
            )
    if missing or unexpected or mismatched:
        title = f"{path}: GGUF tensors do not match the llama model its metadata describes"
        raise LMCheckpointError(
            mismatch_report(title, missing, unexpected, mismatched),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )

    tensors: dict[str, torch.Tensor] = {}
    quantization: dict[str, int] = {}
    for name, t in by_name.items():
        hf = gguf_to_hf(name)
        if hf is None:
            continue
        kind = t.tensor_type.name
        quantization[kind] = quantization.get(kind, 0) + 1
        w = np.array(
            gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32
        )  # a copy: the file is mapped read-only
        w = w.reshape(expected[hf])  # (out, in) as HF stores it
        if name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, cfg.num_heads)
        elif name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, cfg.num_kv_heads)
        tensors[hf] = torch.from_numpy(np.ascontiguousarray(w))  # (out, in) float32
    return GGUFCheckpoint(cfg, tensors, meta, quantization)
