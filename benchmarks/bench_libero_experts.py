"""Success of the scripted LIBERO experts on the official initial states, per task (no rendering).

    python benchmarks/bench_libero_experts.py --suites libero_goal,libero_spatial,libero_object --episodes 50
    python benchmarks/bench_libero_experts.py --tasks libero_goal/turn_on_the_stove --episodes 5 --verbose

Each episode resets to official initial state k (k = 0 .. episodes-1), runs the expert for the
suite's step limit (after the 10 settling steps) and counts success as the BDDL goal holding at
any step (as evaluation does: it stops at the first success). Results go to
benchmarks/results/libero_experts.json (merged per task, so suites can be run separately; each task's
row records the command that measured it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "libero_experts.json"


def run_task(task: str, episodes: int, split: str, verbose: bool) -> dict:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vlaforge.envs.libero.env import LiberoEnv
    from vlaforge.envs.record import run_expert_episode

    env = LiberoEnv(task, split=split, cameras=("image",), image_size=32)
    env.render_images = False
    outcomes, lengths, phases = [], [], []
    start = time.perf_counter()
    try:
        for k in range(episodes):
            result = run_expert_episode(env, k, steps_after_success=0, keep_frames=False)
            outcomes.append(result.success)
            lengths.append(result.length)
            phases.append(env._expert.phase if env._expert is not None else "?")
            if verbose:
                state = "ok " if result.success else "FAIL"
                print(f"{task} seed {k}: {state} steps {result.length} phase {phases[-1]}", flush=True)
    finally:
        env.close()
    return {
        "task": task,
        "split": split,
        "episodes": episodes,
        "successes": int(sum(outcomes)),
        "success_rate": sum(outcomes) / max(1, episodes),
        "mean_steps_success": (sum(n for n, s in zip(lengths, outcomes) if s) / max(1, sum(outcomes))),
        "failed_seeds": [k for k, s in enumerate(outcomes) if not s],
        "failed_phases": [p for p, s in zip(phases, outcomes) if not s],
        "seconds": time.perf_counter() - start,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="", help="comma-separated suites, e.g. libero_goal,libero_spatial")
    ap.add_argument("--tasks", default="", help="comma-separated tasks (suite/name or suite/index)")
    ap.add_argument("--episodes", type=int, default=50, help="official initial states 0..N-1 per task")
    ap.add_argument("--split", default="eval", choices=["eval", "train"], help="eval = official states")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--no-save", action="store_true", help="do not write results/libero_experts.json")
    args = ap.parse_args()
    from vlaforge.envs.libero.suites import resolve_libero

    tasks: list[str] = []
    for spec in [s for s in (args.suites + "," + args.tasks).split(",") if s.strip()]:
        tasks += resolve_libero(spec)
    if not tasks:
        ap.error("give --suites or --tasks")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    if args.workers <= 1:
        rows = [run_task(t, args.episodes, args.split, args.verbose) for t in tasks]
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(run_task, tasks, [args.episodes] * len(tasks), [args.split] * len(tasks),
                                 [args.verbose] * len(tasks)))  # fmt: skip
    by_suite: dict[str, list[dict]] = {}
    for r in rows:
        by_suite.setdefault(r["task"].split("/")[0], []).append(r)
        print(f"{r['task']:<75} {r['successes']:>3}/{r['episodes']:<3} {100 * r['success_rate']:5.1f} %  "
              f"failed {r['failed_seeds'][:10]} {sorted(set(r['failed_phases']))}")  # fmt: skip
    for suite, rs in by_suite.items():
        n, s = sum(r["episodes"] for r in rs), sum(r["successes"] for r in rs)
        print(
            f"{suite}: {s}/{n} = {100 * s / n:.1f} %  (worst task {min(100 * r['success_rate'] for r in rs):.0f} %)"
        )
    print(f"wall {time.perf_counter() - started:.0f} s")
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"tasks": {}}
        command = "python " + " ".join(sys.argv)
        for r in rows:
            data["tasks"][r["task"]] = {**r, "command": command}  # rows of earlier runs keep their own
        data["command"] = command  # the latest run's
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
