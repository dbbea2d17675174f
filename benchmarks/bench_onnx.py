"""PyTorch eager (fp32) vs onnxruntime latency per action chunk, on exported Octo-layout policies.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_onnx.py
    .venv/bin/python benchmarks/bench_onnx.py --recipes octo-tiny --heads diffusion,flow --runs 50

For every recipe x head: random weights on the Meta-World embodiment (`vlaforge bench`'s: cameras
corner + gripper at 128x128, state 4, action 4), exported with `export_onnx` (which verifies
onnxruntime against PyTorch at batch 1 and 3), then four paths timed end to end at batch 1 on the
same observations (`Policy.predict` vs `OnnxPolicy.predict`: stacking, validation, tokenization,
noise, the network, unnormalization):

    torch 1 / torch 2   Policy.predict under torch.inference_mode with torch.set_num_threads(1 / 2)
    ort 1 / ort 2       OnnxPolicy.predict on a session with intra_op_num_threads 1 / 2

Paths run once per round in a rotating order, so load from other processes hits them alike; the
load average is recorded (on a busy machine the 2-thread paths stall whenever one of their threads is
descheduled, so run it on an otherwise idle machine). Process CPU time is not a usable substitute here:
OpenMP and onnxruntime worker threads spin after a call and charge the next path. Each path's chunk is
compared with torch's for the same torch generator (max |diff| in robot units).
Writes benchmarks/results/onnx.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.bench.embodiment import build_recipe_policy, sampler_steps
from vlaforge.export.onnx import OnnxPolicy
from vlaforge.export.onnx_export import export_onnx
from vlaforge.inference.load import example_observations

RESULTS = Path(__file__).resolve().parent / "results" / "onnx.json"
PATHS = ("torch 1", "torch 2", "ort 1", "ort 2")


def bench_one(recipe: str, head: str, runs: int, warmup: int, workdir: Path) -> dict[str, Any]:
    policy = build_recipe_policy(recipe, head)
    sampler, steps = sampler_steps(policy)
    out = workdir / f"{recipe}-{head}"
    print(f"{recipe}/{head}: exporting ...", flush=True)
    export = export_onnx(policy, out, latency_runs=0, log=None)
    runners = {n: OnnxPolicy(out, threads=n) for n in (1, 2)}
    obs = example_observations(policy)

    def torch_call(threads: int) -> Any:
        torch.set_num_threads(threads)
        return policy.predict(obs, generator=torch.Generator().manual_seed(0))

    calls = {
        "torch 1": lambda: torch_call(1),
        "torch 2": lambda: torch_call(2),
        "ort 1": lambda: runners[1].predict(obs, generator=torch.Generator().manual_seed(0)),
        "ort 2": lambda: runners[2].predict(obs, generator=torch.Generator().manual_seed(0)),
    }
    reference = calls["torch 1"]().actions
    diffs = {name: float(np.abs(call().actions - reference).max()) for name, call in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    order = list(PATHS)
    for i in range(warmup + runs):
        order = order[1:] + order[:1]  # rotate: no path always runs right after another
        for name in order:
            t0 = time.perf_counter()
            calls[name]()
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    torch.set_num_threads(1)
    median = {name: round(statistics.median(t), 3) for name, t in times.items()}
    p90 = {name: round(float(np.percentile(t, 90)), 3) for name, t in times.items()}
    row = {
        "recipe": recipe,
        "head": head,
        "sampler": sampler,
        "steps": steps,
        "parameters": policy.num_parameters(),
        "onnx_mb": round(export.model_bytes / 1e6, 2),
        "export_s": export.export_s,
        "verify_max_abs_diff": export.max_abs_diff,
        "max_abs_diff": diffs,
        "median_ms": median,
        "p90_ms": p90,
        "min_ms": {name: round(min(t), 3) for name, t in times.items()},
        "speedup_1_thread": round(median["torch 1"] / median["ort 1"], 2),
        "speedup_2_threads": round(median["torch 2"] / median["ort 2"], 2),
    }
    print(f"  median ms {json.dumps(median)}", flush=True)
    return row


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | head (steps) | params | torch 1 thr ms (p90) | ort 1 thr ms (p90) | speed-up | "
        "torch 2 thr ms (p90) | ort 2 thr ms (p90) | speed-up | max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:

        def cell(path: str, r: dict[str, Any] = r) -> str:
            return f"{r['median_ms'][path]:.1f} ({r['p90_ms'][path]:.1f})"

        lines.append(
            f"| {r['recipe']} | {r['head']} ({r['sampler']} {r['steps']}) | {r['parameters'] / 1e6:.1f}M | "
            f"{cell('torch 1')} | {cell('ort 1')} | {r['speedup_1_thread']:.2f}x | {cell('torch 2')} | "
            f"{cell('ort 2')} | {r['speedup_2_threads']:.2f}x | {max(r['max_abs_diff'].values()):.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="octo-tiny,octo-small", help="comma-separated Octo recipes")
    p.add_argument("--heads", default="diffusion", help="comma-separated heads (diffusion, flow, binned, l1)")
    p.add_argument("--runs", type=int, default=20, help="timed rounds (every path once per round)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = "python benchmarks/bench_onnx.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    load_start = list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlaforge-onnx-") as tmp:
        for recipe in (r.strip() for r in args.recipes.split(",") if r.strip()):
            for head in (h.strip() for h in args.heads.split(",") if h.strip()):
                rows.append(bench_one(recipe, head, args.runs, args.warmup, Path(tmp)))

    import onnxruntime

    from vlaforge.info import machine_info

    machine = machine_info()
    table = render(rows)
    print(f"\ncommand: {command}")
    print(
        f"machine: {machine['cpu']} ({machine['cores']} cores), onnxruntime {onnxruntime.__version__}; batch 1, fp32"
    )
    print(f"load average start {load_start}, end {list(os.getloadavg())}\n")
    print(table)
    ok = all(max(r["max_abs_diff"].values()) <= 1e-4 for r in rows)
    print(f"\nonnxruntime and torch chunks agree (max |diff| <= 1e-4): {'yes' if ok else 'NO'}")
    record = {
        "command": command,
        "machine": machine,
        "onnxruntime": onnxruntime.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
        "runs": args.runs,
        "warmup": args.warmup,
        "results": rows,
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
