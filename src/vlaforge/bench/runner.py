"""One policy, every requested fast path: FLOPs, stage breakdown, latency, memory, action check, roofline.

`bench_policy` returns one JSON-ready record (the `results[]` entries of bench-<version>.json,
documented in docs/performance.md). The order of work matters on a shared machine:

1. FLOPs of one full `Policy.predict` (all sampling steps), and per stage through `StagedPredictor`;
2. each path is built and called once (compilation, caches; failures are recorded, not raised);
3. all paths are timed interleaved, `warmup` rounds then `runs` rounds, run i with seed 1000 + i for
   every path, and each path's actions are compared with the plain path's run by run;
4. the stage breakdown of the plain path: `runs` staged calls, checked bit-identical to `predict`
   (LM policies: their default predict, KV cache on, staged by forward hooks: `lm_stages.py`);
5. per-call peak memory of each path, then roofline multiples if matmul peaks were measured.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from vlaforge.bench.embodiment import parameter_counts, sampler_steps
from vlaforge.bench.fastpaths import BASELINE, PATHS, PreparedPath, lm_plain, prepare_path
from vlaforge.bench.flops import count_flops, count_stage_flops
from vlaforge.bench.lm_stages import FAMILY_STAGES, LMStagedPredictor, lm_model_shape
from vlaforge.bench.measure import measure_memory, summarize_ms, time_interleaved
from vlaforge.bench.roofline import MatmulThroughput, roofline_multiple
from vlaforge.inference.fastpaths import PathUnavailable, lm_family
from vlaforge.inference.load import example_observations
from vlaforge.inference.prefix_cache import STAGES, StagedPredictor
from vlaforge.policies.octo.policy import Policy, count_tokens

# The action head of each LM family, in the report's model label (octo-tiny/diffusion, pi0-tiny/flow).
LM_HEADS = {"pi0": "flow", "vla": "tokens", "oft": "mlp", "pi0-fast": "fast"}
SEED0 = 1000  # run i draws its noise from seed SEED0 + i, on every path


def _error_text(e: BaseException, limit: int = 400) -> str:
    """`Type: first line of the message`, short enough for a table cell and a JSON field."""
    msg = str(e).strip().splitlines()
    first = msg[0] if msg else ""
    text = f"{type(e).__name__}: {first}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_shape(policy: Policy) -> dict[str, Any]:
    """What sets the cost of one call: history, chunk, image sizes, sequence length, width, depth."""
    c = policy.config
    return {
        "cameras": {k: list(v) for k, v in c.cameras.items()},
        "encoder_image_size": c.encoder_image_size,
        "history": c.history,
        "chunk": c.chunk,
        "tokens": count_tokens(c),
        "text_tokens": c.text_max_len,
        "width": c.width,
        "depth": c.depth,
    }


def _median_stages(stage_seconds: list[dict[str, float]], stages: Sequence[str] = STAGES) -> dict[str, Any]:
    return {k: round(1000 * float(np.median([s[k] for s in stage_seconds])), 3) for k in (*stages, "total")}


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Silence the per-call decode warnings of untrained LM decoders (random weights emit text tokens
    or no FAST end token on nearly every call); the counts are in the record's `decode_stats`."""
    loggers = [logging.getLogger(n) for n in ("vlaforge.vla", "vlaforge.pi0_fast")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def bench_policy(
    policy: Policy,
    *,
    paths: list[str],
    runs: int,
    warmup: int,
    steps: int | None = None,
    roofline: dict[str, MatmulThroughput] | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Benchmark `policy` (eval mode, on its device) on every path in `paths` -> one result record."""
    if not paths or paths[0] != BASELINE:
        raise ValueError(f"paths must start with the reference path {BASELINE!r}, got {paths}")
    device = policy.device
    observations = example_observations(policy, seed)

    def generator(i: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(SEED0 + i)

    family = lm_family(policy)
    sampler, head_steps = sampler_steps(policy, steps)
    record: dict[str, Any] = {
        "family": family or "octo",
        "head": LM_HEADS[family] if family else policy.config.head,
        "stages": list(FAMILY_STAGES[family] if family else STAGES),
        "sampler": sampler,
        "head_steps": head_steps,
        "model": lm_model_shape(policy) if family else model_shape(policy),
        "params": parameter_counts(policy),
    }

    def new_staged() -> StagedPredictor | LMStagedPredictor:
        return LMStagedPredictor(policy) if family else StagedPredictor(policy)

    # 1. FLOPs: the whole call, and per stage (the stages must add up to the whole).
    with _quiet_decoders():
        full, _ = count_flops(policy.predict, observations, steps=steps, generator=generator(0))
        by_stage = count_stage_flops(new_staged(), observations, steps=steps, generator=generator(0))
    record["flops"] = {
        "per_chunk": full.total,
        "by_stage": {k: v for k, v in by_stage.items() if k != "total"},
        "stages_match_predict": by_stage["total"] == full.total,
        "by_op": full.by_op,
    }

    # 2. Build every path and make its first call.
    prepared: dict[str, PreparedPath] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in paths:
        spec = PATHS[name]
        base = {"summary": spec.summary, "tolerance": spec.tolerance}
        try:

            def build(name: str = name) -> None:
                prepared[name] = prepare_path(name, policy, observations, steps=steps, generator=generator)

            setup_memory = measure_memory(build, device)
        except PathUnavailable as e:
            results[name] = {**base, "status": "unavailable", "reason": str(e)}
            log(f"    {name}: unavailable ({e})")
            continue
        except Exception as e:  # a path failing on this machine is a result, not a crash
            if name == BASELINE:
                raise
            results[name] = {**base, "status": "error", "error": _error_text(e)}
            log(f"    {name}: failed: {_error_text(e)}")
            continue
        pp = prepared[name]
        results[name] = {
            **base,
            "status": "ok",
            "setup_s": round(pp.setup_s, 3),
            "setup_memory": setup_memory,
            **({"note": pp.note} if pp.note else {}),
        }

    # 3. Interleaved timing; actions compared with the plain path run by run.
    fns = {name: (lambda i, pp=pp: pp.predict(observations, generator(i))) for name, pp in prepared.items()}
    with _quiet_decoders():
        seconds, outputs = time_interleaved(fns, runs, warmup, device=device)
    reference = np.stack([a for a, _ in outputs[BASELINE]])  # (runs, H, A)
    base_median = float(np.median(seconds[BASELINE]))
    chunk = policy.config.chunk
    for name, pp in prepared.items():
        r = results[name]
        actions = np.stack([a for a, _ in outputs[name]])  # (runs, H, A)
        diff = np.abs(actions.astype(np.float64) - reference)
        r.update(summarize_ms(seconds[name]))
        median_s = r["median_ms"] / 1000.0
        r["control_hz"] = round(chunk / median_s, 1)
        r["speedup"] = round(base_median / float(np.median(seconds[name])), 3)
        r["max_abs_diff"] = float(f"{diff.max():.3g}")
        r["mean_abs_diff"] = float(f"{diff.mean():.3g}")
        r["equal"] = bool(diff.max() <= pp.spec.tolerance)
        if name == BASELINE:
            r["max_abs_action"] = float(f"{np.abs(reference).max():.3g}")
        if pp.staged is not None:
            stages = getattr(pp.staged, "stages", STAGES)
            r["breakdown_ms"] = _median_stages([s for _, s in outputs[name] if s is not None], stages)

    # 4. Stage breakdown of the plain path, and the check that it is the same computation. LM policies:
    #    the policy's default predict (KV cache on), staged by hooks around its own sub-modules.
    staged = new_staged()
    with _quiet_decoders():
        staged_actions, _ = staged.predict(observations, steps=steps, generator=generator(0))
        plain_actions = policy.predict(observations, steps=steps, generator=generator(0)).actions
        stage_seconds = [
            staged.predict(observations, steps=steps, generator=generator(i))[1] for i in range(-1, runs)
        ][1:]  # the first is a warm-up
    breakdown = _median_stages(stage_seconds, record["stages"])
    if family:
        assert isinstance(staged, LMStagedPredictor)
        breakdown["calls"] = staged.last_calls  # e.g. {"vision": 2, "backbone": 1, "expert": 10}
        breakdown["use_cache"] = staged.use_cache
        stepped = {"pi0": "expert", "vla": "decode", "pi0-fast": "decode", "oft": "head"}[family]
        breakdown["per_step"] = round(breakdown[stepped] / max(staged.last_calls.get(stepped, 0), 1), 3)
        breakdown["timed_by"] = "forward hooks on the policy's own modules (lm_stages.py)"
    else:
        breakdown["head_per_step"] = round(breakdown["head"] / head_steps, 3)
    breakdown["matches_predict"] = bool(np.array_equal(staged_actions, plain_actions))
    record["breakdown_ms"] = breakdown

    # 5. Per-call memory in steady state, and the roofline.
    with _quiet_decoders():
        for name, pp in prepared.items():
            results[name]["memory"] = measure_memory(
                lambda pp=pp: pp.predict(observations, generator(0)), device
            )
        reference_flops = full.total
        if family:  # the LM reference path recomputes the sequence per step: count that call itself
            ref_fn = lm_plain(policy, steps, use_cache=False)
            reference_flops = count_flops(ref_fn, observations, generator(0))[0].total
    if family:
        record["decode_stats"] = dict(getattr(policy, "decode_stats", {}))
    for name, pp in prepared.items():
        r = results[name]
        flops = (
            reference_flops  # bf16 / int8 run the reference's ops (int8 matmuls counted as their fp32 ones)
        )
        if pp.staged is not None:  # the prefix cache skips the task block: count what it really runs
            with _quiet_decoders():
                staged_flops = count_stage_flops(pp.staged, observations, steps=steps, generator=generator(0))
            flops = staged_flops["total"]
        elif pp.eager_equivalent is not None:  # π0's compiled path: the same call, counted eagerly
            with _quiet_decoders():
                flops = count_flops(pp.eager_equivalent, observations, generator(0))[0].total
        r["flops_per_chunk"] = flops
        dtype = pp.spec.roofline_dtype
        if roofline and dtype in roofline:
            peak = roofline[dtype].best_gflops
            r["roofline"] = {
                "dtype": dtype,
                "peak_gflops": peak,
                "ideal_ms": round(flops / (peak * 1e9) * 1000, 4),
                "multiple": round(roofline_multiple(r["median_ms"] / 1000, flops, peak), 2),
            }
        elif roofline:
            r["roofline"] = {"dtype": None, "reason": "no matmul peak measured for int8"}
    record["paths"] = {name: results[name] for name in paths}
    return record
