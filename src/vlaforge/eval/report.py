"""Write an `EvalReport` to disk: eval.json (machine-readable), eval.md (a table), success.png.

Every success rate is written with its Wilson interval, so a reader sees at a glance whether
two numbers differ by more than the noise of 20 episodes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vlaforge.eval.results import EvalReport
from vlaforge.runtime.safety import KINDS


def _finite_or_none(x: Any) -> Any:
    """JSON has no NaN/Inf: replace them by null, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown_table(report: EvalReport) -> str:
    """The per-task table with an overall row, plus a line on policy latency."""
    conf = int(round(100 * report.confidence))
    cfg = report.config
    lines = []
    title = cfg.get("policy", "policy")
    lines.append(f"# Evaluation of {title}")
    lines.append("")
    seeds = cfg.get("seeds", ["?", "?"])
    lines.append(
        f"split `{cfg.get('split', '?')}`, {cfg.get('episodes', '?')} episodes per task "
        f"(seeds {seeds[0]}–{seeds[1]}), executor `{cfg.get('executor_label', '?')}`"
    )
    lines.append("")
    lines.append(f"| task | success | rate | {conf}% CI | mean len | median len | instruction |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for t in report.tasks:
        instr = t.instruction.replace("|", "\\|")
        if len(t.instructions) > 1:
            instr += f" (+{len(t.instructions) - 1} more)"
        lines.append(
            f"| {t.task} | {t.successes}/{t.episodes} | {_pct(t.rate)} | {_pct(t.wilson_lo)}–{_pct(t.wilson_hi)} "
            f"| {t.mean_length:.1f} | {t.median_length:.1f} | {instr} |"
        )
    o = report.overall()
    lines.append(
        f"| **mean** | {o['successes']}/{o['episodes']} | **{_pct(o['mean_success'])}** "
        f"| {_pct(o['wilson_lo'])}–{_pct(o['wilson_hi'])} | | | |"
    )
    lat = report.latency()
    if lat["calls"]:
        lines.append("")
        lines.append(
            f"Policy latency: median {lat['median_ms']:.3g} ms, p90 {lat['p90_ms']:.3g} ms over {lat['calls']} calls; "
            f"{lat['actions_per_call']:.1f} actions per call → up to {lat['max_control_hz']:.0f} Hz control "
            f"(the env runs at {lat['env_fps']:g} Hz)."
        )
    lines.extend(safety_table(report))
    return "\n".join(lines) + "\n"


def safety_table(report: EvalReport) -> list[str]:
    """Lines of the SafetyFilter section (empty when evaluated without one): per task, steps the filter
    changed, episodes it touched, and the count of each intervention kind."""
    total = report.safety()
    if total is None:
        return []
    kinds = [k for k in KINDS if total.get(k)]  # only the kinds that happened, to keep the table narrow
    lines = ["", "## Safety filter", ""]
    if not total["steps_changed"]:
        lines.append(f"No interventions in {total['steps']} filtered steps ({total['episodes']} episodes).")
        return lines
    lines.append("| task | steps changed | episodes changed | " + " | ".join(kinds) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(kinds))
    rows = [(t.task, t.safety) for t in report.tasks if t.safety is not None] + [("**all**", total)]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['steps_changed']}/{s['steps']} | {s['episodes_changed']}/{s['episodes']} | "
            + " | ".join(str(s.get(k, 0)) for k in kinds)
            + " |"
        )
    return lines


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
    ax.axhline(mean, color="#C44E52", linestyle="--", linewidth=1.2, label=f"mean {_pct(mean)}")
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
    data = _finite_or_none({**report.to_json(), "files": files})
    Path(files["json"]).write_text(json.dumps(data, indent=2) + "\n")
    return files
