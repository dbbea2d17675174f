"""Batch-1 latency of `Policy.predict` on CPU: recipes x action heads, fp32 vs bf16 autocast.

    .venv/bin/python benchmarks/bench_inference.py                               # octo-tiny + octo-small, 4 heads
    .venv/bin/python benchmarks/bench_inference.py --calls 20 --threads 2        # quick check
    .venv/bin/python benchmarks/bench_inference.py --recipes octo-tiny --heads flow,l1

What a robot loop pays for one action chunk: `predict([obs_{t-T+1}, ..., obs_t])` on the Meta-World
embodiment (cameras `corner` and `gripper` at 128x128, state 4, action 4), from numpy observations to
unnormalized actions. History T and chunk H are each recipe's own (`--history` overrides T); the
recipe may resize the images before its encoder (octo-tiny: 64x64). Weights are random: latency
does not depend on them.

  latency      median and p90 over --calls calls, after --warmup calls. fp32 and bf16 calls are
               interleaved (fp32, bf16, fp32, ...) so that load from other processes hits both alike.
  control rate H / median latency: actions per second when the robot runs one predict per chunk.
  bf16         the same call under torch.autocast("cpu", dtype=torch.bfloat16); speed as fp32/bf16 time,
               and the max |a_bf16 - a_fp32| over all calls, in robot units (actions span [-1, 1]),
               with the same noise seed per call so stochastic heads sample the same trajectory.
               (binned: an untrained model's logits are nearly tied, so bf16 rounding can flip the
               arg-max to a distant bin; the mean diff shows how rare that is.)
  breakdown    for --breakdown-recipe: encode (image stems + state/text encoders + transformer) vs
               head.sample (diffusion: DDPM over all 20 training steps; flow: 10 Euler steps; binned,
               l1: one pass), the rest being batching, validation and unnormalization.

Writes benchmarks/results/inference_cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.bench.embodiment import (
    ACTION_DIM,
    CAMERAS,
    IMAGE_SIZE,
    STATE_DIM,
    TASKS,
    metaworld_embodiment,
    parameter_counts,
)
from vlaforge.bench.measure import cpu_flags, summarize_ms, time_interleaved
from vlaforge.policies.octo.policy import Policy, count_tokens
from vlaforge.policies.octo.recipes import RECIPES
from vlaforge.policies.recipes import make_policy
from vlaforge.types import ACTION_KEY, Observation

RESULTS = Path(__file__).resolve().parent / "results" / "inference_cpu.json"
HEADS = ("diffusion", "flow", "binned", "l1")
PRECISIONS = ("fp32", "bf16")

# The Meta-World embodiment recorded by `vlaforge record` (REFERENCE.md): two 128x128 cameras,
# state = hand xyz + gripper opening, action = delta xyz + gripper effort in [-1, 1]; the stand-in
# dataset and its constants are `vlaforge bench`'s (CAMERAS, ... are re-exported for bench_train).


# ---------------------------------------------------------------------------------------------- setup


def build_policy(recipe: str, head: str, *, history: int | None = None, seed: int = 0) -> Policy:
    """Random-weight policy of `recipe` with `head` for the Meta-World embodiment, in eval mode.

    history: T observation steps per call; None keeps the recipe's own value (as `vlaforge train` does).
    """
    torch.manual_seed(seed)
    return make_policy(recipe, metaworld_embodiment(), head=head, history=history).eval()


def random_observations(history: int, seed: int = 0) -> list[Observation]:
    """`history` observations (oldest first) with random images and states, as a robot loop passes them."""
    rng = np.random.default_rng(seed)
    return [
        Observation(
            images={
                cam: rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for cam in CAMERAS
            },
            state=rng.uniform(-0.5, 0.5, STATE_DIM).astype(np.float32),
            instruction=TASKS[1],
        )
        for _ in range(history)
    ]


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


# ------------------------------------------------------------------------------------------ timing


def measure_predict(
    policy: Policy, observations: list[Observation], calls: int, warmup: int
) -> dict[str, Any]:
    """Latency of `policy.predict` in fp32 and bf16 autocast, and how far the bf16 actions are from fp32."""

    def call(precision: str) -> Callable[[int], np.ndarray]:
        def run(i: int) -> np.ndarray:
            gen = torch.Generator().manual_seed(1000 + i)  # same noise for both precisions
            with precision_context(precision):
                return policy.predict(observations, generator=gen).actions  # (H, A)

        return run

    seconds, outputs = time_interleaved({p: call(p) for p in PRECISIONS}, calls, warmup)
    fp32, bf16 = np.stack(outputs["fp32"]), np.stack(outputs["bf16"])  # (calls, H, A)
    result: dict[str, Any] = {p: summarize_ms(seconds[p]) for p in PRECISIONS}
    for p in PRECISIONS:
        result[p]["control_hz"] = round(policy.config.chunk / (result[p]["median_ms"] / 1000.0), 1)
    result["bf16_speedup"] = round(result["fp32"]["median_ms"] / result["bf16"]["median_ms"], 2)
    result["bf16_max_abs_diff"] = float(f"{np.abs(bf16 - fp32).max():.3g}")
    result["bf16_mean_abs_diff"] = float(f"{np.abs(bf16 - fp32).mean():.3g}")
    result["fp32_max_abs_action"] = float(f"{np.abs(fp32).max():.3g}")
    return result


def staged_predict(
    policy: Policy, observations: list[Observation], precision: str, seed: int
) -> dict[str, float]:
    """`Policy.predict`, stage by stage, timed within the one call: -> seconds per stage.

    Timing the stages inside the same call (rather than each stage in its own loop) keeps the split
    consistent when other processes load the machine: the stages of one call sum to its total.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode(), precision_context(precision):
        t0 = time.perf_counter()
        batch = policy.observations_to_batch(observations)
        t1 = time.perf_counter()
        features = policy.encode(batch)  # (1, D)
        t2 = time.perf_counter()
        actions = policy.head.sample(features, generator=gen)  # (1, H, A) normalized
        t3 = time.perf_counter()
        policy.normalizer.unnormalize(ACTION_KEY, actions.float())[0].numpy()  # (H, A) robot units
        t4 = time.perf_counter()
    return {"encode": t2 - t1, "head": t3 - t2, "rest": (t1 - t0) + (t4 - t3), "predict": t4 - t0}


def measure_breakdown(
    policy: Policy, observations: list[Observation], calls: int, warmup: int
) -> dict[str, Any]:
    """Median ms per stage (encode = encoders + transformer, head = sampling, rest) and each precision."""
    fns = {p: (lambda i, p=p: staged_predict(policy, observations, p, 1000 + i)) for p in PRECISIONS}
    _, outputs = time_interleaved(fns, calls, warmup)
    out: dict[str, Any] = {}
    for p in PRECISIONS:
        stages = {k: [o[k] for o in outputs[p]] for k in ("predict", "encode", "head", "rest")}
        out[p] = {k: round(1000 * statistics.median(v), 3) for k, v in stages.items()}
        out[p]["head_share"] = round(
            statistics.median(h / t for h, t in zip(stages["head"], stages["predict"])), 3
        )
    return out


# The bf16-relevant ISA extensions (what oneDNN can use under autocast).
BF16_FLAGS = ("avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


# ------------------------------------------------------------------------------------------ report


def print_tables(
    command: str, machine: dict[str, str], rows: list[dict[str, Any]], breakdown: dict | None
) -> None:
    print(f"\ncommand: {command}")
    print(
        f"machine: {machine['cpu']} ({machine['cores']} cores, torch threads {machine['torch_threads']}, "
        f"ISA {machine.get('cpu_capability')}, flags {machine.get('cpu_flags')}), torch {machine['torch']}"
    )
    print(f"embodiment: cameras {'+'.join(CAMERAS)} {IMAGE_SIZE}x{IMAGE_SIZE}, state {STATE_DIM}, "
          f"action {ACTION_DIM}; batch 1; T = history, H = chunk, tokens = transformer sequence length\n")  # fmt: skip
    print("| recipe | head | T | H | tokens | params | fp32 median ms | fp32 p90 ms | fp32 actions/s | "
          "bf16 median ms | bf16 p90 ms | bf16 actions/s | fp32/bf16 | bf16 max / mean abs diff |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f, b, m = r["fp32"], r["bf16"], r["model"]
        print(
            f"| {r['recipe']} | {r['head']} | {m['history']} | {m['chunk']} | {m['tokens']} | "
            f"{r['params']['total'] / 1e6:.2f}M | {f['median_ms']:.2f} | "
            f"{f['p90_ms']:.2f} | {f['control_hz']:.0f} | {b['median_ms']:.2f} | {b['p90_ms']:.2f} | "
            f"{b['control_hz']:.0f} | {r['bf16_speedup']:.2f}x | {r['bf16_max_abs_diff']:.2g} / {r['bf16_mean_abs_diff']:.2g} |"
        )
    if breakdown:
        print(f"\nbreakdown, {breakdown['recipe']} (median ms of each stage within the same calls; "
              "rest = batching, checks, unnormalize):\n")  # fmt: skip
        parts = ("predict", "encode", "head", "rest")
        cols = [f"{p} {k}" for p in PRECISIONS for k in (*parts, "head share")]
        print("| head | sampler | " + " | ".join(cols) + " |")
        print("|---|---|" + "---:|" * len(cols))
        for head, r in breakdown["heads"].items():
            cells = [
                c
                for p in PRECISIONS
                for c in [f"{r[p][k]:.2f}" for k in parts] + [f"{r[p]['head_share']:.0%}"]
            ]
            print(f"| {head} | {r['sampler']} | " + " | ".join(cells) + " |")


def model_shape(policy: Policy) -> dict[str, Any]:
    """What sets the cost of one call: history, chunk, encoder input size, transformer sequence length."""
    c = policy.config
    return {
        "history": c.history,
        "chunk": c.chunk,
        "encoder_image_size": c.encoder_image_size or c.cameras[policy.camera_names[0]],
        "tokens": count_tokens(c),
        "width": c.width,
        "depth": c.depth,
    }


def sampler_description(policy: Policy) -> str:
    head = policy.head
    if head.name == "diffusion":
        steps = head.schedule.steps if head.sampler == "ddpm" else head.sample_steps
        return f"{head.sampler} {steps} steps"
    if head.name == "flow":
        return f"euler {head.steps} steps"
    return "one pass"


def parse_list(text: str, allowed: tuple[str, ...] | list[str], flag: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise SystemExit(f"{flag}: unknown value(s) {bad or text!r}; choose from {list(allowed)}")
    return items


def command_line(argv: list[str] | None) -> str:
    """The command that reproduces this run, for the result JSON (argv: what main() was given, if any)."""
    return "python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    )


def write_record(record: dict[str, Any], out: Path) -> None:
    """Write a benchmark's result JSON (indented, newline-terminated; the benchmarks/results layout)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100, help="timed predict calls per (recipe, head, precision)")
    p.add_argument(
        "--warmup", type=int, default=5, help="untimed calls first (allocator, oneDNN kernel choice)"
    )
    p.add_argument("--recipes", default="octo-tiny,octo-small", help="comma-separated recipe names")
    p.add_argument("--heads", default=",".join(HEADS), help="comma-separated heads")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    p.add_argument(
        "--breakdown-recipe", default="octo-small", help="recipe for the encode/head split ('' = skip)"
    )
    p.add_argument(
        "--history", type=int, default=None, help="observation steps T per call (default: each recipe's own)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or (args.history is not None and args.history < 1):
        raise SystemExit("--calls and --history must be >= 1, --warmup >= 0")
    recipes = parse_list(args.recipes, sorted(RECIPES), "--recipes")
    heads = parse_list(args.heads, HEADS, "--heads")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = command_line(argv)

    from vlaforge.info import machine_info

    machine = {
        **machine_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(BF16_FLAGS),
    }
    rows = []
    for recipe in recipes:
        for head in heads:
            policy = build_policy(recipe, head, history=args.history)
            observations = random_observations(policy.config.history)
            r = measure_predict(policy, observations, args.calls, args.warmup)
            rows.append({"recipe": recipe, "head": head, "sampler": sampler_description(policy),
                         "model": model_shape(policy), "params": parameter_counts(policy), **r})  # fmt: skip
            print(
                f"{recipe:>10} {head:>9}: fp32 {r['fp32']['median_ms']:7.2f} ms, bf16 {r['bf16']['median_ms']:7.2f} ms "
                f"({r['bf16_speedup']:.2f}x), max |diff| {r['bf16_max_abs_diff']:.2g}",
                flush=True,
            )

    breakdown = None
    if args.breakdown_recipe:
        breakdown = {"recipe": args.breakdown_recipe, "heads": {}}
        for head in heads:
            policy = build_policy(args.breakdown_recipe, head, history=args.history)
            observations = random_observations(policy.config.history)
            parts = measure_breakdown(policy, observations, args.calls, args.warmup)
            breakdown["heads"][head] = {"sampler": sampler_description(policy), **parts}

    print_tables(command, machine, rows, breakdown)
    record = {
        "command": command,
        "machine": machine,
        "embodiment": {
            "cameras": list(CAMERAS),
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
            "state_dim": STATE_DIM,
            "action_dim": ACTION_DIM,
            "batch": 1,
        },
        "calls": args.calls,
        "warmup": args.warmup,
        "results": rows,
        "breakdown": breakdown,
    }
    write_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
