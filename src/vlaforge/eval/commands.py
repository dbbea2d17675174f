"""`vlaforge eval`: evaluate a trained run (or the scripted expert) on simulated tasks.

vlaforge eval runs/octo-mt10 --tasks mt10 --episodes 20 --execute 4 --videos 1
vlaforge eval --expert --tasks reach-v3,push-v3 --episodes 5 --safety benchmarks/safety_metaworld.json
vlaforge eval runs/pi0-mt10 --tasks mt10 --rtc --execute 4 --rtc-delay 2   # real-time chunking
vlaforge eval runs/octo-libero-goal --suite libero_goal --episodes 20      # official initial states 0..19
vlaforge eval runs/octo-mt50-lerobot --protocol lerobot                    # MT50 as lerobot-eval: 10 episodes, seeds 1000..
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any


def load_instructions(path: str | Path) -> dict[str, str]:
    """Read a JSON object {task: instruction} used to override the environments' instructions."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--instructions: file {p} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--instructions: {p} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f'--instructions: {p} must hold a JSON object {{"task-name": "instruction", ...}}')
    return data


def resolve_task_list(spec: str) -> list[str]:
    """'mt10' or 'reach-v3,push-v3' (each part may be a suite name) -> ordered unique task names."""
    from vlaforge.envs import resolve_tasks

    tasks: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if part:
            tasks.extend(resolve_tasks(part))
    if not tasks:
        raise ValueError(f"--tasks: no tasks in {spec!r}")
    return list(dict.fromkeys(tasks))


def _full_task_keys(instructions: dict[str, str], tasks: list[str]) -> dict[str, str]:
    """--instructions keys may be short ('libero_goal/3', 'push'): map them to the evaluated names."""
    out: dict[str, str] = {}
    for key, text in instructions.items():
        try:
            names = resolve_task_list(key)
        except (ValueError, ImportError):
            names = [key]
        for name in names if len(names) == 1 else [key]:
            out[name] = text
    return out


def _run(args: argparse.Namespace) -> int:
    from vlaforge import __version__
    from vlaforge.eval.expert import ExpertPolicy
    from vlaforge.eval.results import markdown_table
    from vlaforge.eval.rollout import evaluate
    from vlaforge.inference.load import check_fast_paths, dataset_choice_problem, load_policy
    from vlaforge.runtime.executor import ExecutorConfig

    if args.rtc and args.ensemble:
        raise SystemExit("vlaforge eval: choose one of --ensemble and --rtc")
    from vlaforge.envs.protocol import get_protocol

    try:
        protocol = get_protocol(args.protocol or "vlaforge")
    except ValueError as e:
        raise SystemExit(f"vlaforge eval: --protocol: {e}") from None
    if not protocol.splits and args.split is not None:
        raise SystemExit(
            f"vlaforge eval: --split does not apply to --protocol {protocol.name} (the seed draws each layout)"
        )
    if not protocol.splits and args.suite:
        raise SystemExit(f"vlaforge eval: --protocol {protocol.name} is Meta-World's; --suite is LIBERO's")
    task_spec = args.suite or args.tasks or ("mt10" if protocol.splits else "mt50")
    if args.expert:
        if args.execute is not None or args.ensemble or args.rtc:
            raise SystemExit(
                "vlaforge eval: --execute/--ensemble/--rtc do not apply to --expert (it acts one step at a time)"
            )
        factory: Any = ExpertPolicy
        if not protocol.splits:  # the expert ignores images; the camera is the protocol's, for videos
            factory = functools.partial(
                ExpertPolicy, cameras=protocol.cameras, image_size=protocol.image_size
            )
        elif task_spec.strip().lower().startswith("libero_"):
            from vlaforge.envs.make import family_of

            family = family_of(task_spec)
            factory = functools.partial(
                ExpertPolicy, cameras=family.default_cameras, action_dim=len(family.action_names)
            )
        name = "scripted expert"
        out = Path(args.out or (Path(args.run_dir) / "eval-expert" if args.run_dir else "eval-expert"))
    else:
        if not args.run_dir:
            raise SystemExit("vlaforge eval: RUN_DIR is required (or pass --expert)")
        if not Path(args.run_dir).exists():
            raise SystemExit(f"vlaforge eval: run directory {args.run_dir} does not exist")
        fast = {k: True for k in ("int8", "bf16", "compile") if getattr(args, k)}
        try:
            check_fast_paths(**fast)  # before any env or worker starts; the policy's own checks run at load
        except ValueError as e:
            raise SystemExit(f"vlaforge eval: {e}") from None
        problem = dataset_choice_problem(args.run_dir, args.dataset, "the one to act as")
        if problem:
            raise SystemExit(f"vlaforge eval: {problem}")
        chosen = {"dataset": args.dataset} if args.dataset else {}
        factory = functools.partial(load_policy, args.run_dir, **fast, **chosen)
        name = str(args.run_dir) + "".join(f" ({k})" for k in fast)
        name += f" as {args.dataset}" if args.dataset else ""
        out = Path(args.out or Path(args.run_dir) / (f"eval-{args.dataset}" if args.dataset else "eval"))

    try:
        executor = ExecutorConfig(
            mode="ensemble" if args.ensemble else "rtc" if args.rtc else "receding",
            execute=args.execute,
            ensemble_decay=args.ensemble_decay,
            rtc_delay=args.rtc_delay,
        )
    except ValueError as e:
        raise SystemExit(f"vlaforge eval: {e}") from None
    safety = None
    if args.safety:
        from vlaforge.runtime.safety import load_limits

        try:
            safety = load_limits(args.safety)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"vlaforge eval: --safety: {e}") from None
    instructions = load_instructions(args.instructions) if args.instructions else None
    from vlaforge.envs.libero.suites import LiberoNotInstalled

    try:
        tasks = resolve_task_list(task_spec)
    except (ValueError, LiberoNotInstalled) as e:
        raise SystemExit(f"vlaforge eval: {e}") from None
    if instructions:
        instructions = _full_task_keys(instructions, tasks)
    try:
        report = evaluate(
            factory,
            tasks,
            episodes=args.episodes if args.episodes is not None else protocol.episodes,
            seed0=args.seed0 if args.seed0 is not None else protocol.seed0,
            split=args.split or "eval",
            instructions=instructions,
            executor=executor,
            max_steps=args.max_steps,
            workers=args.workers,
            videos_per_task=args.videos,
            out_dir=out,
            progress=not args.no_progress,
            metadata={"policy": name, "vlaforge": __version__},
            safety=safety,
            protocol=args.protocol and protocol.name,
        )
    except (ValueError, LiberoNotInstalled) as e:  # a user's mismatch or a bad checkpoint: one line
        raise SystemExit(f"vlaforge eval: {e}") from None
    print()
    print(markdown_table(report))
    for kind, path in report.files.items():
        print(f"{kind:>9}: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained policy (or the scripted expert) in simulation",
        description="Roll out a policy on fixed seeds of the eval split; write eval.json, eval.md, "
        "a success chart and videos.",
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="training run directory or checkpoint")
    p.add_argument(
        "--tasks",
        default=None,
        help="suite (mt10, mt50, a difficulty group easy|medium|hard|very_hard) or comma-separated task names "
        "(default mt10; mt50 with --protocol lerobot)",
    )
    p.add_argument(
        "--protocol",
        default=None,
        metavar="NAME",
        help="Meta-World protocol: vlaforge (default: disjoint eval layouts, seeds 0.., 20 episodes) or lerobot "
        "(lerobot-eval's: camera corner2, seeds 1000.. draw the layouts, its task texts, 10 episodes); "
        "see docs/metaworld.md",
    )
    p.add_argument(
        "--suite",
        default=None,
        help="LIBERO suite (libero_goal, libero_spatial, libero_object, libero_10, libero_goal_lan, ...) or "
        "tasks (libero_goal/3); episode k uses official initial state k",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="episodes per task (default 20; 10 with --protocol lerobot)",
    )
    p.add_argument(
        "--seed0",
        type=int,
        default=None,
        help="first seed; episodes use seed0 .. seed0+episodes-1 (default 0; 1000 with --protocol lerobot)",
    )
    p.add_argument(
        "--split", default=None, choices=["eval", "train"], help="env configurations (default eval)"
    )
    p.add_argument(
        "--instructions", metavar="FILE", help='JSON {"task": "instruction"} overriding instructions'
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--execute", type=int, metavar="K", help="receding horizon: execute K actions per chunk"
    )
    mode.add_argument("--ensemble", action="store_true", help="ACT temporal ensembling (re-plan every step)")
    p.add_argument("--ensemble-decay", type=float, default=0.01, help="m in w_i = exp(-m i), i=0 oldest")
    p.add_argument(
        "--rtc",
        action="store_true",
        help="real-time chunking (flow/diffusion heads): each chunk continues the previous one; "
        "re-plan every --execute K ticks (default H/2)",
    )
    p.add_argument(
        "--rtc-delay", type=int, default=1, metavar="D", help="RTC inference delay in ticks (frozen actions)"
    )
    p.add_argument(
        "--safety", metavar="FILE", help="JSON SafetyLimits: filter every action, report interventions"
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="episode step limit, at most the env's (default: the env's)",
    )
    p.add_argument("--videos", type=int, default=1, help="videos recorded per task (default 1)")
    p.add_argument("--out", default=None, help="output directory (default RUN_DIR/eval)")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes, each with its own policy and env"
    )
    p.add_argument("--expert", action="store_true", help="evaluate the scripted expert instead of a policy")
    p.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="a cross-embodiment policy's dataset to act as (its action size, statistics, rate, cameras)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="dynamic int8 quantization of the transformer and head Linear layers (CPU fast path)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="transformer weights in bfloat16 (fast on CPUs with AMX / AVX512-BF16 and on GPUs)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the policy's per-chunk networks first (octo-family, π0 / π0.5)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
