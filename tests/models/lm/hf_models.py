"""Tiny random Hugging Face Llama / Gemma models saved to a directory, for parity tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.extras import require

transformers = require("transformers", "text")

VOCAB = 300


def tiny_hf_lm(family: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """hidden 64, 2 layers, 4 heads (2 KV heads for Llama, 1 for Gemma), vocab 300.

    Every parameter is redrawn with a large std (norm gains included), so that a wrong norm variant,
    a swapped projection or a RoPE layout error changes the logits by far more than the tolerance;
    HF's own init (std 0.02, unit norms) would make logits nearly input-independent.
    """
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    common.update(overrides)
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, **common))
    elif family == "gemma":
        model = transformers.GemmaForCausalLM(
            transformers.GemmaConfig(num_key_value_heads=1, head_dim=16, **common)
        )
    else:
        raise ValueError(family)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() == 1 else 0.15)
    return model.eval()


def save_hf(model: torch.nn.Module, path: Path, **kwargs: object) -> Path:
    model.save_pretrained(str(path), safe_serialization=True, **kwargs)
    return path
