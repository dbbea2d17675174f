"""Pretrained-LM backbones (Llama, Gemma) for the RT-2 / OpenVLA / OpenVLA-OFT / π0 recipes.

Our own decoder implementation that loads Hugging Face checkpoints unchanged (see docs/backbones.md):

* :class:`LMConfig` (``config.py``): shapes, ``from_hf_config``, presets ``llama-tiny``, ``gemma-tiny``,
  ``llama2-7b``, ``gemma-2b``;
* :class:`DecoderLM` (``decoder.py``): forward over ``input_ids`` or ``inputs_embeds`` with any boolean
  attention mask, returning final hidden states and logits; a static-shape cache step
  (``forward(cache_position=...)``) and its opt-in ``torch.compile`` (``compile_decoding()``);
* :class:`KVCache` (``cache.py``) and :func:`generate_greedy` (``generate.py``, optional allowed-token
  constraint; decodes through the compiled static step once ``compile_decoding()`` is on);
* :func:`load_hf_checkpoint` / :func:`save_hf_checkpoint` (``checkpoint.py``): strict HF key mapping;
* :func:`load_pretrained_lm` / :func:`pretrained_lm_dir` (``pretrained.py``): a packaged model
  (``"smollm2-135m"``), a GGUF file (``gguf.py``: strict reader, dequantized to float32) or an HF directory;
  GGUF conversions cached once in the user cache (``convert_cache.py``), see docs/pretrained.md.
"""

from vlaforge.models.lm.cache import KVCache
from vlaforge.models.lm.checkpoint import (
    LMCheckpointError,
    load_hf_checkpoint,
    read_lm_config,
    save_hf_checkpoint,
)
from vlaforge.models.lm.config import LM_PRESETS, LMConfig, lm_preset
from vlaforge.models.lm.decoder import DecoderLM, DecoderOutput
from vlaforge.models.lm.generate import GreedyOutput, generate_greedy
from vlaforge.models.lm.pretrained import PACKAGED_LMS, load_pretrained_lm, pretrained_lm_dir

__all__ = [
    "LM_PRESETS",
    "PACKAGED_LMS",
    "DecoderLM",
    "DecoderOutput",
    "GreedyOutput",
    "KVCache",
    "LMCheckpointError",
    "LMConfig",
    "generate_greedy",
    "lm_preset",
    "load_hf_checkpoint",
    "load_pretrained_lm",
    "pretrained_lm_dir",
    "read_lm_config",
    "save_hf_checkpoint",
]
