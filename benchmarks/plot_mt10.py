"""Plots of the MT10 per-head table in results/mt10.json (written by bench_mt10.py).

    python benchmarks/plot_mt10.py [--markdown]   # -> results/mt10_heads.png, results/mt10_curves.png

mt10_heads.png: mean success per head (and per language/instruction variant) with 95 % Wilson
intervals, and per-task success grouped by head. mt10_curves.png: the training loss of each head
against step (losses of different heads are different quantities: compare shapes, not levels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def plot_heads(heads: dict, out: Path) -> None:
    keys = list(heads)
    tasks = list(heads[keys[0]]["per_task"])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [1, 2.6]})
    means = np.array([heads[k]["mean_success"] for k in keys]) * 100
    lo = np.array([heads[k]["overall"]["wilson_lo"] for k in keys]) * 100
    hi = np.array([heads[k]["overall"]["wilson_hi"] for k in keys]) * 100
    ax0.bar(range(len(keys)), means, yerr=[means - lo, hi - means], capsize=4, color="tab:blue")
    ax0.axhline(80, color="tab:red", ls="--", lw=1, label="target 80 %")
    ax0.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax0.set_ylabel("mean success over 200 episodes (%)")
    ax0.set_ylim(0, 100)
    ax0.legend(loc="lower right")
    ax0.set_title("MT10, 5,772 steps of 64 (octo-tiny heads, openvla recipes)")
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        rates = [heads[k]["per_task"][t]["success"] * 100 for t in tasks]
        ax1.bar(np.arange(len(tasks)) + (i - (len(keys) - 1) / 2) * width, rates, width, label=k)
    ax1.set_xticks(range(len(tasks)), [t.removesuffix("-v3") for t in tasks], rotation=30, ha="right")
    ax1.set_ylabel("success over 20 episodes (%)")
    ax1.set_ylim(0, 105)
    ax1.legend(ncol=len(keys), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax1.set_title("per task")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_curves(heads: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    seen = set()
    for k, h in heads.items():
        run = h["run"]
        if run in seen or not h.get("curve"):  # rephrased-instruction rows share their run's curve
            continue
        seen.add(run)
        steps = [c["step"] for c in h["curve"]]
        losses = [c["loss"] for c in h["curve"]]
        ax.plot(steps, losses, label=k)
    ax.set_yscale("log")
    ax.set_xlabel("step (batch 64)")
    ax.set_ylabel("training loss (head-specific)")
    ax.legend(fontsize=8)
    ax.set_title("MT10 training curves")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown_table(heads: dict) -> str:
    """Per-task success of every row in mt10.json as one markdown table (rows: tasks, columns: heads)."""
    keys = list(heads)
    tasks = list(heads[keys[0]]["per_task"])
    lines = ["| task | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for t in tasks:
        cells = [f"{heads[k]['per_task'][t]['success']:.0%}" for k in keys]
        lines.append(f"| {t.removesuffix('-v3')} | " + " | ".join(cells) + " |")
    means = []
    for k in keys:
        o = heads[k]["overall"]
        means.append(f"**{o['mean_success']:.1%}** ({o['wilson_lo']:.1%}–{o['wilson_hi']:.1%})")
    lines.append("| **mean (95 % Wilson)** | " + " | ".join(means) + " |")
    steps = [f"{heads[k]['train_steps']} / {heads[k]['train_minutes']} min" for k in keys]
    lines.append("| training steps / wall | " + " | ".join(steps) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(RESULTS / "mt10.json"))
    p.add_argument("--markdown", action="store_true", help="also print the per-task table as markdown")
    args = p.parse_args()
    heads = json.loads(Path(args.results).read_text())["heads"]
    plot_heads(heads, RESULTS / "mt10_heads.png")
    plot_curves(heads, RESULTS / "mt10_curves.png")
    print(f"wrote {RESULTS / 'mt10_heads.png'} and {RESULTS / 'mt10_curves.png'}")
    if args.markdown:
        print(markdown_table(heads))


if __name__ == "__main__":
    main()
