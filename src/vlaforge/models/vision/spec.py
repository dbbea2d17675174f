"""Vision towers from the plain dicts that policy configs store (config.json), with random weights.

``vision_tower_from_spec(spec)`` is the one place a config's tower description becomes a module, for
every family: the pretrained-LM policies (``VLAConfig.vision`` / ``Pi0Config.vision``: name -> spec) and
Octo's Lite0 tokenizer (``PolicyConfig.vision``). The weights come from a checkpoint or a recipe.
"""

from __future__ import annotations

from typing import Any

from vlaforge.models.vision.efficientnet_lite import Lite0ImageEncoder
from vlaforge.models.vision.towers import VisionTower


def hf_vision_config(d: dict[str, Any]) -> Any:
    """An HF vision config object from a plain dict with ``model_type`` (SigLIP, DINOv2, ...)."""
    import transformers

    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError(
            f"vision tower config needs a 'model_type' (e.g. 'siglip_vision_model'), got keys {sorted(d)}"
        )
    return transformers.AutoConfig.for_model(model_type, **d)


def vision_tower_from_spec(spec: dict[str, Any], *, feature_layer: int | None = None) -> Any:
    """A config's vision spec -> a tower with ``encode(uint8 (B, H, W, 3)) -> (B, N, Dv)``,
    ``num_patches`` (N), ``width`` (Dv) and ``image_size``, with random weights (a recipe or a
    checkpoint supplies them):

    * ``{"hf": HF config dict, "feature_layer", "image_size", "resize"}``: SigLIP / DINOv2
      (`VisionTower`); ``feature_layer`` here is the family's default when the spec has none;
    * ``{"lite0": {"features": "stride32", "frozen": true}, "image_size": 128}``: EfficientNet-Lite0
      feature maps (`Lite0ImageEncoder`, the recipes on pretrained parts; frozen by default).
    """
    if "lite0" in spec:
        opts = dict(spec["lite0"] or {})
        unknown = sorted(set(opts) - {"features", "frozen"})
        if unknown or "image_size" not in spec:
            raise ValueError(
                f"a Lite0 vision spec is {{'lite0': {{'features', 'frozen'}}, 'image_size': S}}; got {spec}"
            )
        return Lite0ImageEncoder(
            int(spec["image_size"]),
            features=opts.get("features", "stride32"),
            frozen=bool(opts.get("frozen", True)),
            weights=False,
        )
    if "hf" not in spec:
        raise ValueError(
            f"a vision spec holds 'hf' (a Hugging Face tower) or 'lite0'; got keys {sorted(spec)}"
        )
    return VisionTower.from_config(
        hf_vision_config(spec["hf"]),
        feature_layer=spec.get("feature_layer", feature_layer),
        image_size=spec.get("image_size"),
        resize=spec.get("resize", "stretch"),
    )
