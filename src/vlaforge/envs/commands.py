"""`vlaforge record`: scripted-expert demonstrations -> a LeRobot dataset; `vlaforge libero list`;
`vlaforge dataset add-subtasks` (Meta-World phase labels, added to data/commands.py's `dataset` group)."""

from __future__ import annotations

import argparse
import json
import sys

from vlaforge.data.commands import dataset_subcommands


def _image_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--image-size: expected N or HxW, got {text!r}") from e
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"--image-size: expected N or HxW, got {text!r}")
    return parts[0], parts[1]


def _record(args: argparse.Namespace) -> int:
    from vlaforge.envs.libero.suites import LiberoNotInstalled
    from vlaforge.envs.record import ExpertFailed, record, summary_path

    if bool(args.tasks) == bool(args.suite):
        print(
            "error: give one of --tasks (Meta-World: mt10, reach,push) or --suite (LIBERO)", file=sys.stderr
        )
        return 2
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None
    try:
        root = record(
            args.tasks or args.suite,
            args.episodes_per_task,
            args.out,
            workers=args.workers,
            image_size=args.image_size,
            cameras=cameras,
            steps_after_success=args.steps_after_success,
            seed=args.seed,
            max_attempts_factor=args.max_attempts_factor,
            codec=args.codec,
            progress=not args.quiet,
            split=args.split,
            max_episode_steps=args.max_episode_steps,
            overwrite=args.overwrite,
            subtasks=args.subtasks,
            action_noise=args.action_noise,
            protocol=args.protocol,
        )
    except (ValueError, FileExistsError, LiberoNotInstalled, ExpertFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = json.loads(summary_path(root).read_text())
    print(
        f"wrote {summary['episodes']} episodes ({summary['frames']} frames, {summary['attempts']} attempts) "
        f"to {root} in {summary['wall_time_s']:.0f} s; summary: {summary_path(root)}"
    )
    if "subtasks" in summary:
        from vlaforge.envs.subtasks import PhaseSummary, format_phase_table

        print(format_phase_table({t: PhaseSummary.from_json(s) for t, s in summary["subtasks"].items()}))
    if summary["incomplete_tasks"]:
        print(f"incomplete tasks: {', '.join(summary['incomplete_tasks'])}", file=sys.stderr)
        return 3
    return 0


def _libero_list(args: argparse.Namespace) -> int:
    from vlaforge.envs.libero.suites import (
        MAX_STEPS,
        LiberoNotInstalled,
        max_steps_for,
        suite_names,
        suite_tasks,
    )

    try:
        if not args.suite:
            names = suite_names()
            print("suites of the papers (step limit):")
            for name in MAX_STEPS:
                print(f"  {name:<16} {len(suite_tasks(name)):>3} tasks, {MAX_STEPS[name]} steps")
            others = [n for n in names if n not in MAX_STEPS]
            print(f"LIBERO-PRO and other suites ({len(others)}): {', '.join(others)}")
            return 0
        tasks = suite_tasks(args.suite)
    except (ValueError, LiberoNotInstalled) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.suite}: {len(tasks)} tasks, step limit {max_steps_for(args.suite)}, 50 official initial states each"
    )
    for t in tasks:
        print(f'  {t.index:>2}  {args.suite}/{t.name}\n      "{t.instruction}"')
    return 0


def _add_subtasks(args: argparse.Namespace) -> int:
    from vlaforge.data.errors import DatasetError
    from vlaforge.envs.subtasks import add_subtasks

    try:
        report = add_subtasks(
            args.path,
            source="columns" if args.from_columns else "auto",
            task=args.task,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.table())
    if report.fallbacks:
        print(f"\n{len(report.fallbacks)} episode(s) labelled from the stored columns:", file=sys.stderr)
        for line in report.fallbacks[:5]:
            print(f"  {line}", file=sys.stderr)
    print(f"\nwrote subtask labels to {report.root}")
    return 0


def _register_add_subtasks(dsub: argparse._SubParsersAction) -> None:
    """`vlaforge dataset add-subtasks` (in the `dataset` group of data/commands.py)."""
    subtasks = dsub.add_parser(
        "add-subtasks",
        help="label every frame of a Meta-World recording with its subtask (reach / grasp / act phase)",
        description="Derive per-frame subtask texts ('reach the puck', 'grasp the puck', 'push the puck to the "
        "goal') from the scripted expert's phases and store them in the dataset (subtask_index column + "
        "meta/subtasks.parquet), atomically. Episodes are replayed in the simulator from the seeds in "
        "<PATH>.record_summary.json when possible (true object positions), else labelled from the stored "
        "state and action.",
    )
    subtasks.add_argument("path", help="dataset root (a `vlaforge record` output)")
    subtasks.add_argument(
        "--from-columns", action="store_true", help="do not replay: use the stored state and action only"
    )
    subtasks.add_argument(
        "--task",
        default=None,
        help="Meta-World task of every episode (default: from the summary/instructions)",
    )
    subtasks.add_argument("--overwrite", action="store_true", help="relabel a dataset that has labels")
    subtasks.add_argument("--quiet", action="store_true", help="no progress bar")
    subtasks.set_defaults(func=_add_subtasks)


def register(sub: argparse._SubParsersAction) -> None:
    lib = sub.add_parser("libero", help="LIBERO suites and tasks (libero list [SUITE])")
    lib_sub = lib.add_subparsers(dest="libero_command", metavar="ACTION", required=True)
    ls = lib_sub.add_parser("list", help="the suites, or the tasks of one suite with their instructions")
    ls.add_argument("suite", nargs="?", default=None, help="e.g. libero_goal, libero_spatial_lan")
    ls.set_defaults(func=_libero_list)

    p = sub.add_parser(
        "record",
        help="record scripted-expert demonstrations (Meta-World or LIBERO) into a LeRobot dataset",
        description="Roll out scripted experts, keep successful episodes and write them as a LeRobot v3.0 "
        "dataset (videos per camera, state and action, language instruction per episode). Meta-World: 4-D "
        "state/action, cameras corner + gripper. LIBERO: 8-D state, 7-D action, cameras image + "
        "wrist_image, layouts sampled away from the official initial states (--split train).",
    )
    p.add_argument(
        "--tasks", default=None, help="'mt10', 'mt50' or comma-separated tasks, e.g. 'reach,push-v3'"
    )
    p.add_argument(
        "--suite",
        default=None,
        help="LIBERO suite or tasks: libero_goal, libero_spatial, libero_object, libero_goal/3, ...",
    )
    p.add_argument("--episodes-per-task", type=int, default=50, help="successful episodes to keep per task")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--workers", type=int, default=2, help="rollout processes (0 = in the main process)")
    p.add_argument("--image-size", type=_image_size, default=(128, 128), help="N or HxW (default 128)")
    p.add_argument(
        "--cameras",
        default=None,
        help="comma-separated; Meta-World: corner, gripper, behind_gripper, corner2 (default corner,gripper; "
        "corner2 alone with --protocol lerobot); "
        "LIBERO: image, wrist_image (default both)",
    )
    p.add_argument(
        "--steps-after-success", type=int, default=10, help="steps recorded after the first success"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="episode k of a task tries seed SEED+k (Meta-World: layout seed %% 50, or with --protocol lerobot the "
        "layout that seed draws, clear of its eval seeds 1000..1049; LIBERO: sampled layout)",
    )
    p.add_argument(
        "--split", choices=["train", "eval"], default="train", help="which layout list to record from"
    )
    p.add_argument(
        "--max-attempts-factor", type=int, default=3, help="give up after EPISODES x this attempts"
    )
    p.add_argument(
        "--max-episode-steps", type=int, default=None, help="count as failed after this many steps"
    )
    p.add_argument(
        "--protocol",
        default="vlaforge",
        metavar="NAME",
        help="Meta-World: vlaforge (default) or lerobot (camera corner2, layouts drawn from the seeds, LeRobot's "
        "task descriptions: what `vlaforge eval --protocol lerobot` shows); see docs/metaworld.md",
    )
    p.add_argument("--codec", choices=["h264", "av1"], default="h264", help="video codec")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument(
        "--subtasks",
        action="store_true",
        help="label every frame with the expert's phase ('reach the puck', 'grasp the puck', ...) for "
        "pi0.5-style subtask training",
    )
    p.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        metavar="STD",
        help="DART: Gaussian noise (action units) on the executed arm actions; the recorded actions stay the "
        "expert's, so the data shows recoveries from off-course states (default 0)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_record)

    dataset = sub.choices.get("dataset")  # built by data/commands.py, registered before this module
    if dataset is not None:
        _register_add_subtasks(dataset_subcommands(dataset))
