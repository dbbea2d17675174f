"""Fine-tuning study (issue: training system): does pretraining on other tasks pay off with 10 demos?

The workflow users run: pretrain `octo-tiny` on 7 MT10 tasks, then adapt it to each of 3 held-out
tasks from only 10 demonstrations, with

* ``full``    -- every weight trainable (``--init-from``),
* ``head``    -- only the action head trainable (``--init-from --train-only 'head.*'``),
* ``lora``    -- peft LoRA adapters on the transformer's linear layers + the head
                 (``--init-from --lora-rank R``), merged into a plain checkpoint at the end,
* ``scratch`` -- the same recipe trained from random weights on the same 10 demonstrations,

all with the same step budget, then evaluated on unseen layouts of the held-out task (eval split).
Results merge into ``benchmarks/results/finetune.json`` (one invocation may run a subset of
tasks/methods, so two processes can share the machine) and ``--report`` writes
``benchmarks/finetune.md`` with a table and a chart.

    vlaforge record --tasks reach,pick-place,drawer-open,drawer-close,button-press-topdown,\\
        peg-insert-side,window-open --episodes-per-task 50 --out data/ft/pretrain7
    for t in push door-open window-close; do
        vlaforge record --tasks $t --episodes-per-task 10 --out data/ft/$t-10; done
    python benchmarks/bench_finetune.py --stage pretrain
    python benchmarks/bench_finetune.py --stage finetune --methods full,scratch &
    python benchmarks/bench_finetune.py --stage finetune --methods head,lora
    python benchmarks/bench_finetune.py --report
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

METHODS = ("full", "head", "lora", "scratch")
HELD_OUT = ("push", "door-open", "window-close")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["pretrain", "finetune", "all"], default=None)
    p.add_argument("--report", action="store_true", help="write benchmarks/finetune.md from the results")
    p.add_argument("--pretrain-data", default="data/ft/pretrain7")
    p.add_argument("--heldout-data", default="data/ft/{task}-10", help="pattern with {task}")
    p.add_argument("--tasks", default=",".join(HELD_OUT), help="held-out tasks to fine-tune on")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--head", default="flow", help="action head of the recipe (the best of the MT10 table)")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--finetune-steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate of full fine-tuning and scratch")
    p.add_argument(
        "--adapter-lr",
        type=float,
        default=1e-3,
        help="learning rate of head-only and LoRA (few trainable weights tolerate a larger step)",
    )
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (unseen layouts) per task")
    p.add_argument("--runs", default="runs/ft")
    p.add_argument("--out", default="benchmarks/results/finetune.json")
    p.add_argument("--markdown", default="benchmarks/finetune.md")
    args = p.parse_args()
    if args.stage is None and not args.report:
        p.error("give --stage pretrain|finetune|all and/or --report")
    bad = set(args.methods.split(",")) - set(METHODS)
    if bad:
        p.error(f"unknown method(s) {sorted(bad)}; choose from {METHODS}")
    return args


@contextmanager
def _locked(path: Path):
    """Serialise read-modify-write of the results file between concurrent invocations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _merge(out: Path, section: str, key: str, entry: dict) -> None:
    with _locked(out):
        results = json.loads(out.read_text()) if out.is_file() else {}
        results.setdefault(section, {})[key] = entry
        out.write_text(json.dumps(results, indent=2))


def _train_record(run: Path) -> dict:
    summary = json.loads((run / "train_summary.json").read_text())
    return {
        "run": str(run),
        "train_minutes": round(summary["wall_s"] / 60, 2),
        "train_steps": summary["steps"],
        "samples_per_s": summary["samples_per_s"],
        "final_loss": summary["final_loss"],
        "parameters": summary["parameters"],
        "trainable_parameters": summary["trainable_parameters"],
    }


def _finetune_setup(method: str, pretrained: Path, args: argparse.Namespace) -> dict | None:
    if method == "scratch":
        return None
    setup: dict = {"init_from": str(pretrained)}
    if method == "head":
        setup["train_only"] = ["head.*"]
    elif method == "lora":
        setup["lora"] = {
            "rank": args.lora_rank,
            "alpha": float(args.lora_rank),
            "dropout": 0.0,
            "targets": ["transformer.*"],
            "train_also": ["head.*"],
        }
    return setup


def pretrain(args: argparse.Namespace, command: str) -> Path:
    from vlaforge.train.commands import run_training

    run = Path(args.runs) / "pretrain7"
    if not (run / "policy").is_dir():
        run_training(
            "octo-tiny",
            args.pretrain_data,
            run,
            head=args.head,
            train_overrides={"steps": args.pretrain_steps, "batch_size": args.batch_size, "num_workers": 0},
        )
    _merge(Path(args.out), "pretrain", "octo-tiny", {**_train_record(run), "command": command})
    return run


def finetune(args: argparse.Namespace, command: str) -> None:
    from vlaforge.envs import resolve_tasks
    from vlaforge.eval.rollout import evaluate
    from vlaforge.inference.load import load_policy
    from vlaforge.info import machine_info
    from vlaforge.train.commands import run_training

    pretrained = Path(args.runs) / "pretrain7"
    if not (pretrained / "policy").is_dir():
        raise SystemExit(f"no pretrained policy at {pretrained}/policy: run --stage pretrain first")
    for task in args.tasks.split(","):
        data = args.heldout_data.format(task=task)
        for method in args.methods.split(","):
            run = Path(args.runs) / f"{task}-{method}"
            setup = _finetune_setup(method, pretrained, args)
            lr = args.lr if method in ("full", "scratch") else args.adapter_lr
            if not (run / "policy").is_dir():
                run_training(
                    "octo-tiny",
                    data,
                    run,
                    head=args.head if method == "scratch" else None,
                    finetune=setup,
                    train_overrides={
                        "steps": args.finetune_steps,
                        "batch_size": args.batch_size,
                        "lr": lr,
                        "warmup_steps": min(100, args.finetune_steps // 10),
                        "num_workers": 0,
                        "save_every": args.finetune_steps,
                    },
                )
            t0 = time.perf_counter()
            report = evaluate(
                functools.partial(load_policy, str(run)),
                resolve_tasks(task),
                episodes=args.episodes,
                workers=1,
                out_dir=run / "eval",
                videos_per_task=1,
                progress=False,
            )
            t = report.tasks[0]
            entry = {
                **_train_record(run),
                "task": t.task,
                "method": method,
                "lr": lr,
                "finetune": setup,
                "success": t.rate,
                "successes": t.successes,
                "episodes": t.episodes,
                "ci95": [t.wilson_lo, t.wilson_hi],
                "eval_minutes": round((time.perf_counter() - t0) / 60, 2),
                "command": command,
                "machine": machine_info(),
            }
            _merge(Path(args.out), "finetune", f"{task}/{method}", entry)
            print(
                f"{task} {method}: {t.rate:.0%} ({t.successes}/{t.episodes}), train {entry['train_minutes']} min"
            )


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = json.loads(Path(args.out).read_text())
    rows = results.get("finetune", {})
    tasks = list(dict.fromkeys(k.split("/")[0] for k in rows))  # keys are "<task as given>/<method>"
    methods = [m for m in METHODS if any(e["method"] == m for e in rows.values())]
    pre = results.get("pretrain", {}).get("octo-tiny")

    lines = [
        "# Fine-tuning study: octo-tiny, 7 MT10 tasks -> 3 held-out tasks with 10 demonstrations",
        "",
        "Generated by `python benchmarks/bench_finetune.py --report` from `benchmarks/results/finetune.json`.",
        "",
    ]
    if pre:
        lines += [
            f"Pretraining: `octo-tiny` ({args.head} head) on 7 MT10 tasks x 50 demos, {pre['train_steps']} steps "
            f"of {args.batch_size} in {pre['train_minutes']:.1f} min (`{pre['command']}`).",
            "",
        ]
    header = "| task | " + " | ".join(methods) + " |"
    lines += [
        "Success on unseen layouts of each held-out task (eval split), 95 % Wilson interval; "
        "training wall time and trainable parameters below.",
        "",
        header,
        "|---|" + "---:|" * len(methods),
    ]
    succ = {m: [] for m in methods}
    for task in tasks:
        cells = []
        for m in methods:
            e = rows.get(f"{task}/{m}")
            if e is None:
                cells.append("-")
                continue
            succ[m].append((e["successes"], e["episodes"]))
            lo, hi = e["ci95"]
            cells.append(f"{e['success']:.0%} ({lo:.0%}-{hi:.0%})")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    mean_cells = []
    for m in methods:
        s = sum(a for a, _ in succ[m])
        n = sum(b for _, b in succ[m])
        mean_cells.append(f"**{s / n:.0%}** ({s}/{n})" if n else "-")
    lines.append("| **mean** | " + " | ".join(mean_cells) + " |")
    lines += [
        "",
        "| method | train wall (mean per task) | trainable / total parameters | learning rate |",
        "|---|---:|---:|---:|",
    ]
    for m in methods:
        es = [e for e in rows.values() if e["method"] == m]
        wall = sum(e["train_minutes"] for e in es) / len(es)
        e0 = es[0]
        share = e0["trainable_parameters"] / e0["parameters"]
        lines.append(
            f"| {m} | {wall:.1f} min | {e0['trainable_parameters']:,} / {e0['parameters']:,} ({share:.1%}) | {e0['lr']:g} |"
        )
    any_entry = next(iter(rows.values()), None)
    if any_entry:
        commands = list(dict.fromkeys(e["command"] for e in rows.values()))
        lines += [
            "",
            f"Every run: {any_entry['train_steps']} steps of {args.batch_size} on the 10 demonstrations "
            f"(warm-up {min(100, any_entry['train_steps'] // 10)} steps, cosine decay, EMA), "
            f"{any_entry['episodes']} evaluation episodes per task (eval seeds 0-{any_entry['episodes'] - 1}). "
            "Commands (the two ran side by side, one torch thread each):",
            "",
            "```bash",
            *commands,
            "python benchmarks/bench_finetune.py --report",
            "```",
        ]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        vals, err = [], [[], []]
        for task in tasks:
            e = rows.get(f"{task}/{m}")
            v = e["success"] if e else np.nan
            vals.append(v)
            err[0].append(v - e["ci95"][0] if e else 0)
            err[1].append(e["ci95"][1] - v if e else 0)
        x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, vals, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("success (95 % Wilson)")
    ax.set_ylim(0, 1.05)
    ax.legend(ncols=len(methods), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    fig.tight_layout()
    png = Path(args.out).with_suffix(".png")
    fig.savefig(png, dpi=120)
    lines += ["", f"![success per method]({os.path.relpath(png, Path(args.markdown).parent)})", ""]
    Path(args.markdown).write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if args.stage in ("pretrain", "all"):
        pretrain(args, command)
    if args.stage in ("finetune", "all"):
        finetune(args, command)
    if args.report:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
