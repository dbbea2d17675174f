"""Timing and memory measurement that stays fair on a loaded machine.

* `time_interleaved` runs every variant once per round and rotates the order each round, so load
  from other processes (this machine is shared with long runs) hits all variants alike instead of
  whichever happened to run during a busy minute. Run i of every variant gets the same seed, so
  stochastic heads draw the same noise and the actions can be compared run by run.
* `measure_memory` reports the high-water mark of one call above what was resident before it: on
  CPU the process RSS (Linux `VmHWM`, reset through `/proc/self/clear_refs`, after handing the
  heap's free pages back with `malloc_trim`; where clear_refs is not writable, the `ru_maxrss`
  growth, which only sees new peaks), on CUDA `max_memory_allocated`.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    """Median, p90 and min in milliseconds."""
    if not seconds:
        raise ValueError("summarize_ms: no timings (runs must be >= 1)")
    ms = np.asarray(seconds) * 1000.0
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "min_ms": round(float(ms.min()), 3),
    }


def time_interleaved(
    fns: dict[str, Callable[[int], Any]], runs: int, warmup: int, *, device: torch.device | None = None
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Call every fn(run_index) once per round, rotating the order -> seconds and outputs per name.

    Warm-up calls get negative indices (their outputs are dropped). On CUDA each call is synchronized
    before the clock stops.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    cuda = device is not None and device.type == "cuda"
    names = list(fns)
    for i in range(warmup):
        for name in names:
            fns[name](-1 - i)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[Any]] = {name: [] for name in names}
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            out = fns[name](i)
            if cuda:
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
            outputs[name].append(out)
    return seconds, outputs


def cpu_flags(wanted: Sequence[str]) -> list[str]:
    """Those of the `wanted` ISA extensions (e.g. "avx512_bf16", "amx_tile") this CPU reports.

    They decide which bf16 / int8 kernels oneDNN and fbgemm can use, so a result is only comparable
    with one from a CPU with the same flags. Reads Linux's /proc/cpuinfo; [] where there is none.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in wanted if f in flags]


# ---------------------------------------------------------------------------------------------- memory

_STATUS = "/proc/self/status"


def _status_kb(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel or sandbox does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def resident_mb() -> float | None:
    """Current process RSS in MiB (None off Linux)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def _trim_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc `malloc_trim`); False where there is no glibc.

    Without it, memory freed by an earlier call stays resident and the next call reuses it without
    raising the RSS high-water mark, so a call's peak would read as ~0 in steady state.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def measure_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory of one `fn()` above what was in use just before it.

    -> {"method", "peak_delta_mb", "resident_mb"}; resident_mb is the process RSS (CPU) or the
    allocated CUDA memory (weights, caches) after the call.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "method": "cuda max_memory_allocated",
            "peak_delta_mb": round((peak - base) / 2**20, 2),
            "resident_mb": round(torch.cuda.memory_allocated(device) / 2**20, 1),
        }
    trimmed = _trim_heap()
    if _reset_rss_peak():
        base = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
        if base is not None and peak is not None:
            return {
                "method": "rss high-water (VmHWM)" + (" after malloc_trim" if trimmed else ""),
                "peak_delta_mb": round(max(peak - base, 0) / 1024, 2),
                "resident_mb": resident_mb(),
            }
    # ru_maxrss is the lifetime peak (KiB on Linux): growth is seen only above earlier peaks.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": "ru_maxrss growth (lower bound)" if os.name == "posix" else "ru_maxrss",
        "peak_delta_mb": round((after - before) / 1024, 2),
        "resident_mb": resident_mb(),
    }
