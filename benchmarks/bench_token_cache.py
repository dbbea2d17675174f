"""Training step of a recipe on a frozen pretrained Lite0 tower: tokens from the per-frame cache vs the live tower.

    .venv/bin/python benchmarks/bench_token_cache.py --recipe pi0-smol --data data/quickstart
    .venv/bin/python benchmarks/bench_token_cache.py --recipe octo-lite0 --data data/quickstart --batch-size 64

Two copies of the same policy (same seed, the packaged weights) take the trainer's optimizer step on
the same batches of the dataset, interleaved step by step so that machine load hits both alike: one
with `vlaforge.train.feature_cache.attach_feature_caches` (what `vlaforge train` does by default), one
running Lite0 on every frame of every sample (`--no-feature-cache`). Batches are read before timing, so
the step is the model's own time. Also reported: the one-off cost of building the cache (or that an
existing one was reused), its size, and the first step's loss both ways (equal up to float rounding).
octo-lite0 runs without augmentation (with it nothing is cached: every crop differs).

Writes benchmarks/results/token_cache_<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_train import make_stepper
from torch.utils.data import DataLoader, RandomSampler

from vlaforge.data import Dataset
from vlaforge.info import machine_info
from vlaforge.policies.recipes import make_policy
from vlaforge.train.feature_cache import attach_feature_caches, detach_feature_caches

RESULTS = Path(__file__).resolve().parent / "results"
LITE0_RECIPES = ("pi0-smol", "pi05-smol", "openvla-smol", "octo-lite0")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="pi0-smol", choices=LITE0_RECIPES)
    p.add_argument("--data", type=Path, default=Path("data/quickstart"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--note", default="", help="machine load etc., stored with the result")
    args = p.parse_args(argv)
    if not (args.data / "meta" / "info.json").is_file():
        raise SystemExit(f"--data {args.data}: not a LeRobot-format dataset (no meta/info.json)")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + shlex.join(["benchmarks/bench_token_cache.py", *(argv or sys.argv[1:])])

    extra = {"augment": False} if args.recipe == "octo-lite0" else {}
    probe = Dataset(args.data)
    policies = {}
    for variant in ("cached", "live"):
        torch.manual_seed(0)
        policies[variant] = make_policy(args.recipe, probe, **extra)
    cfg = policies["cached"].config
    dataset = Dataset(args.data, history=cfg.history, chunk=cfg.chunk)
    dataset.cache_frames(progress=True)

    t0 = time.perf_counter()
    summary = attach_feature_caches(policies["cached"], dataset, progress=True)
    build_s = time.perf_counter() - t0
    if summary is None or "not cached" in summary:
        raise SystemExit(f"{args.recipe}: nothing to cache ({summary})")
    print(summary, f"({build_s:.1f} s)")

    loader = DataLoader(dataset, batch_size=args.batch_size, drop_last=True,
                        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)))  # fmt: skip
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.warmup + args.steps:
            break
    steppers = {v: make_stepper(pol, args.recipe, ema=True) for v, pol in policies.items()}
    seconds: dict[str, list[float]] = {v: [] for v in steppers}
    first_loss: dict[str, float] = {}
    for i, batch in enumerate(batches):
        for v in ("cached", "live") if i % 2 == 0 else ("live", "cached"):
            torch.manual_seed(i)  # the same noise and flow times for both: losses comparable step by step
            t = time.perf_counter()
            loss = steppers[v].step(batch, "fp32")
            if i >= args.warmup:
                seconds[v].append(time.perf_counter() - t)
            first_loss.setdefault(v, loss)
    counts = detach_feature_caches(policies["cached"])

    med = {v: statistics.median(s) for v, s in seconds.items()}
    result = {
        "command": command,
        "machine": machine_info(),
        "note": args.note,
        "recipe": args.recipe,
        "dataset": {"path": str(args.data), "frames": len(dataset), "cameras": dataset.camera_keys},
        "batch_size": args.batch_size,
        "steps": args.steps,
        "cache": summary,
        "cache_build_or_load_s": round(build_s, 1),
        "lookups": counts,
        "median_step_ms": {v: round(1000 * m, 1) for v, m in med.items()},
        "range_step_ms": {v: [round(1000 * min(s), 1), round(1000 * max(s), 1)] for v, s in seconds.items()},
        "speedup": round(med["live"] / med["cached"], 2),
        "first_step_loss": first_loss,
    }
    print(f"\ncommand: {command}")
    print(f"{args.recipe}, batch {args.batch_size}, {args.steps} steps each after {args.warmup}, "
          f"{result['machine']['cpu']}, torch threads {torch.get_num_threads()}{', ' + args.note if args.note else ''}\n")  # fmt: skip
    print("| Lite0 tokens | median step ms | range ms | first-step loss |")
    print("|---|---:|---:|---:|")
    for v in ("live", "cached"):
        r = result["range_step_ms"][v]
        print(f"| {v} | {result['median_step_ms'][v]} | {r[0]}–{r[1]} | {first_loss[v]:.6f} |")
    print(f"\nspeedup {result['speedup']}x; lookups {counts}; cache {build_s:.1f} s to build or load")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"token_cache_{args.recipe}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
