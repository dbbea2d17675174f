"""`vlaforge quickstart` (what `make demo` runs): record -> train -> evaluate, end to end.

1. records scripted-expert demonstrations of a few Meta-World tasks (LeRobot v3.0 dataset),
2. trains `octo-tiny` on pixels (two 128x128 cameras) + state + instruction,
3. evaluates it on object/goal layouts that were never recorded, and prints the success table
   with 95 % Wilson intervals, plus where the plots and rollout videos are.

Sized to finish in well under 20 minutes on a 2-core CPU; every stage can be scaled up by flags.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_TASKS = "drawer-close-v3,button-press-topdown-v3,window-close-v3"


def summary(run: Path, tasks: list[str], stage_times: dict[str, float], command: str) -> dict:
    """What `quickstart.json` holds: the command, the machine, stage times, training (steps, samples/s,
    final loss, parameters) and evaluation (per task and overall with Wilson intervals, latency), read
    from the run's own `train_summary.json` and `eval/eval.json`."""
    from vlaforge.info import machine_info

    train = json.loads((run / "train_summary.json").read_text())
    ev = json.loads((run / "eval" / "eval.json").read_text())
    return {
        "command": command,
        "machine": machine_info(),
        "load_1min_at_end": os.getloadavg()[0],
        "tasks": tasks,
        "mean_success": ev["overall"]["mean_success"],
        **stage_times,
        "train": {k: train[k] for k in ("steps", "samples_per_s", "final_loss", "parameters", "wall_s")},
        "eval": {"overall": ev["overall"], "tasks": ev["tasks"], "latency": ev["latency"]},
    }


def _run(args: argparse.Namespace) -> int:
    for flag, value in (("--workers", args.workers), ("--episodes-per-task", args.episodes_per_task),
                        ("--eval-episodes", args.eval_episodes), ("--steps", args.steps)):  # fmt: skip
        if value < 1:
            print(f"vlaforge quickstart: {flag} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if not args.minutes > 0:
        print(f"vlaforge quickstart: --minutes must be > 0, got {args.minutes:g}", file=sys.stderr)
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vlaforge.data import Dataset
    from vlaforge.envs import resolve_tasks
    from vlaforge.envs.record import record
    from vlaforge.eval.rollout import evaluate
    from vlaforge.train.commands import run_training

    t0 = time.perf_counter()
    tasks = resolve_tasks(args.tasks)
    data = Path(args.data)
    run = Path(args.out)
    stage_times: dict[str, float] = {}

    print(
        f"[1/3] recording {args.episodes_per_task} expert demonstrations for each of {len(tasks)} tasks -> {data}"
    )
    t = time.perf_counter()
    if (data / "meta" / "info.json").is_file() and not args.rerecord:
        print(f"      {data} already exists; reusing it (pass --rerecord to record again)")
    else:
        record(tasks, args.episodes_per_task, data, workers=args.workers, seed=args.seed)
    stage_times["record_s"] = time.perf_counter() - t
    ds = Dataset(data)
    print(f"      {ds.num_episodes} episodes, {len(ds)} frames")

    print(f"[2/3] training octo-tiny ({args.head} head) for up to {args.minutes:g} minutes -> {run}")
    t = time.perf_counter()
    _, res = run_training(
        "octo-tiny",
        data,
        run,
        head=args.head,
        train_overrides={"minutes": args.minutes, "steps": args.steps, "seed": args.seed, "num_workers": 0},
    )
    stage_times["train_s"] = time.perf_counter() - t
    print(f"      {res.steps} steps, {res.samples_per_s:.0f} samples/s, final loss {res.final_loss:.4f}")

    print(f"[3/3] evaluating on {args.eval_episodes} unseen layouts per task")
    t = time.perf_counter()
    from vlaforge.inference.load import load_policy

    report = evaluate(
        functools.partial(load_policy, str(run)),  # picklable: each eval worker loads its own copy
        tasks,
        episodes=args.eval_episodes,
        out_dir=run / "eval",
        videos_per_task=1,
        workers=args.workers,
    )
    stage_times["eval_s"] = time.perf_counter() - t
    stage_times["total_s"] = time.perf_counter() - t0
    command = (
        f"vlaforge quickstart --tasks {args.tasks} --episodes-per-task {args.episodes_per_task} "
        f"--minutes {args.minutes:g} --steps {args.steps} --head {args.head} --eval-episodes {args.eval_episodes} "
        f"--workers {args.workers} --seed {args.seed} --data {args.data} --out {args.out}"
    )
    (run / "quickstart.json").write_text(
        json.dumps(summary(run, tasks, stage_times, command), indent=2) + "\n"
    )
    print()
    print(report.to_markdown())
    print()
    print(
        f"total time {stage_times['total_s'] / 60:.1f} min "
        f"(record {stage_times['record_s'] / 60:.1f}, train {stage_times['train_s'] / 60:.1f}, "
        f"eval {stage_times['eval_s'] / 60:.1f})"
    )
    print(f"results: {run / 'eval' / 'eval.md'}   plot: {run / 'eval' / 'success.png'}")
    print(f"videos:  {run / 'eval' / 'videos'}   training curve: {run / 'loss.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart", help="record -> train octo-tiny -> evaluate, end to end (what `make demo` runs)"
    )
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="task names or a set (mt10, mt50)")
    p.add_argument("--episodes-per-task", type=int, default=20)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--head", default="diffusion", choices=["diffusion", "flow", "binned", "l1", "mse"])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="processes for recording and evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="data/quickstart")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--rerecord", action="store_true")
    p.set_defaults(func=_run)
