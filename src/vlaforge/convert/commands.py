"""`vlaforge convert-openvla SRC OUT` and `vlaforge convert-pi0 SRC --out DIR`: published checkpoints -> policies.

The converters (and torch) are imported when a command runs, so `vlaforge --help` stays instant.
"""

from __future__ import annotations

import argparse

from vlaforge.convert.arguments import OPENVLA_HELP, PI0_HELP, add_openvla_arguments, add_pi0_arguments


def _openvla(args: argparse.Namespace) -> int:
    from vlaforge.convert.openvla import run

    return run(args)


def _pi0(args: argparse.Namespace) -> int:
    from vlaforge.convert.pi0 import run

    return run(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-openvla", help=OPENVLA_HELP, description=OPENVLA_HELP)
    add_openvla_arguments(p)
    p.set_defaults(func=_openvla)
    p = sub.add_parser("convert-pi0", help=PI0_HELP, description=PI0_HELP)
    add_pi0_arguments(p)
    p.set_defaults(func=_pi0)
