"""`vlaforge dataset info PATH`, `vlaforge dataset convert SRC DST --to v2.1|v3.0` and
`vlaforge dataset add-subtasks PATH` (per-frame subtask labels for a Meta-World recording)."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    from vlaforge.data.errors import DatasetError
    from vlaforge.data.summary import dataset_summary

    try:
        print(dataset_summary(args.path))
        if args.verify:
            from vlaforge.data.dataset import Dataset

            checked = Dataset(args.path).verify()
            print(f"\nverify: ok ({checked} frames decoded: first and last of every episode and camera)")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    from vlaforge.data.convert import convert_dataset
    from vlaforge.data.errors import DatasetError

    try:
        out = convert_dataset(
            args.src,
            args.dst,
            to=args.to,
            overwrite=args.overwrite,
            reencode=args.reencode,
            codec=args.codec,
            verbose=True,
        )
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.to} dataset to {out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from vlaforge.data.convert import merge_datasets
    from vlaforge.data.errors import DatasetError

    try:
        out = merge_datasets(args.sources, args.out, overwrite=args.overwrite, progress=True)
    except (DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"merged {len(args.sources)} datasets into {out}")
    return 0


def _add_subtasks(args: argparse.Namespace) -> int:
    from vlaforge.data.errors import DatasetError
    from vlaforge.data.subtasks import add_subtasks

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


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dataset", help="inspect and convert LeRobot-format datasets (v3.0, v2.1)")
    dsub = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    info = dsub.add_parser("info", help="print version, episodes, features, statistics and disk size")
    info.add_argument("path", help="dataset root (the directory holding meta/info.json)")
    info.add_argument(
        "--verify", action="store_true", help="also decode the first and last frame of every episode"
    )
    info.set_defaults(func=_info)

    convert = dsub.add_parser(
        "convert", help="rewrite a dataset in another layout version, content preserved"
    )
    convert.add_argument("src", help="source dataset root")
    convert.add_argument("dst", help="destination root (must not exist unless --overwrite)")
    convert.add_argument("--to", required=True, choices=["v2.1", "v3.0"], help="target layout version")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing dataset at DST")
    convert.add_argument(
        "--reencode", action="store_true", help="re-encode video even when it could be copied"
    )
    convert.add_argument("--codec", choices=["h264", "av1"], default=None, help="codec when re-encoding")
    convert.set_defaults(func=_convert)

    merge = dsub.add_parser(
        "merge", help="concatenate datasets with the same features (video re-muxed, not re-encoded)"
    )
    merge.add_argument("sources", nargs="+", help="dataset roots, in the order their episodes are kept")
    merge.add_argument("--out", required=True, help="merged dataset root (v3.0)")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    merge.set_defaults(func=_merge)

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
