"""Pretrained vision towers (SigLIP, DINOv2) through ``transformers``, returning patch features (B, N, D).

The towers are Hugging Face's own model classes (``SiglipVisionModel``, ``Dinov2Model``,
``Dinov2WithRegistersModel``), loaded from a LOCAL directory only (``local_files_only=True``: a
missing directory is an error, never a download), or built from a config with random weights.

Which features: ``feature_layer`` picks the output of one transformer layer, counted from the end,
before the final LayerNorm, with the prefix tokens (DINOv2's CLS and registers) dropped:

* ``-2`` (default): the second-to-last layer, as prismatic / OpenVLA take them from timm
  (``get_intermediate_layers(n={depth - 2})``); the unused last layer is not even built
  (``num_hidden_layers`` is reduced before loading), so it costs neither time nor memory;
* ``-1``: the last layer, pre-norm;
* ``None``: the model's ``last_hidden_state`` (all layers + final norm), as PaliGemma / π0 use SigLIP.

With ``feature_layer`` set, the final norm (and SigLIP's pooling head, never built here) receive no
gradient, so they are frozen (``requires_grad=False``) to keep DDP from waiting for their gradients.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlaforge.errors import CheckpointError
from vlaforge.models.vision.preprocess import (
    ImagePreprocess,
    dinov2_preprocess,
    preprocess_images,
    siglip_preprocess,
)

# model_type in config.json -> (tower kind, transformers class name)
TOWER_TYPES: dict[str, tuple[str, str]] = {
    "siglip_vision_model": ("siglip", "SiglipVisionModel"),
    "siglip": ("siglip", "SiglipVisionModel"),  # a full SigLIP (image + text) checkpoint: its vision half
    "dinov2": ("dinov2", "Dinov2Model"),
    "dinov2_with_registers": ("dinov2", "Dinov2WithRegistersModel"),
}
_FINAL_NORMS = ("post_layernorm", "layernorm")  # SigLIP's and DINOv2's final LayerNorm module names


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "vision towers need the Hugging Face 'transformers' package: pip install 'vlaforge[text]'"
        ) from e
    return transformers


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report / progress bar; we check the loading info ourselves."""
    logging = _transformers().utils.logging
    verbosity = logging.get_verbosity()
    bar = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _vision_config(config: Any, feature_layer: int | None) -> tuple[str, str, Any]:
    """(kind, class name, config with the layers we keep) from an HF config object."""
    model_type = getattr(config, "model_type", None)
    if model_type not in TOWER_TYPES:
        raise ValueError(
            f"unsupported vision tower model_type {model_type!r}; supported: {sorted(TOWER_TYPES)} "
            "(SigLIP, DINOv2, DINOv2 with registers)"
        )
    kind, cls_name = TOWER_TYPES[model_type]
    if model_type == "siglip":
        config = config.vision_config
    config = copy.deepcopy(config)
    depth = config.num_hidden_layers
    if feature_layer is not None:
        if not isinstance(feature_layer, int) or not -depth <= feature_layer <= -1:
            raise ValueError(
                f"feature_layer must be None or a negative layer index in [-{depth}, -1] for this "
                f"{depth}-layer tower, got {feature_layer!r}"
            )
        config.num_hidden_layers = depth + 1 + feature_layer  # build only the layers we read
    if kind == "siglip":
        config.vision_use_head = False  # the attention-pooling head is never used for patch features
    return kind, cls_name, config


class VisionTower(nn.Module):
    """A ViT that maps images to patch features ``(B, N, D)``, N = (image_size / patch_size)^2.

    Build with :meth:`from_pretrained` (local directory) or :meth:`from_config` (random weights).
    ``forward`` takes pixels already preprocessed for this tower; :meth:`encode` takes uint8 frames.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        kind: str,
        feature_layer: int | None,
        image_size: int | None = None,
        resize: str = "stretch",
    ):
        super().__init__()
        config = model.config
        self.model = model
        self.kind = kind
        self.feature_layer = feature_layer
        self.patch_size = int(config.patch_size)
        self.width = int(config.hidden_size)
        self.num_prefix_tokens = 0 if kind == "siglip" else 1 + int(getattr(config, "num_register_tokens", 0))
        native = int(config.image_size)
        image_size = native if image_size is None else image_size
        if kind == "siglip" and image_size != native:
            raise ValueError(
                f"SigLIP has learned position embeddings for {native} px; got image_size={image_size}. "
                "Use a checkpoint trained at that resolution (e.g. siglip-so400m-patch14-224)."
            )
        if image_size % self.patch_size != 0:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {self.patch_size}")
        self.image_size = image_size
        self.grid = (image_size // self.patch_size, image_size // self.patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.preprocess: ImagePreprocess = (
            siglip_preprocess(image_size) if kind == "siglip" else dinov2_preprocess(image_size)
        )
        if resize != self.preprocess.resize:  # how frames of another size reach image_size
            self.preprocess = dataclasses.replace(self.preprocess, resize=resize)
        if feature_layer is not None:
            for name, module in model.named_modules():
                if name.rsplit(".", 1)[-1] in _FINAL_NORMS:
                    module.requires_grad_(False)

    # ------------------------------------------------------------------------------------- builders

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        feature_layer: int | None = -2,
        image_size: int | None = None,
        resize: str = "stretch",
    ) -> VisionTower:
        """Random weights from an HF config object (SiglipVisionConfig, Dinov2Config, ...).
        resize: ``ImagePreprocess.resize`` ("stretch", "pad-top-left" for LeRobot 0.3 π0 checkpoints,
        "pad-centre" for openpi / LeRobot >= 0.4 ones)."""
        kind, cls_name, cfg = _vision_config(config, feature_layer)
        model = getattr(_transformers(), cls_name)(cfg)
        return cls(model, kind=kind, feature_layer=feature_layer, image_size=image_size, resize=resize)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        feature_layer: int | None = -2,
        image_size: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> VisionTower:
        """Load a tower from a local Hugging Face directory (``config.json`` + weights); never downloads.

        Every weight of the layers we build must be in the directory; weights of parts we do not
        build (dropped last layers, SigLIP's pooling head, a full SigLIP's text model) are skipped.
        """
        root = Path(path)
        config_file = root / "config.json"
        if not root.is_dir() or not config_file.is_file():
            raise CheckpointError(
                f"{root}: not a local Hugging Face model directory with config.json "
                "(vision towers are loaded offline only; download the checkpoint first)"
            )
        tf = _transformers()
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type not in TOWER_TYPES:
            raise CheckpointError(
                f"{config_file}: model_type {model_type!r} is not a supported vision tower {sorted(TOWER_TYPES)}"
            )
        with _quiet_transformers():
            hf_config = tf.AutoConfig.from_pretrained(str(root), local_files_only=True)
            kind, cls_name, cfg = _vision_config(hf_config, feature_layer)
            try:
                model, info = getattr(tf, cls_name).from_pretrained(
                    str(root), config=cfg, local_files_only=True, output_loading_info=True
                )
            except (OSError, RuntimeError) as e:
                raise CheckpointError(f"{root}: cannot load {cls_name} weights ({e})") from e
        problems = [f"missing {k}" for k in sorted(info.get("missing_keys", ()))]
        problems += [f"shape mismatch {k}" for k in sorted(str(m) for m in info.get("mismatched_keys", ()))]
        if problems:
            raise CheckpointError(
                f"{root}: {cls_name} checkpoint does not match its config:\n    " + "\n    ".join(problems)
            )
        if dtype is not None:
            model = model.to(dtype)
        return cls(model.eval(), kind=kind, feature_layer=feature_layer, image_size=image_size)

    # -------------------------------------------------------------------------------------- forward

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels (B, 3, S, S) -> patch features (B, N, D)."""
        expected = (3, self.image_size, self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"{self.kind} tower expects pixels (B, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {tuple(pixel_values.shape)}; use VisionTower.encode for uint8 frames"
            )
        p = next(self.model.parameters())
        out = self.model(
            pixel_values=pixel_values.to(device=p.device, dtype=p.dtype),
            output_hidden_states=self.feature_layer is not None,
        )
        # hidden_states[-1]: output of the last layer we built, before the final norm.
        tokens = (
            out.hidden_states[-1] if self.feature_layer is not None else out.last_hidden_state
        )  # (B, P+N, D)
        patches = tokens[:, self.num_prefix_tokens :]  # (B, N, D): CLS / registers dropped
        if patches.shape[1] != self.num_patches:
            raise RuntimeError(
                f"{self.kind} tower returned {patches.shape[1]} patches, expected {self.num_patches} "
                f"({self.grid[0]}x{self.grid[1]})"
            )
        return patches

    def encode(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> patch features (B, N, D), with this tower's preprocessing."""
        return self(preprocess_images(images, self.preprocess))


# ------------------------------------------------------------------------------------- tiny configs


def tiny_siglip_config(
    image_size: int = 32, patch_size: int = 8, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2
) -> Any:
    """A SiglipVisionConfig small enough for CPU tests (real SigLIP-So400m/14: 1152 wide, 27 layers)."""
    return _transformers().SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
    )


def tiny_dinov2_config(
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 48,
    num_layers: int = 2,
    num_heads: int = 2,
    num_register_tokens: int = 0,
) -> Any:
    """A Dinov2Config (or Dinov2WithRegistersConfig when registers > 0) for CPU tests.

    OpenVLA uses ViT-L/14 with 4 registers (1024 wide, 24 layers).
    """
    tf = _transformers()
    kwargs = dict(
        hidden_size=hidden_size,
        mlp_ratio=2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    if num_register_tokens:
        return tf.Dinov2WithRegistersConfig(num_register_tokens=num_register_tokens, **kwargs)
    return tf.Dinov2Config(**kwargs)
