"""π0 chunk latency: prefix KV cache vs recomputing the whole joint sequence at every flow step.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_pi0_cache.py            # pi0-tiny, pi0-small
    .venv/bin/python benchmarks/bench_pi0_cache.py --recipes pi0-tiny --calls 3             # quick check

For each recipe (random weights; latency does not depend on them), batch 1, two 128x128 cameras,
one instruction, fp32, under ``torch.inference_mode``:

* **cached chunk**: ``Pi0Policy.predict_batch(use_cache=True)``: vision + prefix (+ state) once into a
  KV cache, then ``--steps`` expert-only passes over the H action tokens;
* **recompute chunk**: ``predict_batch(use_cache=False)``: vision once, then the whole joint sequence
  (prefix with the backbone + state and actions with the expert) at every step;
* **prefix pass**: vision tower + projector + prompt embedding + one joint pass of prefix and state
  into the cache (what the cached path does once);
* **expert pass**: one Euler step of the cached path (action tokens through the expert against the
  cached keys/values, plus the action in/out projections).

It reports recompute / cached, the same ratio in FLOPs (counted with `torch.utils.flop_counter`: the
speed-up a compute-bound chunk would get), the cached chunk's GFLOP/s, and cached / (prefix + steps ×
expert) (≈ 1 when the chunk time is just its parts). Both chunk paths start from the same noise and
must agree to 1e-4 (checked). Calls alternate between the measured quantities so load from other processes hits all alike; the
table shows medians over --calls calls after one warm-up each. Writes benchmarks/results/pi0_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.bench.flops import count_flops
from vlaforge.models.lm import KVCache
from vlaforge.policies.pi0 import make_pi0_policy
from vlaforge.policies.pi0.policy import Pi0Policy

RESULTS = Path(__file__).resolve().parent / "results" / "pi0_cache.json"
TASKS = ["push the red block to the goal", "open the top drawer"]


class _BenchDataset:
    """The little of a `vlaforge.data.Dataset` a recipe reads: features, statistics, fps, tasks."""

    fps = 80.0

    def __init__(self, state_dim: int = 4, action_dim: int = 4, size: int = 128):
        self.features = {
            **{
                f"observation.images.{c}": {"dtype": "video", "shape": [size, size, 3]}
                for c in ("corner", "gripper")
            },
            "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
            "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        }
        self.stats = {
            k: {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)}
            for k, d in (("observation.state", state_dim), ("action", action_dim))
        }

        class _Meta:
            tasks = TASKS

        self.meta = _Meta()
        self.size = size


def _batch(ds: _BenchDataset) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    img = lambda: torch.randint(0, 256, (1, 1, ds.size, ds.size, 3), generator=g, dtype=torch.uint8)  # noqa: E731
    return {
        "observation.images.corner": img(),
        "observation.images.gripper": img(),
        "observation.state": torch.randn(1, 1, 4, generator=g),
        "task": [TASKS[0]],
    }


def _prefix_pass(policy: Pi0Policy, batch: dict[str, Any]) -> tuple[KVCache, torch.Tensor, torch.Tensor, int]:
    """What the cached path runs once per chunk: vision + embeddings + prefix/state joint pass into a cache."""
    c = policy.config
    prefix, valid = policy.embed_prefix(batch)
    B, P = valid.shape
    state = policy.embed_state(batch, B)
    mask, pos = policy.attention_mask(valid)
    lm = policy.backbone.config
    cache = KVCache(lm.num_layers, B, P + 1 + c.chunk, lm.num_kv_heads, lm.head_dim, dtype=prefix.dtype)
    policy._fill_cache(prefix, state, mask[:, : P + 1, : P + 1], pos[:, : P + 1], cache)
    return cache, mask[:, P + 1 :], pos[:, P + 1 :], P


def bench_recipe(recipe: str, calls: int, steps: int, compiled: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    ds = _BenchDataset()
    policy = make_pi0_policy(recipe, ds).eval()
    t_compile = time.perf_counter()
    if compiled:
        policy.compile_sampling()
    batch = _batch(ds)
    c = policy.config
    noise = torch.randn(1, c.chunk, c.max_action_dim, generator=torch.Generator().manual_seed(1))

    with torch.inference_mode():
        cache, amask, apos, P = _prefix_pass(policy, batch)
        n_cached = cache.length
        x = noise.clone()
        tau = torch.full((1,), 0.5)

        def expert_pass() -> None:
            cache.crop(n_cached)
            policy._velocity(x, tau, amask, apos, cache=cache)

        fns = {
            "cached": lambda: policy.sample_actions(batch, noise=noise, steps=steps, use_cache=True),
            "recompute": lambda: policy.sample_actions(batch, noise=noise, steps=steps, use_cache=False),
            "prefix": lambda: _prefix_pass(policy, batch),
            "expert": expert_pass,
        }
        a_c, a_u = fns["cached"](), fns["recompute"]()  # warm-up (compiles) and agreement check
        if compiled:  # the counter cannot see inside compiled graphs: count the same calls eagerly
            policy.compile_sampling(False)
        flops = {k: count_flops(fns[k])[0].total for k in ("cached", "recompute")}
        if compiled:
            policy.compile_sampling()
        compile_s = time.perf_counter() - t_compile
        max_diff = float((a_c - a_u).abs().max())
        for f in fns.values():
            f()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(calls):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    lm = policy.backbone.config
    n_backbone = sum(p.numel() for p in policy.backbone.parameters())
    n_expert = sum(p.numel() for p in policy.expert.parameters())
    return {
        "recipe": recipe,
        "variant": "compile" if compiled else "eager",
        "first_calls_s": round(compile_s, 1),
        "backbone": {"width": lm.hidden_size, "depth": lm.num_layers, "mlp": lm.intermediate_size,
                     "heads": lm.num_heads, "kv_heads": lm.num_kv_heads, "head_dim": lm.head_dim,
                     "parameters": n_backbone},
        "expert": {"width": c.expert_width, "mlp": c.expert_mlp_dim, "parameters": n_expert},
        "vision_parameters": sum(p.numel() for p in policy.vision_tower.parameters()),
        "prefix_tokens": P,
        "chunk": c.chunk,
        "steps": steps,
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "recompute_over_cached": round(med["recompute"] / med["cached"], 2),
        # what the cache saves in arithmetic; the time ratio reaches it only when the chunk is compute-bound
        "gflop": {k: round(v / 1e9, 4) for k, v in flops.items()},
        "flop_ratio": round(flops["recompute"] / flops["cached"], 2),
        "gflops_per_s": {k: round(flops[k] / 1e9 / (med[k] / 1e3), 1) for k in flops},
        "cached_over_parts": round(med["cached"] / (med["prefix"] + steps * med["expert"]), 2),
        "max_abs_diff_cached_vs_recompute": max_diff,
        "ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="pi0-tiny,pi0-small", help="comma-separated π0 recipes")
    p.add_argument("--calls", type=int, default=7, help="timed calls per quantity")
    p.add_argument("--steps", type=int, default=10, help="Euler steps per chunk (π0: 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also measure each recipe after Pi0Policy.compile_sampling() (torch.compile, 10-60 s per model)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = "python benchmarks/bench_pi0_cache.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(args.threads)
    variants = [False, True] if args.compile else [False]
    rows = [
        bench_recipe(r.strip(), args.calls, args.steps, compiled)
        for r in args.recipes.split(",")
        if r.strip()
        for compiled in variants
    ]

    from vlaforge.info import machine_info

    machine = machine_info()
    print(f"command: {command}")
    print(
        f"machine: {machine['cpu']} ({machine['cores']} cores), torch threads {args.threads}; batch 1, fp32"
    )
    print()
    print(
        "| recipe | path | backbone / expert | prefix tokens | H | cached chunk (ms) | recompute chunk (ms) | "
        "recompute / cached | FLOP ratio | cached GFLOP/s | prefix pass (ms) | expert pass (ms) | "
        "cached / (prefix + N·expert) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b, e, m = r["backbone"], r["expert"], r["median_ms"]
        print(
            f"| {r['recipe']} | {r['variant']} | {b['width']}x{b['depth']} ({b['parameters'] / 1e6:.1f}M) / {e['width']} "
            f"({e['parameters'] / 1e6:.1f}M) | {r['prefix_tokens']} | {r['chunk']} | {m['cached']:.1f} | "
            f"{m['recompute']:.1f} | {r['recompute_over_cached']:.2f}x | {r['flop_ratio']:.1f}x | "
            f"{r['gflops_per_s']['cached']:.0f} | {m['prefix']:.1f} | {m['expert']:.2f} | "
            f"{r['cached_over_parts']:.2f} |"
        )
    ok = all(r["max_abs_diff_cached_vs_recompute"] < 1e-4 for r in rows)
    print(f"\ncached and recomputed chunks agree (max |diff| < 1e-4): {'yes' if ok else 'NO'}")
    record = {
        "command": command,
        "machine": machine,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "calls": args.calls,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
