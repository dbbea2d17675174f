"""`Pi0FastConfig`: every value needed to rebuild a π0-FAST policy, stored in the checkpoint's config.json.

π0-FAST (arXiv 2501.09747) is π0's vision-language backbone (SigLIP -> linear -> Gemma) *without* the
action expert: actions become FAST tokens (DCT + BPE, :mod:`vlaforge.policies.pi0.fast_tokenizer`) and
the backbone predicts them with next-token cross-entropy. The FAST tokenizer itself (BPE merges,
scale, q01/q99 statistics) is saved next to the weights (``fast/``), not in this config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlaforge.models.lm import LMConfig
from vlaforge.policies.config import ConfigMethods

PI0_FAST_FORMAT = 1
# openpi's π0-FAST prompt: the prefix (bidirectional) and the postfix before the FAST tokens (causal).
PREFIX_TEMPLATE = "Task: {instruction}, State: {state};\n"
ACTION_PROMPT = "Action: "
END_TOKEN = "|"


def clean_instruction(text: str) -> str:
    """openpi's cleaning of the task text before it enters the π0-FAST prompt."""
    return str(text).lower().strip().replace("_", " ").replace("\n", " ")


@dataclass
class Pi0FastConfig(ConfigMethods):
    recipe: str = "pi0-fast-tiny"
    # --- embodiment (filled from the dataset) ---
    cameras: dict[str, list[int]] = field(default_factory=dict)  # cameras the policy reads -> [h, w]
    state_dim: int = 0
    action_dim: int = 0
    chunk: int = 8  # H: the FAST tokenizer is fitted on (H, A) chunks
    history: int = 1  # π0-FAST reads the current frame only
    fps: float = 10.0
    datasets: list[str] = field(default_factory=list)  # mixtures are not supported: always empty
    dataset_dims: dict[str, list[int]] = field(default_factory=dict)
    # --- model ---
    lm: dict[str, Any] = field(default_factory=dict)  # backbone LMConfig fields (vocab_size filled at build)
    # name -> {"hf": HF SigLIP vision config dict (with model_type), "feature_layer"}
    vision: dict[str, dict[str, Any]] = field(default_factory=dict)
    text_max_len: int = 32  # prefix text tokens: "Task: ..., State: ...;" (words or subwords)
    # An instruction too long for the text_max_len prompt budget: "truncate" keeps its leading words
    # that fit (the template and state stay whole; a warning once per instruction), "error" raises.
    prompt_overflow: str = "truncate"
    bos_token_id: int = -1  # >= 0: a BOS embedding before the prefix text (PaliGemma: 2); -1: none
    state_bins: int = 256  # the state is written as integers 0..state_bins-1 of its q01/q99-normalized value
    # --- FAST action tokens ---
    fast_vocab_size: int = 1024  # BPE vocabulary asked of FastTokenizer.fit (paper: 1024)
    fast_scale: float = 10.0  # γ: DCT coefficients are multiplied by it before rounding
    fast_fit_chunks: int = 20000  # at most this many dataset chunks fit the BPE (a fixed-seed sample)
    fast_fit_seed: int = 0
    # FAST id f is LM id ``vocab_size - 1 - fast_skip_tokens - f`` (openpi: PaliGemma's last 128 ids are
    # skipped; the tiny recipes append the FAST ids after the word vocabulary, skip 0).
    fast_skip_tokens: int = 0
    max_decode_tokens: int = 64  # greedy decoding stops at the end token "|" or after this many tokens
    constrained_decoding: bool = False  # True: only FAST ids and "|" can be generated (openpi: unconstrained)
    # --- normalization (π0-FAST: q01/q99 on state and actions) ---
    state_norm: str = "quantile"
    action_norm: str = "quantile"
    unnormalized_action_dims: list[int] = field(default_factory=list)
    language: str = (
        "words"  # "words": vocabulary built from the dataset; "hf": the checkpoint's tokenizer.json
    )
    format_version: int = PI0_FAST_FORMAT
    # config.json files written before the registry hold `augment` and `head` (only the CLI read them):
    # dropped on loading (`ConfigMethods.from_dict`), so those checkpoints keep loading.
    retired_fields = ("augment", "head")

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"Pi0FastConfig.{fld}={getattr(self, fld)!r}: {msg}")

        if self.language not in ("words", "hf"):
            raise bad("language", "choose 'words' or 'hf'")
        for fld in ("chunk", "history", "text_max_len", "max_decode_tokens", "fast_fit_chunks", "state_bins"):
            if getattr(self, fld) < 1:
                raise bad(fld, "must be >= 1")
        if self.history != 1:
            raise bad("history", "π0-FAST reads the current observation only (history 1)")
        if self.fast_vocab_size < 256:
            raise bad("fast_vocab_size", "the byte-level BPE needs at least its 256 byte symbols")
        if not self.fast_scale > 0:
            raise bad("fast_scale", "must be > 0")
        if self.fast_skip_tokens < 0:
            raise bad("fast_skip_tokens", "must be >= 0")
        if self.state_norm != "quantile" or self.action_norm != "quantile":
            raise bad(
                "state_norm", "π0-FAST bins q01/q99-normalized values: state_norm/action_norm 'quantile'"
            )
        if len(self.vision) != 1:
            raise bad("vision", "π0-FAST uses exactly one vision tower (SigLIP)")
        if self.datasets or self.dataset_dims:
            raise bad("datasets", "π0-FAST does not support dataset mixtures yet")
        self._check_unnormalized_dims(bad)
        self._check_prompt_overflow(bad)
        if self.lm:
            LMConfig(**self.lm)  # validates the backbone fields
        if self.format_version != PI0_FAST_FORMAT:
            raise bad("format_version", f"this vlaforge reads π0-FAST checkpoint format {PI0_FAST_FORMAT}")
