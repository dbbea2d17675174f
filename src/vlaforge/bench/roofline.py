"""How fast this machine multiplies matrices, and how far a policy call is from that speed.

`measure_matmul_throughput` times square matmuls C = A·B (2·n³ FLOPs each) of a few sizes in one
dtype, at the current torch thread count, and keeps the best sustained rate: for each size it runs
matmuls back to back for at least `min_time_s`, `repeats` times, and takes the fastest repeat (the
one least disturbed by other processes). The best over sizes is the machine's practical matmul peak
for that dtype; it is what BLAS / oneDNN / cuBLAS actually deliver here, not a datasheet number.

The roofline multiple of a policy call is

    multiple = measured latency / (FLOPs of the call / matmul peak of its dtype)

i.e. how many times slower the call is than the same FLOPs done as one large, well-shaped matmul.
Near 1: compute-bound, only fewer FLOPs or a faster dtype help. Well above 1 (small batch-1 models
typically sit at 5-100x): the time goes to overhead — Python and op dispatch, many small kernels,
memory traffic, element-wise ops — so fusion (torch.compile), fewer steps or a cache help more than
a faster matmul. See docs/performance.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_SIZES = (256, 512, 1024)


@dataclass
class MatmulThroughput:
    """GFLOP/s of square matmuls in one dtype on one device; `best_gflops` is the max over sizes."""

    dtype: str
    device: str
    threads: int
    gflops_by_size: dict[int, float]
    best_gflops: float
    best_size: int

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["gflops_by_size"] = {str(k): v for k, v in self.gflops_by_size.items()}  # JSON keys are strings
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_throughput(
    dtype: str = "fp32",
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    min_time_s: float = 0.2,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> MatmulThroughput:
    """Best sustained GFLOP/s of n x n @ n x n matmuls for n in `sizes` (see the module docstring).

    Costs about len(sizes) * repeats * min_time_s seconds (more when one matmul alone takes longer).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not sizes or any(int(n) < 1 for n in sizes):
        raise ValueError(f"sizes must be positive matrix sizes, got {list(sizes)}")
    if min_time_s <= 0 or repeats < 1:
        raise ValueError(f"need min_time_s > 0 and repeats >= 1, got {min_time_s}, {repeats}")
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    rates: dict[int, float] = {}
    with torch.inference_mode():
        for n in (int(s) for s in sizes):
            a = torch.randn(n, n, generator=gen, device=dev).to(DTYPES[dtype])  # (n, n)
            b = torch.randn(n, n, generator=gen, device=dev).to(DTYPES[dtype])  # (n, n)
            c = torch.empty(n, n, device=dev, dtype=DTYPES[dtype])  # (n, n) reused: no allocation timed
            torch.matmul(a, b, out=c)  # warm-up: kernel selection, page faults
            _sync(dev)
            best = 0.0
            for _ in range(repeats):
                iters = 0
                t0 = time.perf_counter()
                elapsed = 0.0
                while elapsed < min_time_s:
                    torch.matmul(a, b, out=c)
                    iters += 1
                    if dev.type == "cuda" and iters % 8:
                        continue  # queue a few kernels between syncs on a GPU
                    _sync(dev)
                    elapsed = time.perf_counter() - t0
                best = max(best, 2.0 * n**3 * iters / elapsed / 1e9)
            rates[n] = round(best, 2)
    best_size = max(rates, key=lambda k: rates[k])
    return MatmulThroughput(
        dtype=dtype,
        device=str(dev),
        threads=torch.get_num_threads(),
        gflops_by_size=rates,
        best_gflops=rates[best_size],
        best_size=best_size,
    )


def roofline_multiple(latency_s: float, flops: float, gflops: float) -> float:
    """latency / ideal time, ideal = flops / (gflops · 1e9); > 1 means slower than the matmul peak."""
    if latency_s <= 0 or flops <= 0 or gflops <= 0:
        raise ValueError(
            f"roofline_multiple needs positive latency, flops and throughput, got {latency_s}, {flops}, {gflops}"
        )
    return latency_s / (flops / (gflops * 1e9))
