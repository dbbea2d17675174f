"""`vlaforge` command line.

Each area of the package registers its own sub-commands through a `register(subparsers)`
function in its `commands` module, so the CLI stays one small dispatcher. Heavy imports
(torch, mujoco) happen inside the command functions, keeping `vlaforge --help` instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vlaforge import __version__

COMMAND_MODULES = [
    "vlaforge.data.commands",  # dataset info | convert
    "vlaforge.envs.commands",  # record
    "vlaforge.train.commands",  # train
    "vlaforge.eval.commands",  # eval
    "vlaforge.serve.commands",  # serve
    "vlaforge.bench.commands",  # bench
    "vlaforge.export.commands",  # export (ONNX)
    "vlaforge.convert.commands",  # convert-openvla | convert-pi0
    "vlaforge.quickstart",  # quickstart
    "vlaforge.info",  # info
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlaforge",
        description="Record demonstrations, train VLA policies, evaluate them in simulation.",
    )
    parser.add_argument("--version", action="version", version=f"vlaforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # an area not built yet must not break the others
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as e:  # a bad dataset or checkpoint is the user's to fix: one line, not a traceback
        from vlaforge.data.errors import DatasetError
        from vlaforge.errors import CheckpointError

        if not isinstance(e, DatasetError | CheckpointError):
            raise
        print(f"vlaforge {args.command}: {e}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
