"""Compare two `vlaforge eval` reports of the same policy on the same seeds (e.g. fp32 vs a fast path).

    vlaforge eval runs/mt10-flow --tasks mt10 --episodes 20 --workers 1                     # -> eval/
    vlaforge eval runs/mt10-flow --bf16 --tasks mt10 --episodes 20 --workers 1 --out runs/mt10-flow/eval-bf16
    python benchmarks/compare_evals.py runs/mt10-flow/eval runs/mt10-flow/eval-bf16 --labels fp32,bf16 \\
        --out benchmarks/results/bf16_mt10.json

Reports overall success with Wilson intervals for both, per-task rates, and how many episodes (task,
seed) ended the same way — the paired view: two runs with equal rates can still disagree episode by
episode, and a fast path that keeps accuracy changes few outcomes. Both reports must cover the same
(task, seed) pairs. The rollout latencies are copied, marked as such: use `vlaforge bench` for speed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any


def read_report(path: Path) -> dict[str, Any]:
    """An eval directory (its eval.json) or the eval.json itself."""
    f = path / "eval.json" if path.is_dir() else path
    try:
        report = json.loads(f.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{f}: no such eval report (run `vlaforge eval ... --out {path}` first)") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"{f}: not valid JSON ({e})") from None
    for key in ("overall", "tasks", "episodes"):
        if key not in report:
            raise SystemExit(f"{f}: not a vlaforge eval report (no '{key}')")
    return report


def compare(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str]) -> dict[str, Any]:
    """Paired comparison of two eval reports (see the module docstring)."""
    outcome = [{(e["task"], e["seed"]): bool(e["success"]) for e in r["episodes"]} for r in (a, b)]
    if outcome[0].keys() != outcome[1].keys():
        only = sorted(outcome[0].keys() ^ outcome[1].keys())[:5]
        raise SystemExit(
            f"the reports cover different (task, seed) episodes, e.g. {only}: compare like with like"
        )
    same = sum(outcome[0][k] == outcome[1][k] for k in outcome[0])
    la, lb = labels
    return {
        "policy": {la: a.get("config", {}).get("policy"), lb: b.get("config", {}).get("policy")},
        la: a["overall"],
        lb: b["overall"],
        "per_task": {t: {la: a["tasks"][t]["rate"], lb: b["tasks"][t]["rate"]} for t in a["tasks"]},
        "same_outcome_episodes": same,
        "episodes": len(outcome[0]),
        "only_first_succeeded": sum(outcome[0][k] and not outcome[1][k] for k in outcome[0]),
        "only_second_succeeded": sum(outcome[1][k] and not outcome[0][k] for k in outcome[0]),
        "latency_ms_median": {
            la: a.get("latency", {}).get("median_ms"),
            lb: b.get("latency", {}).get("median_ms"),
            "note": "rollout latencies of the two eval runs, taken under whatever load each saw; use vlaforge bench",
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path, help="eval directory (or eval.json) of the reference run")
    p.add_argument("second", type=Path, help="eval directory (or eval.json) of the compared run")
    p.add_argument("--labels", default="reference,compared", help="two comma-separated names")
    p.add_argument("--out", type=Path, default=None, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    labels = tuple(s.strip() for s in args.labels.split(","))
    if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
        p.error("--labels needs two different names, e.g. fp32,bf16")
    result = {
        "command": "python benchmarks/compare_evals.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        **compare(read_report(args.first), read_report(args.second), labels),  # type: ignore[arg-type]
    }
    la, lb = labels
    print(f"| task | {la} | {lb} |\n|---|---:|---:|")
    for task, rates in result["per_task"].items():
        print(f"| {task} | {rates[la]:.0%} | {rates[lb]:.0%} |")
    for label in labels:
        o = result[label]
        print(
            f"{label}: {o['mean_success']:.1%} ({o['wilson_lo']:.1%}-{o['wilson_hi']:.1%}), "
            f"{o['successes']}/{o['episodes']}"
        )
    print(
        f"same outcome in {result['same_outcome_episodes']} of {result['episodes']} episodes "
        f"(only {la}: {result['only_first_succeeded']}, only {lb}: {result['only_second_succeeded']})"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
