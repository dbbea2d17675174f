"""Cost of recording Meta-World demonstrations: rendering, stepping, episodes, and an MT10 x 50 estimate.

    .venv/bin/python benchmarks/bench_record.py                      # ~2.5 min on 2 cores
    .venv/bin/python benchmarks/bench_record.py --episodes-per-task 5
    .venv/bin/python benchmarks/bench_record.py --full --workers 2   # also records MT10 x 50 for real

Measured in one process, side by side:

  render      one 128x128 `corner` frame: gymnasium's default path (env.render(), shadows, reflections,
              4x multisampling) vs vlaforge's CameraRenderer (all off, low-level MuJoCo calls) -> ratio
  step        env steps/s with the expert: physics only, and with both cameras rendered
  episodes    scripted-expert episodes per task (in-process): success, length, seconds
  encode      DatasetWriter seconds per frame for those episodes (h264, both cameras)
  estimate    wall time of `vlaforge record --tasks mt10 --episodes-per-task 50` with --workers W:
              (rollout CPU-s / success rate + encode CPU-s) / min(W + 1, cores) + per-worker env setup
  measured    record() itself with W workers at k and 2k episodes per task (--sample-episodes k):
              the difference gives the marginal wall time per episode without start-up costs, and
              wall(k) + marginal x (50 - k) x tasks extrapolates the full recording
  full        (--full) that recording, timed

Writes benchmarks/results/record.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # as in the recorder's workers

import numpy as np  # noqa: E402

from vlaforge.envs.record import dataset_features, record, run_expert_episode, summary_path  # noqa: E402
from vlaforge.envs.tasks import resolve_tasks  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "record.json"


def _time_per_call(fn, n: int) -> float:
    fn()  # warm-up (first frame compiles shaders / uploads meshes)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def bench_render(size: int, n: int) -> dict:
    import metaworld.env_dict
    from metaworld.policies import ENV_POLICY_MAP

    from vlaforge.envs.configs import task_configs
    from vlaforge.envs.render import CameraRenderer

    task = "pick-place-v3"
    cls = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]
    default = cls(render_mode="rgb_array", camera_name="corner", width=size, height=size)
    default.set_task(task_configs(task)[0])
    obs, _ = default.reset()
    expert = ENV_POLICY_MAP[task]()
    for _ in range(30):  # move the arm into a typical pose
        obs = default.step(np.clip(expert.get_action(obs), -1, 1))[0]
    default_s = _time_per_call(default.render, n)

    fast_env = cls()  # a separate model: CameraRenderer switches multisampling off in place
    fast_env.set_task(task_configs(task)[0])
    fast_env.reset()
    fast_env.data.qpos[:] = default.data.qpos
    import mujoco

    mujoco.mj_forward(fast_env.model, fast_env.data)
    renderer = CameraRenderer(fast_env.model, {"corner": (size, size), "gripper": (size, size)})
    fast_s = _time_per_call(lambda: renderer.render(fast_env.data, "corner"), n)
    gripper_s = _time_per_call(lambda: renderer.render(fast_env.data, "gripper"), n)
    renderer.close()
    default.close()
    fast_env.close()
    return {
        "image": f"{size}x{size}",
        "default_ms": round(default_s * 1e3, 2),
        "vlaforge_corner_ms": round(fast_s * 1e3, 2),
        "vlaforge_gripper_ms": round(gripper_s * 1e3, 2),
        "speedup": round(default_s / fast_s, 1),
    }


def bench_steps(size: int, n: int) -> dict:
    from vlaforge.envs.metaworld_env import make_env

    with make_env("pick-place", image_size=size) as env:
        env.reset(0)
        raw = env._env  # physics only: Meta-World's own step, no rendering
        physics_s = _time_per_call(lambda: raw.step(env.expert_action()), n)
        env.reset(0)
        full_s = _time_per_call(lambda: env.step(env.expert_action()), n)
    return {
        "physics_steps_per_s": round(1 / physics_s, 1),
        "steps_per_s_two_cameras": round(1 / full_s, 1),
        "ms_per_step_two_cameras": round(full_s * 1e3, 2),
    }


def bench_episodes(tasks: list[str], per_task: int, size: int, work: Path) -> tuple[list[dict], dict]:
    from vlaforge.data import DatasetWriter
    from vlaforge.envs.metaworld_env import make_env

    rows, kept = [], []
    for task in tasks:
        t0 = time.perf_counter()
        env = make_env(task, image_size=size)
        setup_s = time.perf_counter() - t0
        results = [run_expert_episode(env, seed) for seed in range(per_task)]
        env.close()
        ok = [r for r in results if r.success]
        kept += ok
        rows.append(
            {
                "task": task,
                "episodes": len(results),
                "success_rate": len(ok) / len(results),
                "mean_length": round(float(np.mean([r.length for r in results])), 1),
                "mean_s": round(float(np.mean([r.seconds for r in results])), 3),
                "setup_s": round(setup_s, 2),
            }
        )
        print(
            f"  {task:28s} success {len(ok)}/{len(results)}  len {rows[-1]['mean_length']:6.1f}  "
            f"{rows[-1]['mean_s']:.2f} s/episode",
            flush=True,
        )
    features = dataset_features(("corner", "gripper"), (size, size))
    frames = sum(r.length for r in kept)
    t0 = time.perf_counter()
    with DatasetWriter(work / "encode", fps=80.0, features=features, robot_type="sawyer") as writer:
        for r in kept:
            writer.add_episode(r.frames, task=r.instruction)
    encode_s = time.perf_counter() - t0
    return rows, {"frames": frames, "s_per_frame": encode_s / max(frames, 1), "total_s": round(encode_s, 2)}


def estimate(rows: list[dict], encode: dict, episodes_per_task: int, workers: int) -> dict:
    """MT10 x N wall time from the per-episode costs, with the recorder's retries and parallelism."""
    cores = os.cpu_count() or 1
    rollout = sum(r["mean_s"] * episodes_per_task / max(r["success_rate"], 1e-3) for r in rows)
    mean_len = np.mean([r["mean_length"] for r in rows])
    encode_s = encode["s_per_frame"] * mean_len * episodes_per_task * len(rows)
    setup = sum(r["setup_s"] for r in rows) / max(workers, 1) + 3.0  # + worker start (imports, EGL)
    parallel = min(workers + 1, cores) if workers > 0 else 1
    wall = (rollout + encode_s) / parallel + setup
    return {
        "episodes": episodes_per_task * len(rows),
        "workers": workers,
        "cores": cores,
        "rollout_cpu_s": round(rollout, 1),
        "encode_cpu_s": round(encode_s, 1),
        "estimated_wall_s": round(wall, 1),
        "estimated_wall_min": round(wall / 60, 1),
    }


def measure(tasks: list[str], k: int, target: int, workers: int, size: int) -> dict:
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (k, 2 * k):
            t0 = time.perf_counter()
            record(tasks, n, Path(tmp) / f"sample{n}", workers=workers, image_size=size, progress=False)
            walls.append(time.perf_counter() - t0)
    marginal = (walls[1] - walls[0]) / (k * len(tasks))
    wall = walls[0] + marginal * (target - k) * len(tasks)
    return {
        "workers": workers,
        "wall_s_k": round(walls[0], 1),
        "wall_s_2k": round(walls[1], 1),
        "marginal_s_per_episode": round(marginal, 3),
        "extrapolated_wall_s": round(wall, 1),
        "extrapolated_wall_min": round(wall / 60, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mt10")
    p.add_argument(
        "--episodes-per-task", type=int, default=2, help="episodes per task for the per-episode figures"
    )
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--target-episodes", type=int, default=50, help="episodes per task of the estimated recording"
    )
    p.add_argument(
        "--sample-episodes", type=int, default=3, help="k for the measured extrapolation (0: skip)"
    )
    p.add_argument("--full", action="store_true", help="also run the full recording and time it")
    p.add_argument("--out", default=None, help="dataset directory for --full (default: a temporary one)")
    args = p.parse_args(argv)
    tasks = resolve_tasks(args.tasks)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/bench_record.py", *sys.argv[1:]])
    load = os.getloadavg()[0]
    print(f"$ {command}\n  cores {os.cpu_count()}, load average {load:.2f} at start")

    render = bench_render(args.image_size, n=30)
    print(
        f"render {render['image']} corner: default {render['default_ms']} ms, vlaforge "
        f"{render['vlaforge_corner_ms']} ms (gripper {render['vlaforge_gripper_ms']} ms) -> {render['speedup']}x"
    )
    steps = bench_steps(args.image_size, n=200)
    print(
        f"step: physics {steps['physics_steps_per_s']}/s, with 2 cameras {steps['steps_per_s_two_cameras']}/s "
        f"({steps['ms_per_step_two_cameras']} ms)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        print(f"episodes ({args.episodes_per_task} per task, in-process):")
        rows, encode = bench_episodes(tasks, args.episodes_per_task, args.image_size, Path(tmp))
    print(
        f"encode: {encode['s_per_frame'] * 1e3:.2f} ms/frame (2 cameras, h264) over {encode['frames']} frames"
    )
    est = estimate(rows, encode, args.target_episodes, args.workers)
    print(
        f"estimate {args.tasks} x {args.target_episodes} with {args.workers} workers on {est['cores']} cores: "
        f"rollout {est['rollout_cpu_s']} CPU-s + encode {est['encode_cpu_s']} CPU-s -> "
        f"~{est['estimated_wall_min']} min"
    )

    measured = None
    if args.sample_episodes > 0:
        measured = measure(tasks, args.sample_episodes, args.target_episodes, args.workers, args.image_size)
        print(
            f"measured record(): {measured['wall_s_k']} s for {args.sample_episodes}/task, "
            f"{measured['wall_s_2k']} s for {2 * args.sample_episodes}/task -> "
            f"{measured['marginal_s_per_episode']} s/episode -> ~{measured['extrapolated_wall_min']} min"
        )

    full = None
    if args.full:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "mt10"
        t0 = time.perf_counter()
        root = record(
            tasks, args.target_episodes, out, workers=args.workers, image_size=args.image_size, overwrite=True
        )
        wall = time.perf_counter() - t0
        summary = json.loads(summary_path(root).read_text())
        full = {k: summary[k] for k in ("episodes", "frames", "attempts", "incomplete_tasks")}
        full.update(wall_s=round(wall, 1), wall_min=round(wall / 60, 1), dataset=str(root))
        print(
            f"full: {full['episodes']} episodes, {full['frames']} frames, {full['attempts']} attempts in "
            f"{full['wall_min']} min -> {root}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": command,
                "cores": os.cpu_count(),
                "load_average_at_start": round(load, 2),
                "render": render,
                "steps": steps,
                "episodes": rows,
                "encode": encode,
                "estimate": est,
                "measured": measured,
                "full": full,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
