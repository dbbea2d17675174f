"""Matmul throughput: positive, quick at tiny sizes; the roofline multiple is latency / ideal time."""

import time

import pytest

from vlaforge.bench.roofline import measure_matmul_throughput, roofline_multiple


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_throughput_is_positive_and_quick(dtype):
    t0 = time.perf_counter()
    r = measure_matmul_throughput(dtype, sizes=(16, 32), min_time_s=0.005, repeats=2)
    assert time.perf_counter() - t0 < 2.0
    assert set(r.gflops_by_size) == {16, 32}
    assert all(v > 0 for v in r.gflops_by_size.values())
    assert r.best_gflops == max(r.gflops_by_size.values()) and r.best_size in (16, 32)
    assert r.threads >= 1 and r.dtype == dtype
    assert r.to_dict()["gflops_by_size"].keys() == {"16", "32"}  # JSON-ready


def test_roofline_multiple():
    # 1 GFLOP at 100 GFLOP/s ideally takes 10 ms; 50 ms measured is 5x the ideal
    assert roofline_multiple(0.050, 1e9, 100.0) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        roofline_multiple(0.0, 1e9, 100.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dtype"):
        measure_matmul_throughput("fp8")
    with pytest.raises(ValueError, match="sizes"):
        measure_matmul_throughput("fp32", sizes=())
