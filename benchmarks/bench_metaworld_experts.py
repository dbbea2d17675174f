"""Success of Meta-World's scripted experts on an evaluation protocol, per task and per difficulty group.

    python benchmarks/bench_metaworld_experts.py --protocol lerobot --tasks mt50 --episodes 10
    python benchmarks/bench_metaworld_experts.py --protocol lerobot --tasks hard --episodes 5 --no-save

The expert is evaluated by `vlaforge.eval.evaluate` exactly as a policy is (`vlaforge eval --expert`):
same envs, seeds, step limit and success rule; it reads the simulator's state, so nothing is rendered.
This is the ceiling a policy trained on the experts' demonstrations can reach on the protocol, and the
check that the protocol's envs, seeds and success rule are right. Results go to
benchmarks/results/metaworld_experts_<protocol>.json (per task: successes, failed seeds, mean length;
per group; the command and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="lerobot", help="vlaforge | lerobot (default lerobot)")
    ap.add_argument("--tasks", default="mt50", help="mt50, mt10, a difficulty group or task names")
    ap.add_argument("--episodes", type=int, default=None, help="per task (default: the protocol's)")
    ap.add_argument("--seed0", type=int, default=None, help="first seed (default: the protocol's)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--out", default=None, help="also write eval.json / eval.md there (default data/experts-<protocol>)"
    )
    ap.add_argument("--no-save", action="store_true", help="print only; do not write the results JSON")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import functools

    from vlaforge.envs import resolve_tasks
    from vlaforge.envs.protocol import get_protocol
    from vlaforge.eval.expert import ExpertPolicy
    from vlaforge.eval.results import markdown_table
    from vlaforge.eval.rollout import evaluate
    from vlaforge.info import json_safe, machine_info

    protocol = get_protocol(args.protocol)
    expert = functools.partial(ExpertPolicy, cameras=protocol.cameras, image_size=protocol.image_size)
    started = time.perf_counter()
    report = evaluate(
        expert,
        resolve_tasks(args.tasks),
        episodes=args.episodes or protocol.episodes,
        seed0=protocol.seed0 if args.seed0 is None else args.seed0,
        workers=args.workers,
        videos_per_task=0,
        out_dir=args.out or f"data/experts-{protocol.name}",
        metadata={"policy": "scripted expert (metaworld.policies)"},
        protocol=protocol.name,
    )
    print(markdown_table(report))
    worst = sorted(report.tasks, key=lambda t: t.rate)[:8]
    print("worst tasks: " + ", ".join(f"{t.task} {t.successes}/{t.episodes}" for t in worst))
    print(f"wall {time.perf_counter() - started:.0f} s")
    if args.no_save:
        return 0
    data = report.to_json()
    out = {
        "command": "python " + " ".join(sys.argv),
        "protocol": protocol.name,
        "episodes_per_task": report.config["episodes"],
        "seeds": report.config["seeds"],
        "overall": data["overall"],
        "groups": data.get("groups"),
        "tasks": {
            name: {
                "successes": t["successes"],
                "episodes": t["episodes"],
                "rate": t["rate"],
                "mean_length": t["mean_length"],
                "failed_seeds": [e.seed for e in report.episodes if e.task == name and not e.success],
                "instruction": t["instruction"],
            }
            for name, t in data["tasks"].items()
        },
        "wall_s": report.config["wall_s"],
        "machine": machine_info(),
    }
    path = RESULTS / f"metaworld_experts_{protocol.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(out), indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
