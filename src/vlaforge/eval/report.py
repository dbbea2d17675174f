"""Write an `EvalReport` to disk: eval.json (machine-readable), eval.md (a table), success.png.

Every success rate is written with its Wilson interval, so a reader sees at a glance whether
two numbers differ by more than the noise of 20 episodes.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlaforge.eval.results import EvalReport, markdown_table, pct
from vlaforge.info import json_safe


def plot_success(report: EvalReport, path: str | Path) -> Path:
    """Bar chart of per-task success with Wilson error bars and a dashed line at the mean."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [t.task for t in report.tasks]
    rates = [t.rate for t in report.tasks]
    # Clamp: at 0 % or 100 % the interval edge equals the rate up to float rounding.
    err_lo = [max(0.0, t.rate - t.wilson_lo) for t in report.tasks]
    err_hi = [max(0.0, t.wilson_hi - t.rate) for t in report.tasks]
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(len(names)))
    ax.bar(x, rates, color="#4C72B0", yerr=[err_lo, err_hi], capsize=3, ecolor="#333333")
    mean = report.overall()["mean_success"]
    ax.axhline(mean, color="#C44E52", linestyle="--", linewidth=1.2, label=f"mean {pct(mean)}")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.18)  # headroom for the legend above the 100 % mark
    ax.set_ylabel("success rate")
    conf = int(round(100 * report.confidence))
    n = report.tasks[0].episodes if report.tasks else 0
    ax.set_title(f"success per task ({n} episodes, {conf}% Wilson interval)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, str]:
    """Write eval.json, eval.md and success.png under out_dir; returns {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": str(out / "eval.json"),
        "markdown": str(out / "eval.md"),
        "chart": str(out / "success.png"),
    }
    Path(files["markdown"]).write_text(markdown_table(report))
    plot_success(report, files["chart"])
    videos = [e.video for e in report.episodes if e.video]
    if videos:
        files["videos"] = str(out / "videos")
    report.out_dir = str(out)
    report.files = files
    data = json_safe({**report.to_json(), "files": files})
    Path(files["json"]).write_text(json.dumps(data, indent=2) + "\n")
    return files
