"""LIBERO environment speed: build time, physics, rendering, and a full control step.

    OMP_NUM_THREADS=1 python benchmarks/bench_libero_env.py            # ~2 min; results/libero_env.json

Side by side in one run, on the same task and official initial state, 128x128 frames:
  - robosuite's own renderer (`OffScreenRenderEnv`, what openpi / LeRobot evaluations build) at 128 px;
  - physics alone: robosuite's step loop, and ours without its redundant forward pass (physics="fast");
  - ours with the full meshes and with decimated meshes (`mesh_cells`), both cameras every step;
  - ours as an evaluation uses it: frames rendered only when read, here every 5th step (openpi
    replans every 5 actions), the rest physics only.
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
    start = time.perf_counter()
    for t in range(steps):
        obs, *_ = env.step(_wiggle(t))
        if t % every == 0:
            for name in env.cameras:
                obs.images[name]  # noqa: B018  (render now)
    per_step = (time.perf_counter() - start) / steps
    env.close()
    return {"build_s": build, "step_ms": 1000 * per_step, "faces": env.mesh_stats}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="libero_goal/put_the_bowl_on_the_plate")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    from vlaforge.info import machine_info

    rows: dict[str, dict] = {}
    rows["robosuite OffScreenRenderEnv, 2 cameras every step"] = robosuite_default(
        args.task, max(20, args.steps // 4)
    )
    for physics in ("robosuite", "fast"):
        rows[f"ours, physics only (no frames), physics={physics}"] = {
            "step_ms": physics_only(args.task, args.steps, physics)
        }
    rows["ours, full meshes, 2 cameras every step"] = ours(args.task, args.steps, None, 1)
    for cells in (16, 24):
        rows[f"ours, meshes decimated (cells={cells}), 2 cameras every step"] = ours(
            args.task, args.steps, cells, 1
        )
    rows["ours, decimated (cells=16), frames read every 5th step"] = ours(args.task, args.steps, 16, 5)
    load = os.getloadavg()[0]
    print(f"task {args.task}, {args.steps} steps, 128x128, LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')}, "
          f"1-min load {load:.2f}")  # fmt: skip
    print("| configuration | ms per control step | env build (s) |\n|---|---:|---:|")
    for name, r in rows.items():
        build = f"{r['build_s']:.1f}" if "build_s" in r else ""
        print(f"| {name} | {r['step_ms']:.1f} | {build} |")
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "task": args.task,
                                       "load_1min": load, "machine": machine_info(), "rows": rows}, indent=2,
                                      default=str) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
