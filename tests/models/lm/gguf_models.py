"""A tiny random Llama written as a real GGUF file (quantized like SmolLM2's: Q8_0 embeddings, Q4_1
matrices, F32 norms; RoPE rows permuted as llama.cpp's converter does; a byte-level BPE vocabulary),
so the GGUF path is tested end to end without the 98 MB packaged file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tests.extras import require_or_skip
from tests.models.lm.hf_models import tiny_hf_lm
from vlaforge.models.lm.gguf import hf_to_gguf, permute_rope_rows

gguf = require_or_skip("gguf", "pretrained")
transformers = require_or_skip("transformers", "text")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [
    "Ġ t",
    "h e",
    "Ġt he",
    "o p",
    "Ġ o",
    "Ġo p",
    "e n",
    "Ġop en",
    "r a",
    "w e",
    "Ġ d",
    "Ġd ra",
    "Ġdra we",
]


def tiny_vocab() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_tokens = sorted(bytes_to_unicode().values(), key=ord)  # (256,) byte-level characters
    merged = ["".join(m.split()) for m in MERGES]
    return [*SPECIALS, *byte_tokens, *merged]


VOCAB = len(tiny_vocab())


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    """A tiny HF Llama whose vocabulary is the GGUF's: hidden 64 and MLP 96 (multiples of the 32-wide
    quantization blocks), 2 layers, 4 heads, 2 KV heads."""
    return tiny_hf_lm("llama", seed=seed, vocab_size=VOCAB, intermediate_size=96, max_position_embeddings=256)


def write_gguf(
    model: torch.nn.Module,
    path: Path,
    *,
    quantize: bool = True,
    edit: Callable[[dict[str, np.ndarray]], None] | None = None,
    metadata: dict[str, int] | None = None,
) -> Path:
    """Write an HF Llama as a llama.cpp GGUF. edit(tensors) may rename / reshape / drop GGUF tensors
    before writing; metadata overrides ``llama.*`` integer keys."""
    cfg = model.config
    tensors: dict[str, np.ndarray] = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w = p.detach().float().numpy()
        if "q_proj" in name:
            w = permute_rope_rows(w, cfg.num_attention_heads)
        elif "k_proj" in name:
            w = permute_rope_rows(w, cfg.num_key_value_heads)
        tensors[hf_to_gguf(name)] = w
    if edit is not None:
        edit(tensors)

    writer = gguf.GGUFWriter(str(path), "llama")
    ints = {
        "block_count": cfg.num_hidden_layers,
        "context_length": cfg.max_position_embeddings,
        "embedding_length": cfg.hidden_size,
        "feed_forward_length": cfg.intermediate_size,
        "attention.head_count": cfg.num_attention_heads,
        "attention.head_count_kv": cfg.num_key_value_heads,
        "rope.dimension_count": cfg.hidden_size // cfg.num_attention_heads,
        "vocab_size": cfg.vocab_size,
    }
    ints.update(metadata or {})
    for key, value in ints.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.rope.freq_base", float(cfg.rope_parameters["rope_theta"]))
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    vocab = tiny_vocab()
    writer.add_token_list(vocab)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in vocab])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    for name, w in tensors.items():
        if not quantize or w.ndim == 1:
            writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
            continue
        qtype = (
            gguf.GGMLQuantizationType.Q8_0 if name == "token_embd.weight" else gguf.GGMLQuantizationType.Q4_1
        )
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
