"""The outputs of `vlaforge bench`: console tables, bench-<version>.json, and a PNG bar plot.

The JSON layout (schema 1) is documented in docs/performance.md; the tables and the plot are views of
it, so `render_tables(json.load(...))` re-prints an old result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlaforge.bench.fastpaths import BASELINE
from vlaforge.bench.flops import format_flops
from vlaforge.inference.prefix_cache import STAGES
from vlaforge.info import json_safe

SCHEMA = 1
RESULTS_DIR = Path("benchmarks") / "results"


def default_out_path(version: str) -> Path:
    """benchmarks/results/bench-<version>.json, relative to the working directory (the repository root)."""
    return RESULTS_DIR / f"bench-{version}.json"


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path


def model_label(result: dict[str, Any]) -> str:
    """'octo-tiny/diffusion' for a recipe, the directory name for a checkpoint."""
    if result.get("checkpoint"):
        return f"{Path(result['checkpoint']).name}/{result['head']}"
    return f"{result['recipe']}/{result['head']}"


def _cell(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def render_tables(report: dict[str, Any]) -> str:
    """Markdown tables: one row per (model, path), then the stage breakdown per model."""
    m = report["machine"]
    lines = [
        f"machine: {m.get('cpu')} ({m.get('cores')} cores), torch {m.get('torch')} with "
        f"{report['threads']} thread(s), device {report['device']}, cuda {m.get('cuda')}",
        f"runs: {report['runs']} timed after {report['warmup']} warm-up (+1 first call per path), batch 1; "
        f"load average at start {report['load_average']['start']}",
    ]
    roof = report.get("roofline")
    if roof:
        peaks = ", ".join(f"{d} {r['best_gflops']:.1f} GFLOP/s (n={r['best_size']})" for d, r in roof.items())
        lines.append(f"matmul peak at {report['threads']} thread(s): {peaks}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    lines += [
        "",
        "| model | params | path | GFLOP/chunk | median ms | p90 ms | actions/s | speed-up | call peak MB "
        "| max abs diff (tol) | equal | roofline x |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for res in report["results"]:
        label, params = model_label(res), f"{res['params']['total'] / 1e6:.2f}M"
        if res["params"].get("trainable", res["params"]["total"]) != res["params"]["total"]:
            params += f" ({res['params']['trainable'] / 1e6:.2f}M trainable)"
        for name, r in res["paths"].items():
            if r["status"] != "ok":
                why = r.get("reason") or r.get("error", "")
                lines.append(f"| {label} | {params} | {name} | {r['status']}: {why} |||||||||")
                continue
            roofline = r.get("roofline", {}).get("multiple")
            lines.append(
                f"| {label} | {params} | {name} | {r['flops_per_chunk'] / 1e9:.3f} | {r['median_ms']:.2f} "
                f"| {r['p90_ms']:.2f} | {r['control_hz']:.0f} | {r['speedup']:.2f}x "
                f"| {_cell(r['memory'].get('peak_delta_mb'), '.1f')} "
                f"| {r['max_abs_diff']:.2g} ({r['tolerance']:g}) | {'yes' if r['equal'] else 'NO'} "
                f"| {_cell(roofline, '.1f')} |"
            )
    lines += [
        "",
        "stage breakdown (median ms of each stage over the same calls; head = all sampling steps):",
        "",
        "| model | path | tokenize | transformer | head | steps | ms/step | rest | total | FLOPs tokenize / "
        "transformer / head |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for res in [r for r in report["results"] if r.get("family", "octo") == "octo"]:
        fl = res["flops"]["by_stage"]
        flops = " / ".join(format_flops(fl[s]) for s in ("tokenize", "transformer", "head"))
        rows = [(BASELINE, res["breakdown_ms"])]
        cache = res["paths"].get("prefix-cache", {})
        if cache.get("status") == "ok" and "breakdown_ms" in cache:
            rows.append(("prefix-cache", cache["breakdown_ms"]))
        for name, b in rows:
            per_step = b["head"] / res["head_steps"]
            lines.append(
                f"| {model_label(res)} | {name} | "
                + " | ".join(f"{b[s]:.2f}" for s in ("tokenize", "transformer", "head"))
                + f" | {res['head_steps']} ({res['sampler']}) | {per_step:.2f} | {b['rest']:.2f} | {b['total']:.2f} "
                f"| {flops if name == BASELINE else ''} |"
            )
    lm = [r for r in report["results"] if r.get("family", "octo") != "octo"]
    if lm:
        lines += ["", *render_lm_stages(lm)]
    return "\n".join(lines)


def render_lm_stages(results: list[dict[str, Any]]) -> list[str]:
    """The pretrained-LM policies' breakdown: their default predict (KV cache on), timed by hooks."""
    lines = [
        "LM policies, stage breakdown of the default predict (KV cache on; median ms; forward hooks on the "
        "policy's own modules, calls in brackets; per step = the stepped stage / its calls):",
        "",
        "| model | stage 1 | stage 2 | stage 3 | rest | total | per step | FLOPs by stage |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for res in results:
        b, calls, fl = res["breakdown_ms"], res["breakdown_ms"].get("calls", {}), res["flops"]["by_stage"]
        named = [s for s in res["stages"] if s != "rest"]
        cells = [f"{s} {b[s]:.2f}" + (f" ({calls[s]})" if s in calls else "") for s in named]
        flops = " / ".join(f"{s} {format_flops(fl[s])}" for s in named)
        lines.append(
            f"| {model_label(res)} | " + " | ".join(cells)
            + f" | {b['rest']:.2f} | {b['total']:.2f} | {b.get('per_step', 0):.2f} | {flops} |"
        )  # fmt: skip
    return lines


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Bar plot: median latency per model and path (whiskers to p90), and the plain path's stages.

    Returns None (after saying why) when matplotlib is missing: the JSON is the result, the plot a view.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plot skipped: matplotlib is not available ({e})")
        return None
    results = report["results"]
    labels = [model_label(r) for r in results]
    paths = list(dict.fromkeys(n for r in results for n in r["paths"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6 + 2.2 * len(results), 4.8))
    width = 0.8 / max(len(paths), 1)
    for j, name in enumerate(paths):
        xs, med, err = [], [], []
        for i, r in enumerate(results):
            p = r["paths"].get(name)
            if p and p["status"] == "ok":
                xs.append(i + (j - (len(paths) - 1) / 2) * width)
                med.append(p["median_ms"])
                err.append(p["p90_ms"] - p["median_ms"])
        ax1.bar(xs, med, width, yerr=[[0] * len(err), err], capsize=2, label=name)
    ax1.set_xticks(range(len(results)), labels, rotation=15)
    ax1.set_ylabel("ms per chunk (median, whisker = p90)")
    ax1.set_title("latency by fast path")
    medians = [r["paths"][BASELINE]["median_ms"] for r in results]
    if medians and max(medians) > 20 * min(medians):
        ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    bottom = [0.0] * len(results)
    # Each family has its own stage names: one bar segment per name that any model has (0 elsewhere).
    all_stages = list(dict.fromkeys(s for r in results for s in r.get("stages", STAGES)))
    for stage in all_stages:
        vals = [r["breakdown_ms"].get(stage, 0.0) for r in results]
        ax2.bar(range(len(results)), vals, 0.6, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax2.set_xticks(range(len(results)), labels, rotation=15)
    ax2.set_ylabel("ms (median per stage)")
    ax2.set_title("where the time goes (LM policies: default predict)")
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"vlaforge bench {report['vlaforge']} — {report['machine'].get('cpu')}, {report['threads']} thr"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
