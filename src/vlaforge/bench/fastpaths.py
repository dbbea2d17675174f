"""Inference fast paths as `vlaforge bench` times them: each one is a different way to run the same call.

Every path returns the action chunk (H, A) in robot units for the same observations and generator,
so `vlaforge bench` can check it against the plain path run by run and report latency side by side.
docs/performance.md says when each one is worth it. The paths that ship (bf16 weights, compile, int8,
the prefix cache) are `vlaforge.inference`'s, which `load_policy` applies for eval and serve; this module
only wraps them for timing (and adds the autocast and LM-policy variants that exist for comparison).

    inference_mode  the plain path and the reference: `Policy.predict` (under torch.inference_mode)
    bf16            the same call under autocast(bfloat16): matmuls and convs in bf16, the rest fp32
    bf16-weights    a copy whose transformer weights are bfloat16 (`Policy.cast_for_inference`): no
                    per-call weight casts, half the bytes read; encoders and head stay fp32
    compile         torch.compile (inductor) on the conv stems, each transformer block and the head's
                    network; the Python around them (mask building, the sampler loop) stays eager
    int8            dynamic int8 quantization of the transformer's and the head's nn.Linear layers
                    (weights int8 ahead of time, activations quantized per call); CPU only
    prefix-cache    the task block's keys/values computed once per instruction (inference.prefix_cache)

The pretrained-LM policies (π0, π0-FAST, OpenVLA / RT-2, OFT; `lm_stages.lm_family`) run the same
paths on their own `predict_batch`, each path changing one thing against the reference:

    inference_mode  predict_batch(use_cache=False): the whole sequence recomputed at every Euler step /
                    generated token (what the policies call their reference path)
    bf16, int8      the same, under autocast / with the LM's nn.Linear layers quantized
    bf16-weights    π0 / π0.5: the same on a copy cast by `Pi0Policy.cast_for_inference` (vision,
                    projector, Gemma + expert in bf16); other LM policies: PathUnavailable
    prefix-cache    predict_batch(use_cache=True), the policies' default: prefix (+ state) into a KV
                    cache once, then only the expert (π0) or one token (decoders) per step
    compile         token decoders (OpenVLA / RT-2, π0-FAST): predict_batch(use_cache=True) with every
                    decode step through the LM's torch.compile'd static-shape step
                    (`DecoderLM.compile_decoding`: one graph for all steps), the prompt pass eager;
                    π0 and OFT: PathUnavailable with the reason (`lm_compile_unavailable`)

A path that does not apply (int8 on CUDA) raises `PathUnavailable`; one that fails on this machine
(torch.compile without a working C++ toolchain) raises whatever it raised: the caller reports both
and carries on with the other paths.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vlaforge.bench.lm_stages import LMStagedPredictor, lm_predict_batch
from vlaforge.inference.fastpaths import (
    PathUnavailable,
    bf16_copy,
    compile_toolchain_problem,
    compiled_copy,
    int8_copy,
    lm_family,
)
from vlaforge.inference.prefix_cache import StagedPredictor, eval_mode
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.registry import family_of
from vlaforge.types import Observation

# (observations, generator) -> (actions (H, A) float32, seconds per stage or None)
PredictFn = Callable[
    [Sequence[Observation], torch.Generator | None], tuple[np.ndarray, dict[str, float] | None]
]


@dataclass(frozen=True)
class FastPathSpec:
    """name; what it does; the max |action - plain action| (robot units) accepted as the same chunk;
    the dtype whose matmul peak the roofline uses (None: no roofline, e.g. int8)."""

    name: str
    summary: str
    tolerance: float
    roofline_dtype: str | None


# Tolerances, in robot units (Meta-World actions span [-1, 1]). Exact-arithmetic paths (compile,
# prefix-cache) only reorder fp32 sums: 1e-4 leaves room for the ~20 DDPM steps that amplify a
# 1e-7 feature difference. Reduced-precision paths (bf16: 8-bit mantissa; int8) get 0.05, i.e.
# 2.5% of the action range; an untrained binned head can still exceed it because its near-tied
# logits let one rounding flip the arg-max bin (the report shows the mean difference too).
PATHS: dict[str, FastPathSpec] = {
    s.name: s
    for s in (
        FastPathSpec("inference_mode", "Policy.predict, fp32 (reference)", 0.0, "fp32"),
        FastPathSpec("bf16", "autocast bfloat16", 0.05, "bf16"),
        FastPathSpec("bf16-weights", "transformer weights cast to bfloat16 once (a copy)", 0.05, "bf16"),
        FastPathSpec("compile", "torch.compile: stems, blocks, head net; LM decode step", 1e-4, "fp32"),
        FastPathSpec("int8", "dynamic int8 Linear in transformer + head", 0.05, None),
        FastPathSpec("prefix-cache", "task keys/values cached per instruction", 1e-4, "fp32"),
    )
}
BASELINE = "inference_mode"


@dataclass
class PreparedPath:
    """A ready-to-time path. setup_s: building it plus its first call (compilation happens there)."""

    spec: FastPathSpec
    predict: PredictFn
    setup_s: float
    staged: StagedPredictor | LMStagedPredictor | None = (
        None  # set when the path runs staged (its breakdown comes free)
    )
    note: str = ""
    # an eager call running the same operations, to count FLOPs for a compiled path that is not staged
    # (FlopCounterMode cannot trace compiled graphs)
    eager_equivalent: PredictFn | None = None


def parse_paths(text: str) -> list[str]:
    """'bf16,int8' -> ['inference_mode', 'bf16', 'int8'] (the baseline always runs, first); 'all' = every path."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(PATHS)
    bad = [s for s in items if s not in PATHS]
    if bad or not items:
        raise ValueError(f"--paths: unknown path(s) {bad or text!r}; choose from {list(PATHS)} or 'all'")
    return [BASELINE, *dict.fromkeys(s for s in items if s != BASELINE)]


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _plain(policy: Policy, steps: int | None, bf16: bool = False) -> PredictFn:
    device = policy.device

    def run(obs: Sequence[Observation], gen: torch.Generator | None) -> tuple[np.ndarray, None]:
        with autocast_context(device, bf16):
            return policy.predict(obs, steps=steps, generator=gen).actions, None

    return run


def _bf16_note(device: torch.device) -> str:
    if device.type == "cpu" and not _cpu_has_native_bf16():
        return "no avx512_bf16/amx on this CPU: bf16 matmuls are emulated"
    return ""


def prepare_path(
    name: str,
    policy: Policy,
    observations: Sequence[Observation],
    *,
    steps: int | None = None,
    generator: Callable[[int], torch.Generator],
) -> PreparedPath:
    """Build path `name` for `policy` and make its first call (compilation, caches) -> PreparedPath.

    generator(i) returns the generator of run i (the same seed for every path). Raises
    PathUnavailable when the path does not apply; other exceptions are the path failing here.
    """
    if name not in PATHS:
        raise ValueError(f"unknown fast path {name!r}; choose from {list(PATHS)}")
    if lm_family(policy) is not None:
        return _prepare_lm(name, policy, observations, steps=steps, generator=generator)
    spec = PATHS[name]
    device = policy.device
    t0 = time.perf_counter()
    staged = None
    note = ""
    if name == "inference_mode":
        fn = _plain(policy, steps)
    elif name == "bf16":
        fn = _plain(policy, steps, bf16=True)
        note = _bf16_note(device)
    elif name == "bf16-weights":
        fn = _plain(bf16_copy(policy), steps)
        note = _bf16_note(device)
    elif name == "compile":
        fn = _plain(compiled_copy(policy), steps)
    elif name == "int8":
        if device.type != "cpu":
            raise PathUnavailable(f"int8 dynamic quantization runs on CPU only (device is {device.type})")
        fn = _plain(int8_copy(policy).eval(), steps)
    else:  # prefix-cache
        if policy.config.datasets:
            raise PathUnavailable("prefix cache: mixture policies are not supported")
        staged = StagedPredictor(policy, prefix_cache=True)

        def fn(
            obs: Sequence[Observation], gen: torch.Generator | None
        ) -> tuple[np.ndarray, dict[str, float]]:
            return staged.predict(obs, steps=steps, generator=gen)

    fn(observations, generator(-1))  # first call: compiles, fills caches; errors surface here
    return PreparedPath(spec, fn, time.perf_counter() - t0, staged, note)


def lm_plain(policy: Any, steps: int | None, *, use_cache: bool, bf16: bool = False) -> PredictFn:
    """An LM policy's `predict_batch` with its KV-cache switch -> (actions (H, A), None)."""
    device = policy.device

    def run(obs: Sequence[Observation], gen: torch.Generator | None) -> tuple[np.ndarray, None]:
        batch = policy.observations_to_batch(obs)
        with autocast_context(device, bf16):
            actions = lm_predict_batch(policy, batch, steps=steps, generator=gen, use_cache=use_cache)
        return actions[0].float().cpu().numpy(), None  # (H, A)

    return run


class LMInt8Swap:
    """int8 dynamic quantization of an LM policy's decoder nn.Linear layers (π0: LM + expert), swapped in
    for the duration of a call.

    Not a deep copy as for Octo: OFT's FiLM drives the vision tower through forward pre-hooks whose
    closures point at the original FiLM module, so a deep-copied policy raises "condition(...) was not
    called". The quantized layers are built once; `swapped()` puts them in place and restores the fp32
    ones afterwards. `lm_head` stays fp32: the LM applies it as F.linear(h, lm_head.weight) (its
    `output_weight`), which a packed quantized Linear does not have; the vision tower, projector and
    action heads stay fp32 too (the policies cast their inputs to those modules' weight dtype).
    """

    def __init__(self, policy: Any):
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import default_dynamic_qconfig

        scope = "transformer." if lm_family(policy) == "pi0" else "lm."
        self.swaps: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []  # parent, attr, fp32, int8
        modules = dict(policy.named_modules())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            for name, m in modules.items():
                if type(m) is not nn.Linear or not name.startswith(scope) or name.endswith("lm_head"):
                    continue
                parent_name, _, attr = name.rpartition(".")
                float_copy = copy.deepcopy(m)
                float_copy.qconfig = default_dynamic_qconfig
                self.swaps.append((modules[parent_name], attr, m, DynamicLinear.from_float(float_copy)))
        if not self.swaps:
            raise PathUnavailable(f"int8: no nn.Linear under '{scope}' to quantize")

    @contextlib.contextmanager
    def swapped(self) -> Any:
        for parent, attr, _, q in self.swaps:
            setattr(parent, attr, q)
        try:
            yield
        finally:
            for parent, attr, m, _ in self.swaps:
                setattr(parent, attr, m)


LM_COMPILE_REASONS = {
    "oft": (
        "OFT decodes nothing: its one LM pass over prefix + H*A placeholders has a fixed sequence length "
        "and no per-token step; the compiled path is the token decoders' static-shape decode step"
    ),
}


def lm_compile_unavailable(policy: Any) -> str | None:
    """Why the `compile` path does not apply to this LM policy on its device, or None when it does."""
    family = lm_family(policy)
    if family in LM_COMPILE_REASONS:
        return LM_COMPILE_REASONS[family]
    return compile_toolchain_problem(policy.device)


def _prepare_lm(
    name: str,
    policy: Any,
    observations: Sequence[Observation],
    *,
    steps: int | None,
    generator: Callable[[int], torch.Generator],
) -> PreparedPath:
    """`prepare_path` for the pretrained-LM policies (see the module docstring for what each path is)."""
    spec = PATHS[name]
    device = policy.device
    t0 = time.perf_counter()
    staged = None
    note = ""
    if name == "inference_mode":
        fn = lm_plain(policy, steps, use_cache=False)
        note = "predict_batch(use_cache=False): the policy's reference path"
    elif name == "bf16":
        fn = lm_plain(policy, steps, use_cache=False, bf16=True)
        note = _bf16_note(device)
    elif name == "bf16-weights":
        if not family_of(policy).capabilities.bf16_weights:
            raise PathUnavailable(
                f"bf16-weights: {type(policy).__name__} has no cast_for_inference (use the bf16 autocast path)"
            )
        fn = lm_plain(bf16_copy(policy), steps, use_cache=False)
        note = _bf16_note(device)
    elif name == "compile":
        reason = lm_compile_unavailable(policy)
        if reason is not None:
            raise PathUnavailable(reason)
        if family_of(policy).capabilities.compile == "sampling":  # π0 / π0.5: compile_sampling()
            return _prepare_pi0_compiled(policy, observations, steps=steps, generator=generator, t0=t0)
        # Staged like prefix-cache (the same call with the decode steps compiled), so the two compare
        # stage by stage and carry the same hook overhead. setup_s includes the compilation.
        lm_compiled = LMStagedPredictor(policy, use_cache=True, compile_decoding=True)
        staged = lm_compiled
        note = (
            "predict_batch(use_cache=True), decode steps compiled (DecoderLM.compile_decoding; prompt eager)"
        )

        def fn(
            obs: Sequence[Observation], gen: torch.Generator | None
        ) -> tuple[np.ndarray, dict[str, float]]:
            return lm_compiled.predict(obs, steps=steps, generator=gen)
    elif name == "int8":
        if device.type != "cpu":
            raise PathUnavailable(f"int8 dynamic quantization runs on CPU only (device is {device.type})")
        int8 = LMInt8Swap(policy)
        plain = lm_plain(policy, steps, use_cache=False)
        note = f"{len(int8.swaps)} LM Linear layers int8 (lm_head, vision and heads fp32)"

        def fn(obs: Sequence[Observation], gen: torch.Generator | None) -> tuple[np.ndarray, None]:
            with int8.swapped():
                return plain(obs, gen)
    else:  # prefix-cache: the policy's own KV-cache switch, staged by hooks (its breakdown comes free)
        lm_staged = LMStagedPredictor(policy, use_cache=True)
        staged = lm_staged
        note = "predict_batch(use_cache=True): the policy's default predict"

        def fn(
            obs: Sequence[Observation], gen: torch.Generator | None
        ) -> tuple[np.ndarray, dict[str, float]]:
            return lm_staged.predict(obs, steps=steps, generator=gen)

    fn(observations, generator(-1))  # first call: errors surface here
    return PreparedPath(spec, fn, time.perf_counter() - t0, staged, note)


def _prepare_pi0_compiled(
    policy: Any,
    observations: Sequence[Observation],
    *,
    steps: int | None,
    generator: Callable[[int], torch.Generator],
    t0: float,
) -> PreparedPath:
    """π0 / π0.5 `compile`: the prefix-cache call with `Pi0Policy.compile_sampling()` switched on for it.

    Timed whole: the stage hooks would run inside the compiled graphs (graph breaks), so this path has
    no breakdown; its FLOPs are counted on the same call run eagerly.
    """
    cached = lm_plain(policy, steps, use_cache=True)

    def fn(obs: Sequence[Observation], gen: torch.Generator | None) -> tuple[np.ndarray, None]:
        policy.compile_sampling()
        try:
            with torch.inference_mode(), eval_mode(policy):
                return cached(obs, gen)
        finally:
            policy.compile_sampling(False)

    fn(observations, generator(-1))  # first call: compiles (setup_s includes it); errors surface here
    note = (
        "predict_batch(use_cache=True) with Pi0Policy.compile_sampling() on (vision encode, prefix pass "
        "and expert step compiled); timed whole, no stage breakdown"
    )
    return PreparedPath(PATHS["compile"], fn, time.perf_counter() - t0, None, note, eager_equivalent=cached)


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
