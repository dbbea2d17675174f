"""`Pi05Config`: every value needed to rebuild a π0.5 policy, stored in the checkpoint's config.json.

π0.5 (arXiv 2504.16054) with knowledge insulation (arXiv 2505.23705) is π0's layout (PaliGemma-style
backbone + action expert, joint attention; :class:`~vlaforge.policies.pi0.config.Pi0Config` holds those
fields and is the base class) with four changes, configured here:

* the state is written into the prompt as 256-bin integers (π0-FAST's ``"Task: ..., State: ...;\\n"``),
  so there is no state token; q01/q99 normalization of state and actions;
* the flow time enters the expert through adaptive RMSNorm (``ActionExpert(time_conditioning="adarms")``);
* the backbone also predicts the chunk's FAST tokens (cross-entropy; the FAST fields below are
  π0-FAST's), and optionally a subtask text before them; loss = CE + ``flow_loss_weight`` · flow MSE;
* ``knowledge_insulation``: the expert reads stop-gradient keys/values of the backbone tokens.

``prompt`` is one of two fixed templates: ``PREFIX_TEMPLATE`` (π0-FAST's, what the recipes train:
"Action: " opens the FAST postfix) or ``OPENPI_PROMPT`` (openpi's / LeRobot's π0.5 prompt, which ends with
"Action: " inside the prefix and keeps the task text's case; imported π0.5 checkpoints use it, see
``convert_pi0.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.fast_config import ACTION_PROMPT, PREFIX_TEMPLATE

# The subtask block the backbone predicts after the prompt (π0.5's high-level inference):
# "Subtask: " is fed, the text and ";" are predicted (";" ends greedy decoding).
SUBTASK_PROMPT = "Subtask: "
SUBTASK_END = ";"
# openpi's PaligemmaTokenizer with discrete state (π0.5) and LeRobot's PI05 processor: the prefix is
# "Task: {task}, State: {bins};\nAction: " (BOS first) and the task text keeps its case.
OPENPI_PROMPT = PREFIX_TEMPLATE + ACTION_PROMPT
PROMPTS = (PREFIX_TEMPLATE, OPENPI_PROMPT)


def clean_task_openpi(text: str) -> str:
    """openpi's / LeRobot's π0.5 cleaning of the task text: no lower-casing (π0-FAST's ``clean_instruction``
    lower-cases), ``_`` and newlines become spaces."""
    return str(text).strip().replace("_", " ").replace("\n", " ")


@dataclass
class Pi05Config(Pi0Config):
    recipe: str = "pi05-tiny"
    prompt: str = PREFIX_TEMPLATE  # π0-FAST's prefix (the cleaned task, the binned state) or OPENPI_PROMPT
    text_max_len: int = 48  # prefix text tokens: "Task: ..., State: ...;" (words or subwords)
    state_norm: str = "quantile"
    action_norm: str = "quantile"
    state_bins: int = 256  # the state is written as integers 0..state_bins-1 of its q01/q99-normalized value
    # --- FAST action tokens (predicted by the backbone; π0-FAST's fields, see Pi0FastConfig) ---
    fast_vocab_size: int = 1024
    fast_scale: float = 10.0
    fast_fit_chunks: int = 20000
    fast_fit_seed: int = 0
    fast_skip_tokens: int = 0  # FAST id f is LM id V - 1 - skip - f (openpi on PaliGemma: 128)
    # --- loss and gradients ---
    flow_loss_weight: float = 10.0  # α in CE(text + FAST) + α · flow MSE (KI paper: 10 in post-training)
    knowledge_insulation: bool = True  # the expert reads stop-gradient backbone keys/values
    # --- subtask prediction ---
    predict_subtask: bool = False  # train on batch["subtask"] and decode a subtask before sampling actions
    subtask_max_len: int = 16  # subtask text tokens (training cut, and the decoding budget before ";")

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"Pi05Config.{fld}={getattr(self, fld)!r}: {msg}")

        if self.prompt not in PROMPTS:
            raise bad("prompt", f"π0.5 uses one of the fixed prompt templates {PROMPTS}")
        if self.state_norm != "quantile" or self.action_norm != "quantile":
            raise bad("state_norm", "π0.5 bins q01/q99-normalized values: state_norm/action_norm 'quantile'")
        for fld in ("state_bins", "fast_fit_chunks", "subtask_max_len"):
            if getattr(self, fld) < 1:
                raise bad(fld, "must be >= 1")
        if self.fast_vocab_size < 256:
            raise bad("fast_vocab_size", "the byte-level BPE needs at least its 256 byte symbols")
        if not self.fast_scale > 0:
            raise bad("fast_scale", "must be > 0")
        if self.fast_skip_tokens < 0:
            raise bad("fast_skip_tokens", "must be >= 0")
        if not (math.isfinite(self.flow_loss_weight) and self.flow_loss_weight >= 0):
            raise bad("flow_loss_weight", "must be a finite number >= 0")
        for fld in ("knowledge_insulation", "predict_subtask"):
            if not isinstance(getattr(self, fld), bool):
                raise bad(fld, "must be true or false")
        if self.predict_subtask and self.prompt == OPENPI_PROMPT:
            raise bad(
                "predict_subtask",
                "the subtask block goes before 'Action: ', which OPENPI_PROMPT already ends with; "
                "train subtasks with the recipes' prompt (PREFIX_TEMPLATE)",
            )
