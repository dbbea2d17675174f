"""Knowledge insulation at our scale: MT10 success of `pi05-tiny` along training, insulation on vs off.

The π0.5 + KI paper (arXiv 2505.23705) claims that insulating the backbone from the action expert's
gradient (the expert reads stop-gradient backbone keys/values; the backbone learns from the FAST
tokens only) trains faster to a given success. This script measures the claim on MT10: two runs of
`pi05-tiny` with the same data, seed, batch and step schedule that differ only in
`knowledge_insulation`, checkpointed along the way, each checkpoint evaluated on the same seeds.

    # the two training runs (the insulated one is the MT10-table run; --save-every gives the curve)
    python benchmarks/bench_mt10.py --recipe pi05-tiny --data data/mt10 --steps 5772 --batch-size 64 \\
        --minutes 400 --episodes 20 --workers 1 --runs runs/mt10 --save-every 962 --keep-last 10
    python benchmarks/bench_mt10.py --recipe pi05-tiny --data data/mt10 --steps 5772 --batch-size 64 \\
        --minutes 400 --episodes 20 --workers 1 --runs runs/mt10 --save-every 962 --keep-last 10 \\
        --set knowledge_insulation=false --tag ki-off
    # the curve: checkpoints evaluated on --episodes seeds per task, then the report and plot
    python benchmarks/bench_ki.py --steps 962,1924,2886 --episodes 5

A run that was stopped early (the KI-off run may be, to save compute) contributes the checkpoints it
has; the schedule (cosine over --steps 5772) is the same in both because the runs share the config.
"steps to X %" is the first evaluated step whose success reaches X % (None if none does), reported
for each threshold in --thresholds. Results: benchmarks/results/ki.json and ki.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def checkpoint_dir(run: Path, step: int) -> Path:
    """The policy directory of `run` at `step` (the final policy when step is the last one)."""
    ckpt = run / "checkpoints" / f"{step:08d}" / "policy"
    if ckpt.is_dir():
        return ckpt
    summary = run / "train_summary.json"
    if (
        summary.is_file()
        and json.loads(summary.read_text()).get("steps") == step
        and (run / "policy").is_dir()
    ):
        return run / "policy"
    have = sorted(p.name for p in (run / "checkpoints").glob("*")) if (run / "checkpoints").is_dir() else []
    raise FileNotFoundError(f"{run}: no checkpoint at step {step} (have {have or 'none'})")


def evaluate_checkpoint(policy_dir: Path, tasks: list[str], episodes: int, out_dir: Path) -> dict[str, Any]:
    from vlaforge.eval.rollout import evaluate
    from vlaforge.inference.load import load_policy

    t0 = time.perf_counter()
    report = evaluate(
        functools.partial(load_policy, str(policy_dir)),
        tasks,
        episodes=episodes,
        workers=1,
        out_dir=out_dir,
        videos_per_task=0,
        progress=True,
    )
    overall = report.overall()
    return {
        "policy": str(policy_dir),
        "episodes": overall["episodes"],
        "success": report.mean_success,
        "overall": overall,
        "per_task": {t.task: t.rate for t in report.tasks},
        "eval_minutes": round((time.perf_counter() - t0) / 60, 1),
    }


def loss_curve(run: Path) -> list[dict[str, float]]:
    """The training curve: train_summary.json, or for a run stopped early its last checkpoint's state."""
    summary = run / "train_summary.json"
    if summary.is_file():
        return json.loads(summary.read_text()).get("curve", [])
    ckpts = sorted((run / "checkpoints").glob("*/trainer_state.pt"))
    if not ckpts:
        return []
    import torch

    return torch.load(ckpts[-1], map_location="cpu", weights_only=False).get("curve", [])


def steps_to(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """First step whose success reaches `threshold` (curve sorted by step)."""
    return next((step for step, success in curve if success >= threshold), None)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, r in results["runs"].items():
        pts = sorted((int(s), e) for s, e in r["checkpoints"].items())
        xs = [s for s, _ in pts]
        ys = [100 * e["success"] for _, e in pts]
        lo = [100 * e["overall"]["wilson_lo"] for _, e in pts]
        hi = [100 * e["overall"]["wilson_hi"] for _, e in pts]
        line = ax.plot(xs, ys, marker="o", label=label)[0]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        curve = r.get("loss_curve") or []
        if curve:
            ax2.plot(
                [c["step"] for c in curve], [c["loss"] for c in curve], color=line.get_color(), label=label
            )
    ax.set_xlabel("training step (batch 64)")
    ax.set_ylabel("MT10 success (%)")
    ax.set_title(f"pi05-tiny: knowledge insulation on vs off ({results['episodes_per_task']} eps/task)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax2.set_xlabel("training step")
    ax2.set_ylabel("total training loss (FAST CE + 10 · flow MSE)")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--on", default="runs/mt10-pi05-tiny", help="run with knowledge insulation")
    p.add_argument("--off", default="runs/mt10-pi05-tiny-ki-off", help="run without it")
    p.add_argument("--steps", default="962,1924,2886", help="checkpoint steps to evaluate")
    p.add_argument("--episodes", type=int, default=5, help="evaluation episodes per task and checkpoint")
    p.add_argument("--thresholds", default="0.3,0.5,0.7", help="success levels for 'steps to X'")
    p.add_argument("--out", type=Path, default=RESULTS / "ki.json")
    args = p.parse_args(argv)

    from vlaforge.envs import resolve_tasks
    from vlaforge.info import machine_info

    tasks = resolve_tasks("mt10")
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_ki.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "episodes_per_task": args.episodes,
        "tasks": tasks,
        "runs": {},
        "machine": machine_info(),
    }
    for label, run in (("insulated", Path(args.on)), ("not insulated", Path(args.off))):
        config = json.loads((run / "train_config.json").read_text())
        ki = config["policy"].get("knowledge_insulation")
        if ki != (label == "insulated"):
            raise SystemExit(
                f"{run}: knowledge_insulation is {ki}, expected {label == 'insulated'} for '{label}'"
            )
        old = previous.get("runs", {}).get(label, {}).get("checkpoints", {})
        entry: dict[str, Any] = {"run": str(run), "knowledge_insulation": ki, "checkpoints": {}}
        for step in steps:
            try:
                policy_dir = checkpoint_dir(run, step)
            except FileNotFoundError as e:
                print(f"skipping: {e}")
                continue
            cached = old.get(str(step))
            if (
                cached
                and cached.get("policy") == str(policy_dir)
                and cached.get("episodes_per_task") == args.episodes
            ):
                entry["checkpoints"][str(step)] = cached  # evaluated by an earlier invocation
                continue
            print(f"{label}: step {step} ({policy_dir})")
            res = evaluate_checkpoint(policy_dir, tasks, args.episodes, run / f"eval-ki-{step}")
            res["episodes_per_task"] = args.episodes
            entry["checkpoints"][str(step)] = res
            results["runs"][label] = entry
            # partial results survive an interruption (with the other run's earlier entries)
            partial = {**results, "runs": {**previous.get("runs", {}), **results["runs"]}}
            args.out.write_text(json.dumps(partial, indent=2))
        entry["loss_curve"] = [c for c in loss_curve(run) if "loss" in c][::10]
        curve = sorted((int(s), e["success"]) for s, e in entry["checkpoints"].items())
        entry["steps_to"] = {f"{t:.0%}": steps_to(curve, t) for t in thresholds}
        results["runs"][label] = entry
    args.out.write_text(json.dumps(results, indent=2))
    plot(results, args.out.with_suffix(".png"))

    print(f"\n| checkpoint step | {' | '.join(results['runs'])} |")
    print("|---:|" + "---:|" * len(results["runs"]))
    for step in steps:
        cells = []
        for r in results["runs"].values():
            e = r["checkpoints"].get(str(step))
            cells.append(
                f"{e['success']:.1%} ({e['overall']['wilson_lo']:.0%}-{e['overall']['wilson_hi']:.0%})"
                if e
                else "-"
            )
        print(f"| {step} | {' | '.join(cells)} |")
    for label, r in results["runs"].items():
        print(f"{label}: steps to " + ", ".join(f"{k}: {v}" for k, v in r["steps_to"].items()))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
