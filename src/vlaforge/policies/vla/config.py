"""`VLAConfig`: every value needed to rebuild a VLA policy (RT-2, OpenVLA, OpenVLA-OFT), stored as config.json.

The VLA recipes run a pretrained-style decoder LM (``models/lm``) over
``[image tokens | (proprio token) | prompt | action tokens]``; they share nothing with the Octo
``PolicyConfig`` but the embodiment fields, so they have their own validated dataclass. The
vision towers and the LM are described by plain dicts (HF vision config fields, ``LMConfig``
fields), so a saved policy rebuilds without any download or local model directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlaforge.policies.config import ConfigMethods

VLA_FORMAT = 1
VARIANTS = ("openvla", "oft", "rt2")
PREFIX_ATTENTION = ("bidirectional", "causal")
ACTION_TOKENS = ("last", "integer", "ids")
PROMPTS = {
    "openvla": "In: What action should the robot take to {instruction}?\nOut:",
    "oft": "In: What action should the robot take to {instruction}?\nOut:",
    "rt2": "Q: what action should the robot take to {instruction}? A:",
}


@dataclass
class VLAConfig(ConfigMethods):
    recipe: str = "openvla-tiny"
    variant: str = "openvla"  # openvla: causal action tokens; oft: parallel L1 chunk; rt2: integer tokens
    # --- embodiment (filled from the dataset) ---
    cameras: dict[str, list[int]] = field(default_factory=dict)  # cameras the policy reads -> [h, w]
    state_dim: int = 0
    action_dim: int = 0
    chunk: int = 1  # H; OpenVLA and RT-2 predict one action, OFT a chunk
    history: int = 1  # the originals read the current frame only
    fps: float = 10.0
    datasets: list[str] = field(default_factory=list)  # mixtures are not supported yet: always empty
    dataset_dims: dict[str, list[int]] = field(default_factory=dict)
    # --- model ---
    lm: dict[str, Any] = field(default_factory=dict)  # LMConfig fields (vocab_size may be filled at build)
    # name -> {"hf": HF vision config dict (with model_type), "image_size": int|None, "feature_layer": int|None}
    #   or {"lite0": {"features", "frozen"}, "image_size"}: EfficientNet-Lite0 (`models.vision.spec`)
    # Several towers are fused per patch in this order (OpenVLA: dino then siglip).
    vision: dict[str, dict[str, Any]] = field(default_factory=dict)
    projector: str = "mlp"  # "mlp": prismatic's fused-GELU MLP; "linear": PaliGemma's
    prefix_attention: str = "bidirectional"  # over image + prompt; "causal" = a plain decoder LM (OpenVLA 7B)
    prompt: str = ""  # template with {instruction}; default per variant
    text_max_len: int = 24  # prompt tokens (words for tiny recipes, subwords for HF tokenizers)
    # An instruction too long for the text_max_len prompt budget: "truncate" keeps its leading words
    # that fit (the template and state stay whole; a warning once per instruction), "error" raises.
    prompt_overflow: str = "truncate"
    bos_token_id: int = -1  # >= 0: a BOS embedding first, before the image tokens (prismatic); -1: none
    # --- action tokens (openvla / rt2) ---
    action_tokens: str = (
        "last"  # last: OpenVLA's last 256 ids; integer: RT-2's "0".."255"; ids: action_token_ids
    )
    action_token_ids: list[int] = field(default_factory=list)  # for action_tokens="ids"
    action_vocab_size: int = 0  # vocabulary the "last" ids count back from (0 = the LM's vocab_size)
    n_bins: int = 256
    binning: str = "uniform"  # or "openvla" (the reference's 256 edges / 255 centres)
    constrained_decoding: bool = False  # only action ids may be generated (RT-2: on; OpenVLA: off)
    # --- OFT ---
    use_proprio: bool = False  # a projected state token after the image tokens
    film: bool = False  # FiLM from the mean prompt embedding into every vision-tower block
    head_hidden_dim: int = 256  # L1 MLP-ResNet head on the action-token hidden states
    head_blocks: int = 2
    # --- normalization ---
    state_norm: str = "quantile"
    action_norm: str = "quantile"
    unnormalized_action_dims: list[int] = field(default_factory=list)
    language: str = (
        "words"  # "words": tokenizer built from the dataset; "hf": a tokenizer.json of the checkpoint
    )
    # Recipes on pretrained parts: {"lm": source, "lm_layers": N, "vision": source} read by the recipe
    # builder (policies/pretrained.py); {} = random init. Provenance only once built.
    pretrained: dict[str, Any] = field(default_factory=dict)
    format_version: int = VLA_FORMAT
    # config.json files written before the registry hold `augment` and `head` (only the CLI read them):
    # dropped on loading (`ConfigMethods.from_dict`), so those checkpoints keep loading.
    retired_fields = ("augment", "head")

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"VLAConfig.{fld}={getattr(self, fld)!r}: {msg}")

        if self.variant not in VARIANTS:
            raise bad("variant", f"choose one of {VARIANTS}")
        if self.prefix_attention not in PREFIX_ATTENTION:
            raise bad("prefix_attention", f"choose one of {PREFIX_ATTENTION}")
        if self.action_tokens not in ACTION_TOKENS:
            raise bad("action_tokens", f"choose one of {ACTION_TOKENS}")
        if self.action_tokens == "ids" and len(self.action_token_ids) != self.n_bins:
            raise bad("action_token_ids", f"action_tokens='ids' needs exactly n_bins={self.n_bins} ids")
        if self.projector not in ("mlp", "linear"):
            raise bad("projector", "choose 'mlp' (prismatic) or 'linear' (PaliGemma)")
        if self.language not in ("words", "hf"):
            raise bad("language", "choose 'words' or 'hf'")
        if not self.prompt:
            self.prompt = PROMPTS[self.variant]
        if "{instruction}" not in self.prompt:
            raise bad("prompt", "the template must contain '{instruction}'")
        for fld in ("chunk", "history", "text_max_len", "n_bins", "head_hidden_dim"):
            if getattr(self, fld) < 1:
                raise bad(fld, "must be >= 1")
        if self.history != 1:
            raise bad("history", "the VLA recipes read the current observation only (history 1)")
        if self.variant != "oft" and (self.use_proprio or self.film):
            raise bad("variant", "use_proprio / film are OpenVLA-OFT features (variant 'oft')")
        if not self.vision:
            raise bad("vision", "at least one vision tower is needed")
        if self.datasets or self.dataset_dims:
            raise bad("datasets", "the VLA recipes do not support dataset mixtures yet")
        self._check_unnormalized_dims(bad)
        self._check_prompt_overflow(bad)
        self._check_pretrained(bad)
        if len(self.vision) > 1 and any("hf" not in spec for spec in self.vision.values()):
            raise bad(
                "vision", "only Hugging Face towers ('hf' specs) fuse per patch; use one Lite0 tower alone"
            )
        if self.film and any("hf" not in spec for spec in self.vision.values()):
            raise bad("film", "FiLM conditions ViT blocks (Hugging Face towers), not a Lite0 tower")
        if self.format_version != VLA_FORMAT:
            raise bad("format_version", f"this vlaforge reads VLA checkpoint format {VLA_FORMAT}")

    @property
    def n_action_tokens(self) -> int:
        """Tokens per prediction: H * A (one per action dimension and chunk step)."""
        return self.chunk * self.action_dim
