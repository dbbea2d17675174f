"""LIBERO environment speed: build time, physics, rendering, and a full control step.

    OMP_NUM_THREADS=1 python benchmarks/bench_libero_env.py            # ~6 min; results/libero_env.json

Side by side in one run, on the same task and official initial state, 128x128 frames:
  - robosuite's own renderer (`OffScreenRenderEnv`, what openpi / LeRobot evaluations build) at 128 px;
  - physics alone: robosuite's step loop, and ours without its redundant forward passes (physics="fast");
  - ours with the full meshes and with decimated meshes (`mesh_cells`), both cameras every step, with
    llvmpipe rasterising in the drawing thread (LP_NUM_THREADS=0, our default) or in its own helper
    threads (Mesa's default: one per core);
  - ours as an evaluation uses it: frames rendered only when read, here every 5th step (openpi
    replans every 5 actions), the rest physics only.
Each of our configurations runs in its own process (LP_NUM_THREADS is read when the GL driver starts),
`--repeats` times, interleaved; the table shows medians and CPU time of all the process's threads.
The target of the LIBERO issue is <= 30 ms per control step with two 128 px cameras.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "libero_env.json"
ACTION = np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])


def _wiggle(t: int) -> np.ndarray:
    a = ACTION.copy()
    a[0] = 0.3 * np.sin(t / 7.0)
    a[1] = 0.3 * np.cos(t / 9.0)
    return a


def ours(task: str, steps: int, mesh_cells: int | None, every: int) -> dict:
    from vlaforge.envs.libero.env import LiberoEnv

    t0 = time.perf_counter()
    env = LiberoEnv(task, split="eval", mesh_cells=mesh_cells)
    build = time.perf_counter() - t0
    env.reset(0)
    for t in range(5):  # warm up GL
        dict(env.step(_wiggle(t))[0].images)
    start, cpu = time.perf_counter(), time.process_time()
    for t in range(steps):
        obs, *_ = env.step(_wiggle(t))
        if t % every == 0:
            for name in env.cameras:
                obs.images[name]  # noqa: B018  (render now)
    per_step = (time.perf_counter() - start) / steps
    cpu_per_step = (time.process_time() - cpu) / steps  # all threads of the process, llvmpipe's too
    env.close()
    return {
        "build_s": build,
        "step_ms": 1000 * per_step,
        "cpu_ms": 1000 * cpu_per_step,
        "faces": env.mesh_stats,
    }


def physics_only(task: str, steps: int, physics: str) -> float:
    from vlaforge.envs.libero.env import LiberoEnv

    env = LiberoEnv(task, split="eval", cameras=("image",), image_size=32, physics=physics)
    env.render_images = False
    env.reset(0)
    start = time.perf_counter()
    for t in range(steps):
        env.step(_wiggle(t))
    env.close()
    return 1000 * (time.perf_counter() - start) / steps


def robosuite_default(task: str, steps: int) -> dict:
    import contextlib
    import io

    from libero.libero.envs import OffScreenRenderEnv

    from vlaforge.envs.libero.suites import get_task, load_init_states

    spec = get_task(task)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        env = OffScreenRenderEnv(bddl_file_name=spec.bddl_file, camera_heights=128, camera_widths=128)
        env.seed(0)
        env.reset()
    build = time.perf_counter() - t0
    env.set_init_state(load_init_states(spec)[0])
    for t in range(3):
        env.step(_wiggle(t))
    start = time.perf_counter()
    for t in range(steps):
        env.step(_wiggle(t))
    per_step = (time.perf_counter() - start) / steps
    env.close()
    return {"build_s": build, "step_ms": 1000 * per_step}


# (row name, mesh cells, read frames every k-th step, LP_NUM_THREADS)
CONFIGS = [
    ("ours, full meshes, 2 cameras every step", None, 1, "0"),
    ("ours, decimated (cells=24), 2 cameras every step", 24, 1, "0"),
    (
        "ours, decimated (cells=16), 2 cameras every step, llvmpipe's raster threads (Mesa's default)",
        16,
        1,
        "2",
    ),
    ("ours, decimated (cells=16), 2 cameras every step (default)", 16, 1, "0"),
    ("ours, decimated (cells=16), frames read every 5th step (default)", 16, 5, "0"),
]


def _child(task: str, steps: int, cells: int | None, every: int, lp_threads: str) -> dict:
    """One configuration in a fresh process: LP_NUM_THREADS is read when the GL driver starts."""
    import subprocess

    arg = json.dumps([task, steps, cells, every])
    env = {**os.environ, "LP_NUM_THREADS": lp_threads, "MUJOCO_GL": "egl"}
    out = subprocess.run([sys.executable, __file__, "--child", arg], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"configuration {arg} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: dict[str, dict], repeats: int) -> str:
    """The Markdown table of `rows`: medians, and the range over the runs where there were several."""
    lines = [
        f"| configuration | ms per control step (median of {repeats}, range) | CPU ms per step (all threads) | env build (s) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        runs = [x["step_ms"] for x in r.get("runs", [])]
        spread = f" ({min(runs):.1f}–{max(runs):.1f})" if len(runs) > 1 else ""
        cpu = f"{r['cpu_ms']:.1f}" if "cpu_ms" in r else ""
        build = f"{r['build_s']:.1f}" if "build_s" in r else ""
        lines.append(f"| {name} | {r['step_ms']:.1f}{spread} | {cpu} | {build} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="libero_goal/put_the_bowl_on_the_plate")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument(
        "--repeats", type=int, default=5, help="runs of each of our configurations, interleaved; medians"
    )
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--table", metavar="JSON", help="print the table of a saved result and exit")
    args = ap.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(saved["command"], f"(1-min load {saved['load_1min']:.2f})")
        print(table(saved["rows"], saved.get("repeats", 1)))
        return 0
    if args.child:
        print(json.dumps(ours(*json.loads(args.child)), default=str))
        return 0
    from vlaforge.info import machine_info

    rows: dict[str, dict] = {}
    rows["robosuite OffScreenRenderEnv, 2 cameras every step"] = robosuite_default(
        args.task, max(20, args.steps // 4)
    )
    for physics in ("robosuite", "fast"):
        times = [physics_only(args.task, args.steps, physics) for _ in range(args.repeats)]
        rows[f"ours, physics only (no frames), physics={physics}"] = {
            "step_ms": float(np.median(times)),
            "runs": [{"step_ms": t} for t in times],
        }
    runs: dict[str, list[dict]] = {name: [] for name, *_ in CONFIGS}
    for _ in range(args.repeats):  # interleaved, so that a noisy minute hits every configuration
        for name, cells, every, lp in CONFIGS:
            runs[name].append(_child(args.task, args.steps, cells, every, lp))
    for name, results in runs.items():
        rows[name] = {
            "step_ms": float(np.median([r["step_ms"] for r in results])),
            "cpu_ms": float(np.median([r["cpu_ms"] for r in results])),
            "build_s": float(np.median([r["build_s"] for r in results])),
            "runs": results,
        }
    load = os.getloadavg()[0]
    print(f"task {args.task}, {args.steps} steps, 128x128, medians of {args.repeats} runs of ours, "
          f"1-min load {load:.2f}")  # fmt: skip
    print(table(rows, args.repeats))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "task": args.task,
                                       "repeats": args.repeats, "load_1min": load, "machine": machine_info(), "rows": rows}, indent=2,
                                      default=str) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
