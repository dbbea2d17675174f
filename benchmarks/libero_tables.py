"""Markdown tables for benchmarks/README.md from the LIBERO result files (nothing typed by hand).

    python benchmarks/libero_tables.py
    python benchmarks/libero_tables.py --side-by-side goal-octo-tiny-flow-minilm-14k goal-dart-octo-tiny-flow-minilm-14k

Reads results/libero_experts.json (bench_libero_experts.py), results/libero_env.json
(bench_libero_env.py), results/libero/<name>/eval.json (vlaforge eval --out) and
results/libero_language_*.json (bench_libero_language.py).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _wilson(k: int, n: int) -> str:
    from vlaforge.eval.stats import wilson_interval

    lo, hi = wilson_interval(k, n)
    return f"{100 * k / max(1, n):.1f} % ({100 * lo:.0f}–{100 * hi:.0f})"


def experts() -> None:
    path = RESULTS / "libero_experts.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())["tasks"]
    suites: dict[str, list[dict]] = {}
    for task, row in data.items():
        if row["split"] == "eval":
            suites.setdefault(task.split("/")[0], []).append(row)
    print("| suite | task | expert success (official initial states) |\n|---|---|---|")
    for suite, rows in sorted(suites.items()):
        for r in rows:
            print(f"| {suite} | {r['task'].split('/')[1]} | {r['successes']}/{r['episodes']} |")
        k, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
        print(f"| **{suite}** | **{len(rows)} tasks** | **{_wilson(k, n)}** |")
    print()


def env_speed() -> None:
    path = RESULTS / "libero_env.json"
    if not path.exists():
        return
    from bench_libero_env import table  # this script's own folder is on sys.path

    data = json.loads(path.read_text())
    print(f"`{data['command']}` — task {data['task']}, 1-min load {data['load_1min']:.2f}\n")
    print(table(data["rows"], data.get("repeats", 1)))
    print()


def evals() -> None:
    for path in sorted((RESULTS / "libero").glob("*/eval.json")):
        data = json.loads(path.read_text())
        tasks = data["tasks"]
        print(f"**{path.parent.name}** — {data['config'].get('policy')}, "
              f"{data['config']['episodes']} episodes per task (official initial states "
              f"{data['config']['seeds'][0]}–{data['config']['seeds'][1]})\n")  # fmt: skip
        print("| task | success |\n|---|---|")
        k = n = 0
        for name, t in tasks.items():
            print(f"| {name.split('/')[1]} | {t['successes']}/{t['episodes']} |")
            k, n = k + t["successes"], n + t["episodes"]
        print(f"| **mean** | **{_wilson(k, n)}** |\n")


def side_by_side(names: list[str]) -> None:
    """Per-task successes of several runs of one suite (results/libero/<name>/eval.json), one column each."""
    runs = {
        name: json.loads((RESULTS / "libero" / name / "eval.json").read_text())["tasks"] for name in names
    }
    tasks = list(next(iter(runs.values())))
    print("| task | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for task in tasks:
        cells = [f"{r[task]['successes']}/{r[task]['episodes']}" if task in r else "" for r in runs.values()]
        print(f"| {task.split('/')[1]} | " + " | ".join(cells) + " |")
    means = [
        _wilson(sum(t["successes"] for t in r.values()), sum(t["episodes"] for t in r.values()))
        for r in runs.values()
    ]
    print("| **mean** | " + " | ".join(f"**{m}**" for m in means) + " |\n")


def language() -> None:
    for path in sorted(RESULTS.glob("libero_language_*.json")):
        data = json.loads(path.read_text())
        print(f"`{data['command']}`\n")
        keys = ["did_instructed_task", "did_with_other_object"]
        shown = [k for k in keys if any(r.get(k) is not None for r in data["conditions"].values())]
        heads = {"did_instructed_task": "did the instructed task instead",
                 "did_with_other_object": "own goal with the other object"}  # fmt: skip
        print("| condition | success (own goal) | " + " | ".join(heads[k] for k in shown) + " |")
        print("|---|---|" + "---|" * len(shown))
        for cond, r in data["conditions"].items():
            cells = [_wilson(r[k], r["episodes"]) if r.get(k) is not None else "" for k in shown]
            print(f"| {cond} | {_wilson(r['successes'], r['episodes'])} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 2 and sys.argv[1] == "--side-by-side":  # e.g. --side-by-side goal-a goal-b
        side_by_side(sys.argv[2:])
        sys.exit(0)
    experts()
    env_speed()
    evals()
    language()
