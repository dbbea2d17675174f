"""`python -m vlaforge.train ...` — the `vlaforge train` command, launchable by torchrun:

torchrun --nproc_per_node 2 -m vlaforge.train --data data/mt10 --out runs/ddp --steps 2000
torchrun --nproc_per_node 2 -m vlaforge.train --data data/mt10 --out runs/fsdp --steps 2000 --fsdp
"""

from __future__ import annotations

import argparse
import sys

from vlaforge.train import commands, distributed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlaforge.train")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    distributed.init_distributed()
    try:
        return int(args.func(args) or 0)
    finally:
        if distributed.current().enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
