"""`Pi0Config`: every value needed to rebuild a π0 policy, stored in the checkpoint's config.json.

π0 (arXiv 2410.24164) = a PaliGemma-style VLM (SigLIP -> linear projector -> Gemma) + an *action
expert*: a second, narrower set of transformer weights with the same depth, heads and head_dim,
for the state and noisy-action tokens. The backbone and the expert are described by plain dicts
(``LMConfig`` fields, HF SigLIP config fields), so a saved policy rebuilds without any download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlaforge.models.lm import LMConfig
from vlaforge.models.vision.preprocess import RESIZE_MODES
from vlaforge.policies.config import ConfigMethods

PI0_FORMAT = 1
PROMPT = "{instruction}"  # openpi feeds the task text itself (+ "\n", which word tokenizers drop)


@dataclass
class Pi0Config(ConfigMethods):
    recipe: str = "pi0-tiny"
    # --- embodiment (filled from the dataset) ---
    cameras: dict[str, list[int]] = field(default_factory=dict)  # cameras the policy reads -> [h, w]
    state_dim: int = 0
    action_dim: int = 0
    chunk: int = 8  # H (π0: 50)
    history: int = 1  # π0 reads the current frame only
    fps: float = 10.0
    datasets: list[str] = field(default_factory=list)  # mixtures are not supported yet: always empty
    dataset_dims: dict[str, list[int]] = field(default_factory=dict)
    # --- model ---
    lm: dict[str, Any] = field(default_factory=dict)  # backbone LMConfig fields (vocab_size filled at build)
    expert_width: int = 64  # action expert hidden size (π0: 1024)
    expert_mlp_dim: int = 256  # action expert MLP size (π0: 4096)
    # name -> {"hf": HF SigLIP vision config dict (with model_type), "image_size", "feature_layer",
    #          optional "resize": "stretch" (default) | "pad-top-left" (LeRobot 0.3 checkpoints)
    #          | "pad-centre" (openpi / LeRobot >= 0.4 checkpoints)}
    #   or {"lite0": {"features", "frozen"}, "image_size"}: EfficientNet-Lite0 (`models.vision.spec`)
    vision: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompt: str = PROMPT  # template with {instruction}
    text_max_len: int = 16  # prompt tokens (words for tiny recipes, subwords for HF tokenizers)
    # An instruction too long for the text_max_len prompt budget: "truncate" keeps its leading words
    # that fit (the template and state stay whole; a warning once per instruction), "error" raises.
    prompt_overflow: str = "truncate"
    bos_token_id: int = -1  # >= 0: a BOS embedding before the prompt tokens (PaliGemma: 2); -1: none
    max_state_dim: int = 32  # state and actions are zero-padded to these sizes (π0: 32)
    max_action_dim: int = 32
    # --- flow matching (same convention as heads/flow.py: τ = 0 noise, τ = 1 data, u = A − ε) ---
    steps: int = 10  # Euler steps at sampling
    time_alpha: float = 1.5  # τ = s·(1 − u), u ~ Beta(time_alpha, 1)
    time_s: float = 0.999
    time_min_period: float = 4e-3  # sinusoidal φ(τ) periods (openpi's posemb_sincos)
    time_max_period: float = 4.0
    # --- normalization (π0: mean/std on state and actions, every dimension) ---
    state_norm: str = "mean_std"
    action_norm: str = "mean_std"
    unnormalized_action_dims: list[int] = field(default_factory=list)
    language: str = (
        "words"  # "words": tokenizer built from the dataset; "hf": the checkpoint's tokenizer.json
    )
    # Recipes on pretrained parts: {"lm": source, "lm_layers": N, "vision": source} read by the recipe
    # builder (policies/pretrained.py); {} = random init. Provenance only once built.
    pretrained: dict[str, Any] = field(default_factory=dict)
    format_version: int = PI0_FORMAT
    # config.json files written before the registry hold `augment` and `head` (only the CLI read them):
    # dropped on loading (`ConfigMethods.from_dict`), so those checkpoints keep loading.
    retired_fields = ("augment", "head")

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"Pi0Config.{fld}={getattr(self, fld)!r}: {msg}")

        if self.language not in ("words", "hf"):
            raise bad("language", "choose 'words' or 'hf'")
        if "{instruction}" not in self.prompt:
            raise bad("prompt", "the template must contain '{instruction}'")
        for fld in ("chunk", "history", "text_max_len", "steps", "expert_width", "expert_mlp_dim"):
            if getattr(self, fld) < 1:
                raise bad(fld, "must be >= 1")
        if self.history != 1:
            raise bad("history", "π0 reads the current observation only (history 1)")
        if self.state_dim > self.max_state_dim:
            raise bad("state_dim", f"larger than max_state_dim={self.max_state_dim}; raise max_state_dim")
        if self.action_dim > self.max_action_dim:
            raise bad("action_dim", f"larger than max_action_dim={self.max_action_dim}; raise max_action_dim")
        if not (self.time_alpha > 0 and 0 < self.time_s <= 1):
            raise bad("time_alpha", f"need time_alpha > 0 and 0 < time_s <= 1 (time_s={self.time_s})")
        if not 0 < self.time_min_period < self.time_max_period:
            raise bad("time_min_period", f"need 0 < time_min_period < time_max_period={self.time_max_period}")
        if len(self.vision) != 1:
            raise bad("vision", "π0 uses exactly one vision tower (SigLIP)")
        resize = next(iter(self.vision.values())).get("resize", "stretch")
        if resize not in RESIZE_MODES:
            raise bad("vision", f"'resize' is {resize!r}; choose one of {RESIZE_MODES}")
        if self.datasets or self.dataset_dims:
            raise bad("datasets", "the π0 recipes do not support dataset mixtures yet")
        self._check_unnormalized_dims(bad)
        self._check_prompt_overflow(bad)
        self._check_pretrained(bad)
        if self.lm:
            lm = LMConfig(**self.lm)
            if self.expert_width % 2 or self.expert_width < 2:
                raise bad("expert_width", "must be even (sinusoidal time features are sin/cos pairs)")
            del lm  # validated; the expert's shape is derived in expert_lm_config
        if self.format_version != PI0_FORMAT:
            raise bad("format_version", f"this vlaforge reads π0 checkpoint format {PI0_FORMAT}")
