"""Training throughput of a recipe on CPU: compute (fp32 vs bf16 autocast) and time spent waiting for data.

    .venv/bin/python benchmarks/bench_train.py                                 # compute only (no dataset)
    .venv/bin/python benchmarks/bench_train.py --data PATH                     # + data-wait on a real dataset
    .venv/bin/python benchmarks/bench_train.py --steps 5 --warmup 1 --threads 2   # quick check

Two measurements, each one optimizer step at a time, as `vlaforge.train.trainer.train` does it:
policy.loss(batch) -> backward -> clip_grad_norm_ -> AdamW.step (the trainer's parameter groups and
betas) -> EMA update.

  compute    collated in-memory batches of --batch-size random samples of the Meta-World embodiment
             (2 cameras 128x128, state 4, action 4; history and chunk are the recipe's own, --history
             overrides; see bench_inference.py), made before timing, so this is the model's own speed. fp32 and bf16-autocast steps are
             interleaved on two copies of the same policy, so machine load hits both alike.
  data wait  only with --data: the same step fed by vlaforge.data.Dataset through a DataLoader set up
             like the trainer's (shuffled, --workers worker processes of 1 thread each, persistent).
             Reported: the fraction of step time spent in next(loader), for frames decoded from the
             videos per sample and/or read from Dataset.cache_frames() (the trainer's default). The
             frame cache is written to a temporary directory, never into the dataset.

Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_inference import (
    ACTION_DIM,
    CAMERAS,
    HEADS,
    IMAGE_SIZE,
    PRECISIONS,
    STATE_DIM,
    TASKS,
    build_policy,
    precision_context,
)
from torch.utils.data import DataLoader, RandomSampler

from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.octo.recipes import RECIPES
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.train.ema import EMA
from vlaforge.train.trainer import make_optimizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
LOADING = ("video", "cache")


# ---------------------------------------------------------------------------------- one training step


class Stepper:
    """One optimizer step exactly as the trainer takes it (without LR schedule, logging or checkpoints)."""

    def __init__(self, policy: Policy, *, lr: float, weight_decay: float, grad_clip: float, ema_decay: float):
        self.policy = policy.train()
        self.opt = make_optimizer(policy, lr=lr, weight_decay=weight_decay)  # exactly the trainer's
        self.grad_clip = grad_clip
        self.ema = EMA(policy, ema_decay) if ema_decay > 0 else None

    def step(self, batch: dict[str, Any], precision: str) -> float:
        with precision_context(precision):
            loss, _ = self.policy.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{precision}: non-finite loss {loss.item()}; the benchmark is not meaningful"
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.policy)
        return float(loss.detach())


def make_stepper(policy: Policy, recipe: str, ema: bool) -> Stepper:
    train = get_recipe(recipe).train
    return Stepper(
        policy,
        lr=train.get("lr", 3e-4),
        weight_decay=train.get("weight_decay", 0.1),
        grad_clip=train.get("grad_clip", 1.0),
        ema_decay=train.get("ema_decay", 0.999) if ema else 0.0,
    )


# ------------------------------------------------------------------------------------ compute only


def synthetic_batch(batch_size: int, history: int, chunk: int, rng: np.random.Generator) -> dict[str, Any]:
    """A collated batch with the layout of DataLoader(vlaforge.data.Dataset) output."""
    B, T, H = batch_size, history, chunk
    batch: dict[str, Any] = {
        IMAGE_PREFIX + cam: torch.from_numpy(
            rng.integers(0, 256, (B, T, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        )
        for cam in CAMERAS
    }  # (B, T, h, w, 3) uint8 per camera
    batch[STATE_KEY] = torch.from_numpy(rng.normal(0, 0.3, (B, T, STATE_DIM)).astype(np.float32))  # (B, T, S)
    batch[ACTION_KEY] = torch.from_numpy(
        rng.uniform(-1, 1, (B, H, ACTION_DIM)).astype(np.float32)
    )  # (B, H, A)
    batch[f"{ACTION_KEY}_is_pad"] = torch.zeros(B, H, dtype=torch.bool)  # (B, H)
    batch["task"] = [TASKS[i % len(TASKS)] for i in range(B)]
    return batch


def measure_compute(
    recipe: str,
    head: str,
    *,
    history: int | None,
    batch_size: int,
    steps: int,
    warmup: int,
    ema: bool,
    n_batches: int = 4,
) -> dict[str, Any]:
    """Samples/s of training steps on in-memory batches, fp32 and bf16 autocast interleaved."""
    rng = np.random.default_rng(0)
    steppers = {
        p: make_stepper(build_policy(recipe, head, history=history, seed=0), recipe, ema) for p in PRECISIONS
    }
    cfg = steppers["fp32"].policy.config
    batches = [synthetic_batch(batch_size, cfg.history, cfg.chunk, rng) for _ in range(n_batches)]
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    losses: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for i in range(warmup + steps):
        order = PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            t0 = time.perf_counter()
            loss = steppers[p].step(batches[i % n_batches], p)
            if i >= warmup:
                seconds[p].append(time.perf_counter() - t0)
                losses[p].append(loss)
    out: dict[str, Any] = {}
    for p in PRECISIONS:
        s = seconds[p]
        out[p] = {
            "samples_per_s": round(batch_size * len(s) / sum(s), 1),
            "median_step_ms": round(1000 * statistics.median(s), 1),
            "p90_step_ms": round(1000 * float(np.percentile(s, 90)), 1),
            "mean_loss": round(statistics.fmean(losses[p]), 4),
        }
    out["bf16_speedup"] = round(out["fp32"]["median_step_ms"] / out["bf16"]["median_step_ms"], 2)
    out["params"] = steppers["fp32"].policy.num_parameters()
    out["history"], out["chunk"] = cfg.history, cfg.chunk
    return out


# ------------------------------------------------------------------------------------- data wait


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # as the trainer: loader workers must not compete with the training threads


def _forever(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def measure_data_wait(
    recipe: str,
    head: str,
    data: Path,
    *,
    history: int | None,
    loading: str,
    batch_size: int,
    steps: int,
    warmup: int,
    workers: int,
    precision: str,
    ema: bool,
    cache_root: Path,
) -> dict[str, Any]:
    """Fraction of step time spent waiting in next(loader), after `warmup` steps (worker start, first reads)."""
    from vlaforge.data import Dataset

    torch.manual_seed(0)
    policy = make_policy(recipe, Dataset(data), head=head, history=history)
    dataset = Dataset(data, history=policy.config.history, chunk=policy.config.chunk)
    if len(dataset) < batch_size:
        raise SystemExit(f"--data {data}: {len(dataset)} samples, fewer than one batch of {batch_size}")
    cache_s = None
    if loading == "cache":
        t = time.perf_counter()
        dataset.cache_frames(cache_root / "frames")
        cache_s = round(time.perf_counter() - t, 2)
    stepper = make_stepper(policy, recipe, ema)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)),
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    batches = _forever(loader)
    wait, compute = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        stepper.step(batch, precision)
        t2 = time.perf_counter()
        if i >= warmup:
            wait.append(t1 - t0)
            compute.append(t2 - t1)
    total = sum(wait) + sum(compute)
    return {
        "loading": loading,
        "samples_per_s": round(batch_size * steps / total, 1),
        "compute_samples_per_s": round(batch_size * steps / sum(compute), 1),
        "data_wait_fraction": round(sum(wait) / total, 3),
        "median_wait_ms": round(1000 * statistics.median(wait), 1),
        "median_step_ms": round(1000 * statistics.median(compute), 1),
        "cache_build_s": cache_s,
        "dataset": {
            "path": str(data),
            "frames": len(dataset),
            "episodes": dataset.num_episodes,
            "cameras": dataset.camera_keys,
            "fps": dataset.fps,
        },
    }


# ------------------------------------------------------------------------------------------ report


def print_tables(
    command: str, machine: dict[str, str], args: argparse.Namespace, compute: dict, data: list
) -> None:
    print(f"\ncommand: {command}")
    print(f"machine: {machine['cpu']} ({machine['cores']} cores, torch threads {machine['torch_threads']}), "
          f"torch {machine['torch']}")  # fmt: skip
    print(f"recipe {args.recipe}, head {args.head}, {compute['params'] / 1e6:.2f}M params, "
          f"history {compute['history']}, chunk {compute['chunk']}, batch {args.batch_size}, "
          f"EMA {'on' if not args.no_ema else 'off'}, {args.steps} timed steps after {args.warmup}\n")  # fmt: skip
    print("compute (in-memory batches):\n")
    print("| precision | samples/s | median step ms | p90 step ms | mean loss |")
    print("|---|---:|---:|---:|---:|")
    for p in PRECISIONS:
        c = compute[p]
        print(f"| {p} | {c['samples_per_s']:.1f} | {c['median_step_ms']:.1f} | {c['p90_step_ms']:.1f} | "
              f"{c['mean_loss']:.4f} |")  # fmt: skip
    print(f"\nbf16 autocast vs fp32 step time: {compute['bf16_speedup']:.2f}x")
    if not data:
        print("\ndata wait: skipped (no --data PATH given; pass a LeRobot-format dataset to measure it)")
        return
    print(
        f"\ndata wait ({data[0]['dataset']['path']}, {args.workers} DataLoader workers, {args.data_precision}):\n"
    )
    print(
        "| frames from | samples/s end to end | compute-only samples/s | data wait | median wait ms | median step ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for d in data:
        print(
            f"| {d['loading']} | {d['samples_per_s']:.1f} | {d['compute_samples_per_s']:.1f} | "
            f"{d['data_wait_fraction']:.1%} | {d['median_wait_ms']:.1f} | {d['median_step_ms']:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="octo-tiny", choices=sorted(RECIPES))
    p.add_argument("--head", default="diffusion", choices=HEADS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per measurement")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (allocator, workers, file opens)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads of the training process")
    p.add_argument("--no-ema", action="store_true", help="leave out the EMA update the trainer does per step")
    p.add_argument(
        "--data", type=Path, default=None, help="LeRobot-format dataset for the data-wait measurement"
    )
    p.add_argument(
        "--loading", default="video,cache", help="comma-separated: video (decode per sample), cache"
    )
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (the trainer's default: 1)")
    p.add_argument("--data-precision", default="fp32", choices=PRECISIONS)
    p.add_argument(
        "--history", type=int, default=None, help="observation steps T (default: the recipe's own)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.workers < 0:
        raise SystemExit("--steps and --batch-size must be >= 1, --warmup and --workers >= 0")
    loading = [s.strip() for s in args.loading.split(",") if s.strip()]
    if not loading or any(s not in LOADING for s in loading):
        raise SystemExit(f"--loading: got {args.loading!r}; choose from {list(LOADING)}")
    if args.data is not None and not args.data.exists():
        raise SystemExit(f"--data {args.data}: no such directory")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    )

    from vlaforge.info import machine_info

    machine = machine_info()
    ema = not args.no_ema
    compute = measure_compute(
        args.recipe, args.head, history=args.history, batch_size=args.batch_size, steps=args.steps,
        warmup=args.warmup, ema=ema,
    )  # fmt: skip
    print(f"compute: fp32 {compute['fp32']['samples_per_s']:.1f} samples/s, "
          f"bf16 {compute['bf16']['samples_per_s']:.1f} samples/s", flush=True)  # fmt: skip
    data = []
    if args.data is not None:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            for mode in loading:
                d = measure_data_wait(
                    args.recipe, args.head, args.data, history=args.history, loading=mode, batch_size=args.batch_size,
                    steps=args.steps, warmup=args.warmup, workers=args.workers,
                    precision=args.data_precision, ema=ema, cache_root=Path(tmp),
                )  # fmt: skip
                data.append(d)
                print(
                    f"data ({mode}): {d['samples_per_s']:.1f} samples/s, wait {d['data_wait_fraction']:.1%}",
                    flush=True,
                )

    print_tables(command, machine, args, compute, data)
    record = {
        "command": command,
        "machine": machine,
        "recipe": args.recipe,
        "head": args.head,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "ema": ema,
        "compute": compute,
        "data_wait": data or "skipped: no --data given",
        "data_workers": args.workers if data else None,
        "data_precision": args.data_precision if data else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
