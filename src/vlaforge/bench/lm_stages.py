"""Stage timing of the pretrained-LM policies (π0, π0-FAST, OpenVLA / RT-2, OpenVLA-OFT) by hooks.

`inference.prefix_cache.StagedPredictor` re-implements Octo's predict step by step. The LM policies' inference is
longer (prompt fitting, KV-cache bookkeeping, greedy decoding, Euler integration) and lives in
`policies/` that the bench must not fork, so here the policy's own `predict_batch` runs unchanged and
forward hooks on its top-level sub-modules mark the stage boundaries. The actions are therefore the
policy's own by construction (tests/bench still checks them against `predict_batch`).

Stages per family (the LM module is `transformer` for π0, `lm` for the others):

    pi0        vision (tower + projector) | backbone: the first LM call (prefix + state into the KV
               cache) | expert: every later call, one per Euler step, with the step's glue | rest
    vla        vision (tower + FiLM + projector) | prefix: the first LM call | decode: every later
               call, one per action token | rest (prompt, argmax, de-tokenizing, unnormalize)
    oft        vision | pass: the one LM call over prefix + placeholders | head: the MLP action head | rest
    pi0-fast   vision | prefix: the first LM call | decode: one call per FAST token | rest (including
               the FAST de-tokenizer: BPE + inverse DCT on the CPU)

Gaps of timing by hooks: the vision tower's uint8 -> float preprocessing runs inside its `encode`
before the hooked `forward` and is charged to `rest`. With ``use_cache=False`` there is no separate
prefix pass (every call recomputes the whole sequence), so every LM call counts as `expert` /
`decode` and `backbone` / `prefix` stay at zero calls.

With ``compile_decoding=True`` (the bench's `compile` path for the token decoders) the decode steps
run the LM's compiled static-shape step (`DecoderLM.compile_decoding`); they still go through the
LM module's `__call__`, so the same hooks time them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vlaforge.inference.fastpaths import lm_family
from vlaforge.inference.prefix_cache import StageTimer, eval_mode
from vlaforge.types import Observation

# family -> (stages in report order, the LM attribute, (first call stage, later calls stage), glue stage)
FAMILY_STAGES: dict[str, tuple[str, ...]] = {
    "pi0": ("vision", "backbone", "expert", "rest"),
    "vla": ("vision", "prefix", "decode", "rest"),
    "oft": ("vision", "pass", "head", "rest"),
    "pi0-fast": ("vision", "prefix", "decode", "rest"),
}
_LM_CALLS = {"pi0": ("backbone", "expert"), "vla": ("prefix", "decode"), "oft": ("pass", "pass"),
             "pi0-fast": ("prefix", "decode")}  # fmt: skip
# What runs between and after LM calls: π0's Euler glue belongs to the integration steps.
_AFTER_LM = {"pi0": "expert", "vla": "rest", "oft": "rest", "pi0-fast": "rest"}
_VISION_MODULES = ("vision_tower", "film", "projector")


def lm_module(policy: Any, family: str) -> nn.Module:
    """The registered module that holds the LM: π0's `JointTransformer`, the others' `DecoderLM`."""
    return policy.transformer if family == "pi0" else policy.lm


def lm_model_shape(policy: Any) -> dict[str, Any]:
    """What sets the cost of one LM-policy call: cameras, chunk, prefix tokens, LM width and depth."""
    family = lm_family(policy)
    c = policy.config
    lm_cfg = (policy.backbone if family == "pi0" else policy.lm).config
    shape: dict[str, Any] = {
        "family": family,
        "cameras": {k: list(v) for k, v in c.cameras.items()},
        "vision_image_size": int(policy.vision_tower.image_size)
        if hasattr(policy.vision_tower, "image_size") else None,
        "history": 1,
        "chunk": c.chunk,
        "action_dim": c.action_dim,
        "image_tokens": int(policy.n_image_tokens),
        "text_tokens": c.text_max_len,
        "width": lm_cfg.hidden_size,
        "depth": lm_cfg.num_layers,
    }  # fmt: skip
    if family == "pi0":
        shape["expert_width"] = policy.expert.config.hidden_size
    return shape


# The families whose predict decodes tokens with `generate_greedy` over a `DecoderLM` at `policy.lm`:
# the ones a compiled decode step (`DecoderLM.compile_decoding`) applies to.
DECODING_FAMILIES = ("vla", "pi0-fast")


@contextlib.contextmanager
def compiled_decoding(policy: Any) -> Iterator[None]:
    """Switch the policy LM's compiled static-shape decode step on for the block, then back to what it was.

    A switch rather than a compiled copy of the policy: the compiled function is kept on the LM, so
    switching back on later reuses its graphs, and the other bench paths, run interleaved on the same
    policy object, keep the eager growing-cache decode.
    """
    family = lm_family(policy)
    if family not in DECODING_FAMILIES:
        raise ValueError(
            f"compiled decoding applies to the token-decoding families {DECODING_FAMILIES}, not {family!r}"
        )
    lm = policy.lm
    was = lm.decode_compiled
    lm.compile_decoding(True)
    try:
        yield
    finally:
        lm.compile_decoding(was)


def lm_predict_batch(
    policy: Any, batch: dict[str, Any], *, steps: int | None, generator: torch.Generator | None,
    use_cache: bool,
) -> torch.Tensor:  # fmt: skip
    """`predict_batch` with the policy's own KV-cache switch -> actions (B, H, A) in robot units."""
    kwargs: dict[str, Any] = {"use_cache": use_cache, "generator": generator}
    if steps is not None:
        kwargs["steps"] = steps  # only π0 integrates; the others ignore steps
    return policy.predict_batch(batch, **kwargs)


class _StageHooks:
    """Forward hooks that charge the time (or FLOPs) between them to the stage that was running."""

    def __init__(self, policy: Any, family: str, timer: StageTimer, *, use_cache: bool):
        self.family, self.timer = family, timer
        self.use_cache = use_cache
        self.current = "rest"
        self.calls = dict.fromkeys(FAMILY_STAGES[family], 0)
        self.lm_calls = 0
        self.depth = 0  # a hooked module called inside another hooked one is not a boundary
        self.handles: list[Any] = []
        for name in _VISION_MODULES:
            m = getattr(policy, name, None)
            if isinstance(m, nn.Module):
                self._hook(m, lambda: "vision", "rest", count=name == "vision_tower")  # calls = cameras
        self._hook(lm_module(policy, family), self._lm_stage, _AFTER_LM[family])
        head = getattr(policy, "action_head", None)
        if family == "oft" and isinstance(head, nn.Module):
            self._hook(head, lambda: "head", "rest")

    def _lm_stage(self) -> str:
        first, later = _LM_CALLS[self.family]
        stage = first if self.lm_calls == 0 and self.use_cache else later
        self.lm_calls += 1
        return stage

    def _hook(self, module: nn.Module, stage_of: Any, after: str, *, count: bool = True) -> None:
        def pre(_m: nn.Module, _args: Any) -> None:
            if self.depth == 0:
                self.timer.mark(self.current)
                self.current = stage_of()
                self.calls[self.current] += int(count)
            self.depth += 1

        def post(_m: nn.Module, _args: Any, _out: Any) -> None:
            self.depth -= 1
            if self.depth == 0:
                self.timer.mark(self.current)
                self.current = after

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class LMStagedPredictor:
    """The LM policy's own `predict_batch`, with stage boundaries marked by forward hooks.

    use_cache: the policy's KV-cache switch (True is its default `predict`; False recomputes the
    whole sequence at every Euler step / generated token, the policies' reference path).
    compile_decoding: decode through the LM's compiled static-shape step during the call
    (`compiled_decoding`; token decoders only, with use_cache=True).
    """

    def __init__(self, policy: Any, *, use_cache: bool = True, compile_decoding: bool = False):
        family = lm_family(policy)
        if family is None:
            raise ValueError("LMStagedPredictor: an Octo Policy is staged by stages.StagedPredictor")
        if compile_decoding and (not use_cache or family not in DECODING_FAMILIES):
            raise ValueError(
                f"LMStagedPredictor: compile_decoding needs use_cache=True and a token-decoding family "
                f"{DECODING_FAMILIES}, got use_cache={use_cache}, family {family!r}"
            )
        self.policy, self.family, self.use_cache = policy, family, use_cache
        self.compile_decoding = compile_decoding
        self.stages = FAMILY_STAGES[family]
        self.last_calls: dict[str, int] = {}  # stage -> module calls in the last predict (e.g. expert: 10)

    def predict(
        self,
        observations: Observation | Sequence[Observation],
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        timer: StageTimer | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Like `Policy.predict`: -> actions (H, A) float32 in robot units, seconds per stage (+ "total")."""
        p = self.policy
        timer = timer or StageTimer(p.device, self.stages)
        hooks = _StageHooks(p, self.family, timer, use_cache=self.use_cache)
        compiled = compiled_decoding(p) if self.compile_decoding else contextlib.nullcontext()
        try:
            with torch.inference_mode(), eval_mode(p), compiled:
                batch = p.observations_to_batch(observations)
                timer.mark("rest")
                actions = lm_predict_batch(
                    p, batch, steps=steps, generator=generator, use_cache=self.use_cache
                )  # (1, H, A)
                out = actions[0].cpu().numpy().astype(np.float32)  # (H, A)
                timer.mark(hooks.current)
        finally:
            hooks.remove()
        self.last_calls = {k: v for k, v in hooks.calls.items() if k != "rest"}
        if not np.all(np.isfinite(out)):
            raise FloatingPointError("policy produced non-finite actions; refusing to return them")
        return out, timer.total()
