"""π0 at its real size, vlaforge vs LeRobot 0.3.2: latency of one 50-action chunk on this machine.

    nice -n 5 .venv/bin/python benchmarks/lerobot/pi0.py                      # bf16 both sides, 2 threads
    nice -n 5 .venv/bin/python benchmarks/lerobot/pi0.py --threads 1,2 --ours-dtypes bfloat16,float32

LeRobot's `PI0FlowMatching` (PaliGemma-3B + 300M expert, hard-coded sizes, bf16 as LeRobot builds it)
runs in /work/lerobot-venv (`lerobot_side.py`, task "pi0"); our `pi0` recipe (the same published shapes)
in this venv (`ours.py`, task "pi0"). Random weights on both sides. The two ~7 GB models never share the
machine: each measurement is a fresh process that builds its model, times it and exits, one after the
other (sides alternate across --repeats). Same work per call: two cameras at 224 px (256 SigLIP tokens
each), 48 prompt positions, the state padded to 32, prefix into a KV cache, 10 Euler steps of the expert,
50 actions. LeRobot's side is timed at the model (`sample_actions` on prepared tensors: its policy wrapper
needs a hub tokenizer); ours is the whole `Policy.predict` from uint8 frames, which also resizes,
tokenizes and normalizes, so the ratio slightly favours LeRobot.

Writes benchmarks/results/lerobot_pi0.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from run import Worker  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "lerobot_pi0.json"
TARGET = 0.5  # issue: our pi0 at the same size at most half of LeRobot's chunk latency


def side_env(lerobot: bool, work: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    env.update({"TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"})
    if lerobot:
        env.update(
            PYTHONPATH=str(
                HERE / "torchvision_stub"
            ),  # LeRobot imports torchvision; the stand-in, see README
            HF_HUB_OFFLINE="1",
            HF_HOME=str(work / "hf_home"),
        )
    return env


def measure(name: str, args: argparse.Namespace, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    lerobot = name == "lerobot"
    python, script = (args.lerobot_python, "lerobot_side.py") if lerobot else (args.ours_python, "ours.py")
    threads = max(spec["threads"])
    label = name if lerobot else f"ours-{spec['dtype']}"
    worker = Worker(label, python, HERE / script, side_env(lerobot, work, threads), work / f"{label}.log")
    t0 = time.perf_counter()
    try:
        out = worker.run(spec)
    finally:
        worker.close()
    out["process_s"] = round(time.perf_counter() - t0, 1)
    print(f"  {label}: {summarize(out)}", flush=True)
    return out


def summarize(out: dict[str, Any]) -> str:
    if "error" in out:
        return "failed: " + out["error"].strip().splitlines()[-1]
    per = ", ".join(f"{t} thr {v['median_ms'] / 1000:.2f} s" for t, v in out["threads"].items())
    return f"{out['params']['without_token_embedding'] / 1e9:.2f}B (+ embedding), build {out['build_s']} s; {per}"


def pooled(outs: list[dict[str, Any]], threads: str) -> dict[str, Any] | None:
    wall = [s for o in outs if "error" not in o for s in o["threads"][threads]["seconds"]]
    cpu = [s for o in outs if "error" not in o for s in o["threads"][threads]["cpu_seconds"]]
    if not wall:
        return None
    return {
        "n": len(wall),
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "cpu_median_s": statistics.median(cpu),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| threads | LeRobot π0 (bf16) s/chunk | " + " | ".join(f"vlaforge pi0 ({d}) s/chunk | ratio" for d in result["ours_dtypes"]) + " | target |",
        "|---:|---:|" + "---:|---:|" * len(result["ours_dtypes"]) + "---|",
    ]  # fmt: skip
    for t in result["threads"]:
        theirs = result["pooled"]["lerobot"].get(str(t))
        cells = [str(t), f"{theirs['median_s']:.2f}" if theirs else "failed"]
        for d in result["ours_dtypes"]:
            ours = result["pooled"][f"ours-{d}"].get(str(t))
            cells.append(f"{ours['median_s']:.2f}" if ours else "failed")
            cells.append(f"{ours['median_s'] / theirs['median_s']:.2f}×" if ours and theirs else "–")
        cells.append(f"≤ {TARGET}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="2", help="torch thread counts, e.g. 1,2 (default 2)")
    p.add_argument("--runs", type=int, default=5, help="timed chunks per thread count and process")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="processes per side (sides alternate)")
    p.add_argument("--ours-dtypes", default="bfloat16", help="bfloat16 and/or float32 for our side")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument(
        "--prompt-tokens", type=int, default=8, help="real (unpadded) prompt tokens on LeRobot's side"
    )
    p.add_argument(
        "--sides",
        default="lerobot,ours",
        help="which sides to measure now; a side left out keeps its results from --out (e.g. after a fix)",
    )
    p.add_argument("--ours-python", default=str(REPO / ".venv" / "bin" / "python"))
    p.add_argument("--lerobot-python", default="/work/lerobot-venv/bin/python")
    p.add_argument("--work-dir", default="/tmp/vlaforge-lerobot-pi0")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    dtypes = [d.strip() for d in args.ours_dtypes.split(",") if d.strip()]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    base = {"task": "pi0", "threads": threads, "runs": args.runs, "warmup": args.warmup, "seed": 0}
    sides = ["lerobot", *(f"ours-{d}" for d in dtypes)]
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    wanted = {s.strip() for s in args.sides.split(",")}
    now = [s for s in sides if s.split("-")[0] in wanted]
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for side in sides:
        if side not in now:
            raw[side] = previous.get("raw", {}).get(side, [])
            print(f"  {side}: kept from {args.out} ({len(raw[side])} process(es))")
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    for r in range(args.repeats):
        order = now[r % len(now) :] + now[: r % len(now)] if now else []
        for side in order:
            if side == "lerobot":
                spec = {**base, "cameras": args.cameras, "prompt_tokens": args.prompt_tokens}
                raw[side].append(measure("lerobot", args, spec, work))
            else:
                raw[side].append(measure("ours", args, {**base, "dtype": side.removeprefix("ours-")}, work))
            load.append(os.getloadavg()[0])
    result: dict[str, Any] = {
        "schema": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "commands_before": previous.get("commands_before", []) + [previous["command"]]
        if previous and set(now) != set(sides)
        else [],
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "threads": threads,
        "ours_dtypes": dtypes,
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "cameras": args.cameras,
        },
        "raw": raw,
        "pooled": {s: {str(t): pooled(raw[s], str(t)) for t in threads} for s in sides},
        "load_average_1min": [round(x, 2) for x in load],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    result["table"] = markdown(result)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("\n" + result["table"] + f"\n\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
