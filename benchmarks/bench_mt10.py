"""MT10 success per action head under one training budget (issue: policy core).

For each head: train `octo-tiny` on the MT10 demonstrations for `--minutes` of wall-clock time,
evaluate on `--episodes` unseen layouts per task (eval split), and record per-task and mean
success with 95 % Wilson intervals plus the training curve. Results are merged into
`benchmarks/results/mt10.json` ({"heads": {head: {...,"mean_success": x}}}) so heads can be run
in separate invocations and still land in one table.

    python benchmarks/bench_mt10.py --data data/mt10 --heads diffusion --minutes 40 --episodes 20
    python benchmarks/bench_mt10.py --data data/mt10 --heads diffusion \
        --instructions benchmarks/instructions_rephrased_mt10.json --eval-only   # language robustness
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


def main() -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/mt10")
    p.add_argument(
        "--recipe",
        default="octo-tiny",
        help="recipe to train; other than octo-tiny (e.g. openvla-tiny, openvla-oft-tiny) the recipe's own "
        "action output is used, --heads is ignored and the entry is keyed by the recipe name",
    )
    p.add_argument("--heads", default="diffusion,flow,binned,l1")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--language", default="words", choices=["words", "minilm"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="model config override for a non-octo recipe, e.g. --set knowledge_insulation=false (repeatable)",
    )
    p.add_argument(
        "--tag", default=None, help="suffix of the run directory and result key (ablations: ki-off)"
    )
    p.add_argument("--save-every", type=int, default=None, help="checkpoint interval (learning curves)")
    p.add_argument("--keep-last", type=int, default=None, help="checkpoints kept (learning curves)")
    p.add_argument("--minutes", type=float, default=60.0, help="training budget per head (wall clock)")
    p.add_argument(
        "--steps",
        type=int,
        default=1_000_000,
        help="step budget per head; whichever of --steps/--minutes ends first stops training "
        "(a step budget keeps heads comparable when runs share the machine)",
    )
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task")
    p.add_argument("--workers", type=int, default=2, help="evaluation processes")
    p.add_argument("--runs", default="runs/mt10", help="run directories go to <runs>-<head>[-<language>]")
    p.add_argument("--instructions", default=None, help="JSON {task: instruction} used at evaluation")
    p.add_argument("--eval-only", action="store_true", help="evaluate existing runs instead of training")
    p.add_argument("--out", default="benchmarks/results/mt10.json")
    args = p.parse_args()

    from vlaforge.envs import resolve_tasks
    from vlaforge.eval.commands import load_instructions
    from vlaforge.eval.rollout import evaluate
    from vlaforge.inference.load import load_policy
    from vlaforge.info import machine_info
    from vlaforge.train.commands import run_training

    tasks = resolve_tasks("mt10")
    out = Path(args.out)
    instructions = load_instructions(args.instructions) if args.instructions else None
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)

    octo = args.recipe == "octo-tiny"
    model_overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: use FIELD=JSON, e.g. knowledge_insulation=false")
        try:
            model_overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            model_overrides[field] = value  # a bare string
    if model_overrides and octo:
        p.error("--set applies to the non-octo recipes (octo-tiny variants are chosen with --heads)")
    for head in args.heads.split(",") if octo else [None]:
        name = head if octo else args.recipe
        suffix = name if args.language == "words" else f"{name}-{args.language}"
        suffix = f"{suffix}-{args.tag}" if args.tag else suffix
        run = Path(f"{args.runs}-{suffix}")
        if not args.eval_only:
            run_training(
                args.recipe,
                args.data,
                run,
                head=head,
                language=args.language if octo else None,
                train_overrides={
                    "minutes": args.minutes,
                    "steps": args.steps,
                    "num_workers": 0,
                    "batch_size": args.batch_size,
                    "save_every": args.save_every,
                    "keep_last": args.keep_last,
                },
                model_overrides=model_overrides or None,
            )
        summary = json.loads((run / "train_summary.json").read_text())
        run_config = json.loads((run / "train_config.json").read_text())
        t0 = time.perf_counter()
        eval_dir = run / ("eval-rephrased" if instructions else "eval")
        report = evaluate(
            functools.partial(load_policy, str(run)),
            tasks,
            episodes=args.episodes,
            workers=args.workers,
            out_dir=eval_dir,
            instructions=instructions,
            videos_per_task=1,
        )
        overall = report.overall()
        entry = {
            "command": command,
            "run": str(run),
            "recipe": args.recipe,
            "head": run_config["policy"].get("head"),
            "train_batch_size": run_config["train"]["batch_size"],
            "language": args.language,
            "model_overrides": model_overrides,
            "instructions": args.instructions or "dataset phrasings",
            "train_minutes": round(summary["wall_s"] / 60, 1),
            "train_steps": summary["steps"],
            "train_samples_per_s": summary["samples_per_s"],
            "data_wait_fraction": summary["data_wait_fraction"],
            "eval_episodes_per_task": args.episodes,
            "eval_minutes": round((time.perf_counter() - t0) / 60, 1),
            "mean_success": report.mean_success,
            "overall": overall,
            "per_task": {
                t.task: {"success": t.rate, "ci95": [t.wilson_lo, t.wilson_hi]} for t in report.tasks
            },
            "latency": report.latency(),
            "curve": summary["curve"][:: max(1, len(summary["curve"]) // 50)],
            "machine": machine_info(),
        }
        key = suffix if not instructions else f"{suffix}-rephrased"
        # Re-read: another invocation (another head) may have written its entry meanwhile.
        results = json.loads(out.read_text()) if out.is_file() else {"heads": {}}
        previous = results["heads"].get(key) or results["heads"].get(suffix) or {}
        # An --eval-only run keeps the command that trained the policy next to its own.
        entry["train_command"] = previous.get("train_command") if args.eval_only else command
        results["heads"][key] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(report.to_markdown())
        print(f"{key}: mean success {report.mean_success:.1%} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
