"""`vlaforge info`: versions and the machine, for bug reports and benchmark tables."""

from __future__ import annotations

import argparse
import os
import platform


def machine_info() -> dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "vlaforge": __import__("vlaforge").__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


def _run(args: argparse.Namespace) -> int:
    for k, v in machine_info().items():
        print(f"{k:>14}: {v}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions and machine information")
    p.set_defaults(func=_run)
