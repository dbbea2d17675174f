"""vlaforge side by side with LeRobot 0.3.2: dataset loading, inference latency, training step time.

    nice -n 19 .venv/bin/python benchmarks/lerobot/run.py                       # everything, CPU-sized models
    nice -n 19 .venv/bin/python benchmarks/lerobot/run.py --only inference --repeats 2 --runs 25
    nice -n 19 .venv/bin/python benchmarks/lerobot/run.py --size lerobot        # LeRobot's default widths

One invocation runs both libraries, each in its own environment and process: vlaforge in this venv
(`ours.py`), LeRobot in /work/lerobot-venv (`lerobot_side.py`, with `torchvision_stub/` first on
PYTHONPATH, see README.md). Both workers stay alive for the whole run and receive the measurements one
at a time, alternating which side goes first, repeat after repeat, so load from other jobs on the
machine hits both alike. Every figure is kept as wall time (what a user waits) and as CPU time of the
processes involved (what the work costs, independent of how much of the machine other jobs took).

  dataset    the same Meta-World recording (data/mt10, written by `vlaforge record` as LeRobot v3.0),
             exported to v2.1 with `vlaforge dataset convert` (packets copied: the same mp4 frames) for
             LeRobot 0.3.2, which reads v2.1 only. samples/s through a torch DataLoader, batch 64, 0 and
             1 workers, the same shuffled frame indices, octo-tiny's windows (history 1, 4 future
             actions). vlaforge reads the same v2.1 copy (like for like); informational rows: the v3.0
             original, and its decoded-frame cache (what `vlaforge train` uses by default).
  inference  LeRobot's ACT and diffusion policy built from local configs (ResNet-18 backbone with
             random weights, no download) vs vlaforge's octo layout with the l1 and diffusion heads,
             widened/deepened to the same parameter count; batch 1, two 128x128 cameras + state, one
             chunk of 4 actions per call (diffusion: 20 DDPM steps on both sides), median over
             repeats x runs calls after warm-up, at each --threads count.
  train      seconds per optimizer step at the same parameter count and batch, each library's own
             step (loss, backward, clipping, optimizer) on in-memory batches.

Writes benchmarks/results/lerobot.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from common import PAIRS, RESULT_TAG, SIZES  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "lerobot.json"
TARGETS = {"dataset": 1.5, "inference": 0.5}  # ours >= 1.5x LeRobot's samples/s; ours <= 0.5x its latency
MEASUREMENTS = ("dataset", "inference", "train")
# vlaforge fast paths timed on the matched policies besides the plain call (ours.py: fast_path_calls):
# result key -> label; reported as (info) rows next to the plain call, which carries the target
VARIANTS = {"prefix_cache": "prefix cache", "int8": "int8", "int8_prefix_cache": "int8 + prefix cache",
            "bf16": "bf16 autocast", "bf16_weights": "bf16 weights",
            "bf16_weights_prefix_cache": "bf16 weights + prefix cache"}  # fmt: skip
KINDS = ("matched", *(f"matched, {name}" for name in VARIANTS.values()), "octo-tiny recipe")
# How a user runs each of our rows (the table's last column): the plain call and the deployable fast
# paths are what `vlaforge eval` / `vlaforge serve` run; the prefix cache and bf16 autocast are timed
# through the benchmark's own staged predictor (`inference.prefix_cache.StagedPredictor`) and no
# command line flag runs them yet.
USER_PATH = {
    "matched": "`Policy.predict`: what `eval` / `serve` run",
    "matched, int8": "deployable: `serve --int8`, `eval --int8`",
    "matched, bf16 weights": "deployable: `serve --bf16`, `eval --bf16`",
    "matched, prefix cache": "benchmark only (staged predictor)",
    "matched, int8 + prefix cache": "benchmark only (staged predictor)",
    "matched, bf16 autocast": "benchmark only",
    "matched, bf16 weights + prefix cache": "benchmark only (staged predictor)",
    "octo-tiny recipe": "`train --recipe octo-tiny` (a smaller model, not matched)",
}
DATASET_PATH = {
    "Dataset v2.1 (video)": "reads a LeRobot v2.1 dataset as downloaded",
    "Dataset v3.0 (video)": "our v3.0 original, decoded per batch",
    "Dataset v3.0 (frame cache)": "what `vlaforge train` reads (frames decoded once)",
}
NOT_BUILT = {
    "pi0": "LeRobot 0.3.2's PI0Policy loads its tokenizer with AutoTokenizer.from_pretrained("
    "'google/paligemma-3b-pt-224') (hub download), and PI0FlowMatching builds PaliGemmaWithExpertConfig() "
    "with the hard-coded 3B PaliGemma + 300M expert sizes (no config field shrinks them), so there is no "
    "matched CPU-sized π0 here; the model itself at its real size is compared by benchmarks/lerobot/pi0.py "
    "(results/lerobot_pi0.json).",
    "smolvla": "LeRobot 0.3.2's SmolVLA calls AutoConfig.from_pretrained / AutoProcessor.from_pretrained("
    "config.vlm_model_name) (default HuggingFaceTB/SmolVLM2-500M-Video-Instruct): building it needs that "
    "model's config and processor/tokenizer files, which are not available offline here (and the "
    "transformers<4.52 extra). A local directory with a fabricated tiny SmolVLM config and tokenizer "
    "would not be LeRobot's model, so it is left out.",
}


# ----------------------------------------------------------------------------------------------- workers


class Worker:
    """One long-lived side: a subprocess that answers JSON task lines with `RESULT {json}` lines."""

    def __init__(self, name: str, python: str, script: Path, env: dict[str, str], log: Path):
        self.name, self.log_path = name, log
        self.log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [python, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=str(REPO),
        )

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(RESULT_TAG):
                out = json.loads(line[len(RESULT_TAG) :])
                if "error" in out:
                    print(f"  ! {self.name} {spec['task']} failed:\n{out['error']}", file=sys.stderr)
                return out
            self.log.write(line)  # libraries printing to stdout: keep it with the log
        self.log.flush()
        tail = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"{self.name} worker exited (rc={self.proc.wait()}); log {self.log_path}:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps({"task": "exit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        self.log.close()


def start_workers(args: argparse.Namespace, work: Path) -> dict[str, Worker]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    base.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    ours_env = dict(base)
    lerobot_env = dict(
        base,
        PYTHONPATH=str(HERE / "torchvision_stub"),  # first on sys.path: shadows any installed torchvision
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(work / "hf_home"),  # the datasets library's arrow cache of the parquet files goes here
    )
    return {
        "ours": Worker("vlaforge", args.ours_python, HERE / "ours.py", ours_env, work / "ours.log"),
        "lerobot": Worker(
            "lerobot", args.lerobot_python, HERE / "lerobot_side.py", lerobot_env, work / "lerobot.log"
        ),
    }


def rotated(items: list[Any], r: int) -> list[Any]:
    k = r % len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------------------------------------- dataset


def ensure_v21(src: Path, dst: Path) -> Path:
    """The v2.1 export of `src` for LeRobot 0.3.2 (made once; `vlaforge dataset convert SRC DST --to v2.1`)."""
    if (dst / "meta" / "info.json").is_file():
        info = json.loads((dst / "meta" / "info.json").read_text())
        if info.get("codebase_version") == "v2.1":
            return dst
    from vlaforge.data.convert import convert_dataset

    print(f"exporting {src} to LeRobot v2.1 at {dst} (once) ...", file=sys.stderr)
    return convert_dataset(src, dst, to="v2.1", overwrite=True, verbose=True)


def run_dataset(
    args: argparse.Namespace, workers: dict[str, Worker], v21: Path, log: list[Any]
) -> dict[str, Any]:
    variants = [
        ("lerobot", "LeRobotDataset v2.1 (pyav)", {"root": str(v21), "backend": "pyav"}),
        ("ours", "vlaforge Dataset v2.1 (video)", {"root": str(v21), "variant": "video"}),
        ("ours", "vlaforge Dataset v3.0 (video)", {"root": str(args.data), "variant": "video"}),
    ]
    if not args.no_cache_row:
        variants.append(
            ("ours", "vlaforge Dataset v3.0 (frame cache)", {"root": str(args.data), "variant": "cache"})
        )
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in range(args.repeats):
        for w in args.workers:
            for side, label, extra in rotated(variants, r + w):
                spec = {"task": "dataset", "workers": w, "batch_size": args.batch_size, "batches": args.batches,
                        "warmup": args.dataset_warmup, "seed": r, **extra}  # fmt: skip
                out = timed(workers[side], spec, log, f"dataset {label} workers={w} repeat {r}")
                raw.setdefault(label, {}).setdefault(str(w), []).append(out)
    result: dict[str, Any] = {"variants": {}, "ratios": {}}
    for label, per_w in raw.items():
        result["variants"][label] = {w: pool_dataset(outs) for w, outs in per_w.items()}
    base = result["variants"]["LeRobotDataset v2.1 (pyav)"]
    for label, per_w in result["variants"].items():
        if label.startswith("LeRobot"):
            continue
        result["ratios"][label] = {
            w: ratio_pair(per_w[w], base[w], "samples_per_s", "cpu_samples_per_s") for w in per_w if w in base
        }
    return result


def pool_dataset(outs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [o for o in outs if "error" not in o]
    if not ok:
        return {"error": outs[0]["error"]}
    samples = sum(o["samples"] for o in ok)
    return {
        "samples_per_s": samples / sum(o["seconds"] for o in ok),
        "cpu_samples_per_s": sum(o["cpu_samples"] for o in ok) / sum(o["cpu_seconds"] for o in ok),
        "per_repeat_samples_per_s": [round(o["samples_per_s"], 1) for o in ok],
        "samples": samples,
        "open_s": ok[0]["open_s"],
        "frames": ok[0]["frames"],
        "version": ok[0]["version"],
        "batch_shapes": ok[0]["batch_shapes"],
    }


def ratio_pair(ours: dict[str, Any], theirs: dict[str, Any], wall_key: str, cpu_key: str) -> dict[str, Any]:
    if "error" in ours or "error" in theirs:
        return {"wall": None, "cpu": None}
    cpu = ours.get(cpu_key) / theirs[cpu_key] if ours.get(cpu_key) and theirs.get(cpu_key) else None
    return {"wall": ours[wall_key] / theirs[wall_key], "cpu": cpu}


# -------------------------------------------------------------------------------------- inference, train


def run_inference(
    args: argparse.Namespace, workers: dict[str, Worker], matched: dict[str, Any], log: list[Any]
) -> dict[str, Any]:
    raw: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.repeats):
        for family, head in PAIRS.items():
            jobs = [
                ("lerobot", f"lerobot {family}", {"family": family, "size": args.size}),
                (
                    "ours",
                    f"vlaforge {head} (matched)",
                    {"head": head, "shape": matched[family]["shape"], "fast_paths": list(VARIANTS)},
                ),
                ("ours", f"vlaforge {head} (octo-tiny recipe)", {"head": head, "shape": None}),
            ]
            for side, label, extra in rotated(jobs, r):
                spec = {
                    "task": "inference",
                    "threads": args.threads,
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "breakdown_runs": 5 if r == 0 else 0,  # where the time goes: first repeat only
                    **extra,
                }
                raw.setdefault(label, []).append(
                    timed(workers[side], spec, log, f"inference {label} repeat {r}")
                )
    pooled = {label: pool_latency(outs, args.threads) for label, outs in raw.items()}
    for head in PAIRS.values():  # the same matched policies through `vlaforge bench`'s fast paths
        for key, name in VARIANTS.items():
            outs = [o.get(key) or {"error": o.get("error", f"no {name} timing")}
                    for o in raw[f"vlaforge {head} (matched)"]]  # fmt: skip
            pooled_v = pool_latency([{**o, "params": None, "action_shape": None} for o in outs], args.threads)
            diffs = [o["max_abs_diff"] for o in outs if "max_abs_diff" in o]
            pooled_v["max_abs_diff"] = max(diffs) if diffs else None
            pooled[f"vlaforge {head} (matched, {name})"] = pooled_v
    ratios = {}
    for family, head in PAIRS.items():
        theirs = pooled[f"lerobot {family}"]
        for kind in KINDS:
            ours = pooled[f"vlaforge {head} ({kind})"]
            ratios[f"{head} ({kind}) vs lerobot {family}"] = {
                t: ratio_pair(ours["threads"].get(t, {"error": 1}), theirs["threads"].get(t, {"error": 1}),
                              "median_ms", "cpu_median_ms")
                for t in map(str, args.threads)
            }  # fmt: skip
    return {"models": pooled, "ratios": ratios}


def pool_latency(outs: list[dict[str, Any]], threads: list[int]) -> dict[str, Any]:
    ok = [o for o in outs if "error" not in o]
    if not ok:
        return {"error": outs[0]["error"], "threads": {}}
    per_thread = {}
    for t in map(str, threads):
        wall = [s for o in ok for s in o["threads"][t]["seconds"]]
        cpu = [s for o in ok for s in o["threads"][t]["cpu_seconds"]]
        per_thread[t] = summarize(wall, cpu)
    return {
        "params": ok[0]["params"],
        "threads": per_thread,
        "action_shape": ok[0]["action_shape"],
        "breakdown": ok[0].get("breakdown"),  # from the first repeat (1 thread, CPU ms and FLOPs per part)
    }


def summarize(wall: list[float], cpu: list[float]) -> dict[str, Any]:
    w, c = np.asarray(wall) * 1000, np.asarray(cpu) * 1000
    return {
        "n": int(w.size),
        "median_ms": round(float(np.median(w)), 2),
        "p90_ms": round(float(np.percentile(w, 90)), 2),
        "min_ms": round(float(w.min()), 2),
        "cpu_median_ms": round(float(np.median(c)), 2),
    }


def run_train(
    args: argparse.Namespace, workers: dict[str, Worker], matched: dict[str, Any], log: list[Any]
) -> dict[str, Any]:
    raw: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.repeats):
        for family, head in PAIRS.items():
            common = {"task": "train", "batch_size": args.train_batch, "steps": args.train_steps,
                      "warmup": args.train_warmup, "threads": args.train_threads,
                      "count_flops": r == 0}  # fmt: skip
            jobs = [
                ("lerobot", f"lerobot {family}", {"family": family, "size": args.size}),
                ("ours", f"vlaforge {head} (matched)", {"head": head, "shape": matched[family]["shape"]}),
            ]
            for side, label, extra in rotated(jobs, r):
                raw.setdefault(label, []).append(
                    timed(workers[side], {**common, **extra}, log, f"train {label} repeat {r}")
                )
    pooled: dict[str, Any] = {}
    for label, outs in raw.items():
        ok = [o for o in outs if "error" not in o]
        if not ok:
            pooled[label] = {"error": outs[0]["error"]}
        elif label.startswith("lerobot"):
            pooled[label] = {"params": ok[0]["params"], "optimizer": ok[0]["optimizer"],
                             "flops_per_step": ok[0].get("flops_per_step"),
                             **summarize([s for o in ok for s in o["seconds"]], [s for o in ok for s in o["cpu_seconds"]])}  # fmt: skip
        else:
            pooled[label] = {"params": ok[0]["params"], "optimizer": ok[0]["optimizer"],
                             "flops_per_step": ok[0].get("flops_per_step")}  # fmt: skip
            for v in ("matched", "default"):
                pooled[label][v] = summarize(
                    [s for o in ok for s in o["variants"][v]["seconds"]],
                    [s for o in ok for s in o["variants"][v]["cpu_seconds"]],
                )
    ratios = {}
    for family, head in PAIRS.items():
        theirs, ours = pooled[f"lerobot {family}"], pooled[f"vlaforge {head} (matched)"]
        for v in ("matched", "default"):
            ratios[f"{head} ({v} step) vs lerobot {family}"] = (
                ratio_pair(ours[v], theirs, "median_ms", "cpu_median_ms")
                if "error" not in ours and "error" not in theirs
                else {"wall": None, "cpu": None}
            )
    return {"batch_size": args.train_batch, "threads": args.train_threads, "models": pooled, "ratios": ratios}


def timed(worker: Worker, spec: dict[str, Any], log: list[Any], what: str) -> dict[str, Any]:
    """Run one task, printing progress and recording the 1-minute load average when it started."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = worker.run(spec)
    log.append({"what": what, "load_1min": round(load, 2), "wall_s": round(time.perf_counter() - t0, 1)})
    print(f"  {what}: {log[-1]['wall_s']} s (load {load:.1f})", file=sys.stderr, flush=True)
    return out


# -------------------------------------------------------------------------------------------- reporting


def fmt_ratio(x: float | None, target: float | None = None, higher_is_better: bool = True) -> str:
    if x is None:
        return "–"
    s = f"{x:.2f}×"
    if target is None:
        return s
    ok = x >= target if higher_is_better else x <= target
    return f"**{s}**" if ok else s


def markdown(result: dict[str, Any]) -> str:
    lines = ["| measurement | setting | vlaforge | LeRobot 0.3.2 † | ratio (wall) | ratio (CPU) | target | vlaforge row: how a user gets it |",
             "|---|---|---:|---:|---:|---:|---|---|"]  # fmt: skip
    ds = result.get("dataset")
    if ds:
        base = ds["variants"]["LeRobotDataset v2.1 (pyav)"]
        for label, per_w in ds["variants"].items():
            if label.startswith("LeRobot"):
                continue
            for w, v in per_w.items():
                b, rt = base.get(w, {}), ds["ratios"][label].get(w, {})
                if "error" in v or "error" in b:
                    continue
                target = "≥ 1.5×" if "v2.1" in label else "(info)"
                lines.append(
                    f"| dataset samples/s | {label.removeprefix('vlaforge ')}, {w} worker(s), batch "
                    f"{result['settings']['batch_size']} | {v['samples_per_s']:.0f} | {b['samples_per_s']:.0f} | "
                    f"{fmt_ratio(rt.get('wall'), 1.5 if 'v2.1' in label else None)} | {fmt_ratio(rt.get('cpu'))} | {target} | "
                    f"{DATASET_PATH.get(label.removeprefix('vlaforge '), '')} |"
                )
    inf = result.get("inference")
    if inf:
        for family, head in PAIRS.items():
            theirs = inf["models"][f"lerobot {family}"]
            for kind in KINDS:
                ours = inf["models"].get(f"vlaforge {head} ({kind})", {"error": "not measured"})
                if "error" in ours or "error" in theirs:
                    continue
                n_ours = (ours["params"] or inf["models"][f"vlaforge {head} (matched)"]["params"])["total"]
                rt = inf["ratios"][f"{head} ({kind}) vs lerobot {family}"]
                for t in ours["threads"]:
                    o, b = ours["threads"][t], theirs["threads"][t]
                    target = "≤ 0.5×" if kind == "matched" else "(info)"
                    what = (
                        " octo-tiny"
                        if kind == "octo-tiny recipe"
                        else kind.removeprefix("matched").replace(",", "")
                    )
                    lines.append(
                        f"| inference ms/chunk | {head}{what} {fmt_params(n_ours)} vs {family} "
                        f"{fmt_params(theirs['params']['total'])}, {t} thread(s) | {o['median_ms']:.1f} | "
                        f"{b['median_ms']:.1f} | {fmt_ratio(rt[t]['wall'], 0.5 if kind == 'matched' else None, False)} | "
                        f"{fmt_ratio(rt[t]['cpu'])} | {target} | {USER_PATH.get(kind, '')} |"
                    )
    tr = result.get("train")
    if tr:
        for family, head in PAIRS.items():
            theirs, ours = tr["models"][f"lerobot {family}"], tr["models"][f"vlaforge {head} (matched)"]
            if "error" in ours or "error" in theirs:
                continue
            for v in ("matched", "default"):
                rt = tr["ratios"][f"{head} ({v} step) vs lerobot {family}"]
                lines.append(
                    f"| train ms/step | {head} ({v} step) vs {family}, batch {tr['batch_size']}, {tr['threads']} thread(s) | "
                    f"{ours[v]['median_ms']:.0f} | {theirs['median_ms']:.0f} | {fmt_ratio(rt['wall'])} | {fmt_ratio(rt['cpu'])} | (lower is faster) | "
                    f"{'what `vlaforge train` runs (augmentation, EMA)' if v == 'default' else 'augmentation and EMA off, as LeRobot'} |"
                )
    lines.append(
        "\nratio = vlaforge / LeRobot: of samples/s for the dataset (higher is better), of milliseconds for "
        "inference and training (lower is better); wall = elapsed time, CPU = CPU time of the processes doing "
        "the work. Bold: target met.\n\n"
        "† LeRobot ran with stand-ins where its own dependency cannot load here (the row's numbers are LeRobot's "
        "code on these stand-ins): `torchvision` is `benchmarks/lerobot/torchvision_stub` (PyAV calls as "
        "torchvision's `pyav` backend makes them, frames bit-identical; a ResNet-18 with torchvision's layout, "
        "random weights); its video decoder is `pyav`, not its default torchcodec, which does not load with "
        "this torch. Models on both sides have random weights and matched parameter counts (`--size small`), "
        "not LeRobot's default widths."
    )
    return "\n".join(lines) + "\n\n" + where_time_goes(result)


def where_time_goes(result: dict[str, Any]) -> str:
    """Second table: per model, CPU ms (1 thread, median of the breakdown calls) and GFLOP per part."""
    lines = ["| model | params | CPU ms per chunk (1 thread) by part | GFLOP per chunk | GFLOP/s | train GFLOP/step |",
             "|---|---:|---|---:|---:|---:|"]  # fmt: skip
    inf, tr = result.get("inference", {}).get("models", {}), result.get("train", {}).get("models", {})
    for label, m in inf.items():
        bd = m.get("breakdown")
        if not bd or "error" in m:
            continue
        parts = ", ".join(f"{k.removeprefix('model.').removeprefix('diffusion.')} {v:.1f}"
                          for k, v in bd["cpu_ms"].items() if k != "total")  # fmt: skip
        gflop = bd["flops"]["total"] / 1e9
        train = tr.get(label, {}).get("flops_per_step")
        train_s = f"{train['total'] / 1e9:.1f}" if train else "–"
        lines.append(
            f"| {label} | {m['params']['total'] / 1e6:.1f}M | {parts} (total {bd['cpu_ms']['total']:.1f}) | "
            f"{gflop:.2f} | {gflop / (bd['cpu_ms']['total'] / 1000):.0f} | {train_s} |"
        )
    return "\n".join(lines)


def fmt_params(n: int) -> str:
    return f"({n / 1e6:.1f}M)"


# ------------------------------------------------------------------------------------------------- main


def command_line() -> str:
    """How this run was started, with the interpreter relative to the repository and the niceness."""
    exe = Path(sys.executable)
    exe_s = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe)
    prefix = f"nice -n {os.nice(0)} " if os.nice(0) else ""
    return prefix + shlex.join([exe_s, *sys.argv])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "mt10", help="the v3.0 Meta-World recording")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/vlaforge-lerobot-bench"),
                   help="v2.1 export, HF cache and worker logs (outside the repository)")  # fmt: skip
    p.add_argument("--ours-python", default=str(REPO / ".venv" / "bin" / "python"))
    p.add_argument("--lerobot-python", default="/work/lerobot-venv/bin/python")
    p.add_argument("--only", default=",".join(MEASUREMENTS), help="comma list of dataset,inference,train")
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="LeRobot widths (common.SIZES)")
    p.add_argument("--repeats", type=int, default=2, help="alternating repeats of every measurement")
    p.add_argument("--batch-size", type=int, default=64, help="dataset batch size")
    p.add_argument("--workers", default="0,1", help="DataLoader worker counts")
    p.add_argument("--batches", type=int, default=4, help="timed dataset batches per repeat")
    p.add_argument("--dataset-warmup", type=int, default=1, help="untimed batches first (worker start-up)")
    p.add_argument("--no-cache-row", action="store_true", help="skip vlaforge's frame-cache row")
    p.add_argument("--threads", default="1,2", help="torch threads for inference")
    p.add_argument(
        "--runs", type=int, default=25, help="timed inference calls per repeat (pooled over repeats)"
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed inference calls per repeat")
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=3, help="timed optimizer steps per repeat")
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--table",
        action="store_true",
        help="measure nothing: print the tables of --out again (after a change to how they are written)",
    )
    args = p.parse_args(argv)
    args.only = [m for m in args.only.split(",") if m]
    unknown = sorted(set(args.only) - set(MEASUREMENTS))
    if unknown:
        p.error(f"--only: unknown measurement(s) {unknown}; choose from {list(MEASUREMENTS)}")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.repeats < 1 or args.runs < 1 or args.batches < 1 or args.train_steps < 1:
        p.error("--repeats, --runs, --batches and --train-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        result = json.loads(args.out.read_text())
        result["table"] = markdown(result)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(result["table"])
        return 0
    if not Path(args.lerobot_python).is_file():
        raise SystemExit(
            f"{args.lerobot_python} not found: create the comparison venv first (benchmarks/lerobot/README.md)"
        )
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()
    v21 = ensure_v21(args.data, work / "mt10-v2.1") if "dataset" in args.only else None
    workers = start_workers(args, work)
    log: list[Any] = []
    try:
        ours_v = workers["ours"].run({"task": "versions"})
        their_v = workers["lerobot"].run({"task": "versions"})
        if "error" in their_v:
            raise RuntimeError(f"LeRobot environment is not usable:\n{their_v['error']}")
        params = workers["lerobot"].run({"task": "params", "size": args.size})["params"]
        match = workers["ours"].run({"task": "match", "targets": {f: p["total"] for f, p in params.items()}})
        result: dict[str, Any] = {
            "schema": 1,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command_line(),
            "versions": {"vlaforge_env": ours_v["versions"], "lerobot_env": their_v["versions"]},
            "machine": ours_v["machine"],
            "settings": {
                "size": args.size,
                "lerobot_widths": SIZES[args.size],
                "repeats": args.repeats,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "batches": args.batches,
                "threads": args.threads,
                "runs": args.runs,
                "warmup": args.warmup,
                "train_batch": args.train_batch,
                "train_steps": args.train_steps,
                "train_threads": args.train_threads,
                "data": str(args.data),
                "v21_export": str(v21) if v21 else None,
            },  # fmt: skip
            "params": {
                "lerobot": params,
                "vlaforge_matched": match["matched"],
                "vlaforge_recipe": match["recipe_params"],
            },
            "not_built": NOT_BUILT,
        }
        if "dataset" in args.only:
            result["dataset"] = run_dataset(args, workers, v21, log)
        if "inference" in args.only:
            result["inference"] = run_inference(args, workers, match["matched"], log)
        if "train" in args.only:
            result["train"] = run_train(args, workers, match["matched"], log)
    finally:
        for w in workers.values():
            w.close()
    loads = [e["load_1min"] for e in log]
    result["load_average"] = {
        "start": [round(x, 2) for x in load_start],
        "end": [round(x, 2) for x in os.getloadavg()],
        "during_min": min(loads) if loads else None,
        "during_max": max(loads) if loads else None,
    }
    result["wall_s"] = round(time.time() - started, 1)
    result["log"] = log
    table = markdown(result)
    result["table"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"\nwrote {args.out} ({result['wall_s']} s; load average {result['load_average']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
