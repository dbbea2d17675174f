"""`vlaforge dataset info PATH`, `vlaforge dataset convert SRC DST --to v2.1|v3.0`, `vlaforge dataset merge`.

`vlaforge dataset add-subtasks PATH` (per-frame subtask labels for a Meta-World recording) joins this group
from envs/commands.py through `dataset_subcommands`: it replays episodes in the simulator, and `data` knows
no env."""

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


def dataset_subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The sub-commands of the `vlaforge dataset` parser that `register` built, for areas above `data` to
    add theirs to."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


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
