"""Peak training memory on CPU: gradient checkpointing on vs off (and fp32 vs bf16 autocast).

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_memory.py                 # octo-tiny + octo-small
    .venv/bin/python benchmarks/bench_memory.py --recipes octo-tiny --precisions fp32 --steps 2  # quick check

Every configuration (recipe x precision x checkpointing) runs in a FRESH subprocess: peak RSS is
a process-wide high-water mark and glibc keeps freed heap pages, so a second configuration in the
same process would inherit the first one's peak and heap. Each child builds the random-weight
policy for the Meta-World embodiment (two 128x128 cameras, the recipe's history and chunk, its
default action head, image augmentation on), makes the batches, then takes training steps exactly
as the trainer does (`bench_train.Stepper`: loss -> backward -> clip -> AdamW -> EMA), with the same
seed per step in every child, so the losses of the two checkpointing modes can be compared.

Two measurements, because they answer different questions:

  peak tensors  (the headline) exact bytes of torch tensors alive at once during one training step,
                above those alive when it starts (weights, EMA copy, AdamW state, batches): saved
                activations, gradients and temporaries. From the CPU memory events of
                `torch.profiler` (profile_memory=True): the running sum of allocations (+) and frees
                (-), maximum over the step. This is what gradient checkpointing acts on, free of
                allocator effects, and reproducible to the byte. The profiled step runs last, so the
                profiler's own memory does not enter the RSS figures.
  peak RSS      what the OS (and the OOM killer) sees: `ru_maxrss`, the process's high-water mark over
                its whole life (the first step also allocates the AdamW state, the same in both
                modes), in total and above the RSS right after model, optimizer and batches were
                built. It includes what glibc's allocator keeps after frees (fragmentation, its raised
                mmap threshold), which depends on the order of allocations; checkpointing's recompute
                interleaves them differently, so the RSS saving is smaller and noisier than the
                tensor saving.

Also reported: median step time of the measured steps (checkpointing recomputes each transformer
block's forward in backward) and the per-step losses; the losses with and without checkpointing
must agree to float tolerance (same forward, gradients equal to rounding; see
tests/train/test_precision_memory.py).

Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
RESULT_PREFIX = "BENCH_MEMORY_RESULT "
MIB = 1024 * 1024
# Loss agreement required between checkpointing on and off (relative): the forward passes are the same
# computation; only the gradients' rounding differs, which reaches later steps' losses through AdamW.
LOSS_RTOL = {"fp32": 1e-4, "bf16": 2e-2}


# ---------------------------------------------------------------------------------------- child side


def _proc_status_kib(field: str) -> int:
    """VmRSS (resident memory now) of this process in KiB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} line")
    return int(match.group(1))


def _peak_tensor_bytes(step) -> int:
    """Peak of live CPU tensor bytes during `step()` above those alive when it starts (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()  # > 0 allocation, < 0 free
        peak = max(peak, live)
    return peak


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, measured in this (fresh) process."""
    import numpy as np
    import torch
    from bench_inference import build_policy
    from bench_train import make_stepper, synthetic_batch

    from vlaforge.policies.octo.config import PolicyConfig
    from vlaforge.policies.recipes import get_recipe

    torch.set_num_threads(spec["threads"])
    recipe, precision, ckpt = spec["recipe"], spec["precision"], spec["grad_checkpointing"]
    head = get_recipe(recipe).model.get("head", PolicyConfig.head)  # the recipe's default action head
    policy = build_policy(recipe, head, seed=0)
    stepper = make_stepper(policy, recipe, ema=True)  # train mode, the trainer's AdamW groups and EMA
    policy.set_gradient_checkpointing(ckpt)
    cfg = policy.config
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(spec["batch_size"], cfg.history, cfg.chunk, rng) for _ in range(2)]
    rss_setup_kib = _proc_status_kib("VmRSS")  # model, optimizer (no state yet), EMA copy, batches

    losses, seconds = [], []

    def step(i: int) -> None:
        torch.manual_seed(1000 + i)  # diffusion noise and augmentation: the same in every child
        t0 = time.perf_counter()
        losses.append(stepper.step(batches[i % len(batches)], precision))
        seconds.append(time.perf_counter() - t0)

    for i in range(1 + spec["steps"]):  # step 0 is a warm-up; it creates the AdamW state (2 x 4 bytes/weight)
        step(i)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peak_tensor_mib = _peak_tensor_bytes(lambda: step(1 + spec["steps"])) / MIB

    n_params = policy.num_parameters()
    return {
        **spec,
        "head": head,
        "params": n_params,
        "params_mib": round(4 * n_params / MIB, 1),
        "rss_after_setup_mib": round(rss_setup_kib / 1024, 1),
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
        "peak_rss_above_setup_mib": round((peak_rss_kib - rss_setup_kib) / 1024, 1),
        "peak_tensor_mib": round(peak_tensor_mib, 1),
        "median_step_s": round(statistics.median(seconds[1 : 1 + spec["steps"]]), 3),
        "losses": losses,
    }


# --------------------------------------------------------------------------------------- parent side


def measure(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and parse its result line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {spec} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe x precision: memory saved by checkpointing, time cost, and loss agreement."""
    out = []
    keyed = {(r["recipe"], r["precision"], r["grad_checkpointing"]): r for r in rows}
    for (recipe, precision, ckpt), off in keyed.items():
        on = keyed.get((recipe, precision, True))
        if ckpt or on is None:
            continue
        diffs = [abs(a - b) for a, b in zip(off["losses"], on["losses"])]
        rel = max(d / max(abs(a), 1e-12) for d, a in zip(diffs, off["losses"]))
        out.append(
            {
                "recipe": recipe,
                "precision": precision,
                "peak_rss_saved_mib": round(off["peak_rss_mib"] - on["peak_rss_mib"], 1),
                "peak_tensor_saved_mib": round(off["peak_tensor_mib"] - on["peak_tensor_mib"], 1),
                "peak_tensor_ratio": round(on["peak_tensor_mib"] / off["peak_tensor_mib"], 3),
                "step_time_ratio": round(on["median_step_s"] / off["median_step_s"], 2),
                "max_abs_loss_diff": max(diffs),
                "max_rel_loss_diff": rel,
                "loss_rtol": LOSS_RTOL[precision],
                "losses_agree": rel <= LOSS_RTOL[precision],
            }
        )
    return out


def print_tables(command: str, machine: dict[str, str], rows: list[dict], pairs: list[dict]) -> None:
    print(f"\ncommand: {command}")
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), torch {machine['torch']}\n")
    print(
        "| recipe | params | precision | grad ckpt | peak live tensors | peak RSS | RSS above setup | step |"
    )
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['params'] / 1e6:.1f}M | {r['precision']} | "
            f"{'on' if r['grad_checkpointing'] else 'off'} | {r['peak_tensor_mib']:,.0f} MiB | "
            f"{r['peak_rss_mib']:,.0f} MiB | {r['peak_rss_above_setup_mib']:,.0f} MiB | {r['median_step_s']:.2f} s |"
        )
    print(
        "\n| recipe | precision | tensors saved | tensors on/off | RSS saved | time on/off | max rel. loss diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for c in pairs:
        print(
            f"| {c['recipe']} | {c['precision']} | {c['peak_tensor_saved_mib']:,.0f} MiB | "
            f"{c['peak_tensor_ratio']:.2f} | {c['peak_rss_saved_mib']:,.0f} MiB | {c['step_time_ratio']:.2f}x | "
            f"{c['max_rel_loss_diff']:.1e}{'' if c['losses_agree'] else ' (ABOVE TOLERANCE)'} |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="octo-tiny,octo-small", help="comma-separated recipe names")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up (+1 profiled)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    p.add_argument("--timeout", type=float, default=900, help="seconds per child before giving up")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one configuration as JSON
    args = p.parse_args(argv)
    if args.child is not None:
        print(RESULT_PREFIX + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0

    from bench_inference import command_line, write_record

    from vlaforge.policies.octo.recipes import RECIPES

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    unknown = [r for r in recipes if r not in RECIPES] + [x for x in precisions if x not in LOSS_RTOL]
    if unknown or not recipes or not precisions:
        raise SystemExit(f"unknown or missing --recipes/--precisions {unknown}; recipes: {sorted(RECIPES)}")
    if args.steps < 1 or args.batch_size < 1:
        raise SystemExit("--steps and --batch-size must be >= 1")
    command = command_line(argv)
    from vlaforge.info import machine_info

    machine = {**machine_info(), "torch_threads": str(args.threads)}
    rows = []
    for recipe in recipes:
        for precision in precisions:
            for ckpt in (False, True):
                spec = {
                    "recipe": recipe,
                    "precision": precision,
                    "grad_checkpointing": ckpt,
                    "batch_size": args.batch_size,
                    "steps": args.steps,
                    "threads": args.threads,
                }
                t0 = time.perf_counter()
                row = measure(spec, args.timeout)
                rows.append(row)
                print(
                    f"{recipe} {precision} ckpt={'on ' if ckpt else 'off'}: tensors {row['peak_tensor_mib']:.0f} MiB, "
                    f"peak RSS {row['peak_rss_mib']:.0f} MiB, step {row['median_step_s']:.2f} s "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    pairs = compare(rows)
    print_tables(command, machine, rows, pairs)
    record = {
        "command": command,
        "machine": machine,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "runs": rows,
        "checkpointing": pairs,
    }
    write_record(record, args.out)
    return 0 if all(c["losses_agree"] for c in pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
