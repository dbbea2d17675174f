"""Wilson score interval against known values, and the percentile helper."""

from __future__ import annotations

import pytest

from vlaforge.eval.stats import percentile, wilson_interval


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (8, 10, 0.4902, 0.9433),  # textbook example
        (0, 10, 0.0, 0.2775),  # z^2 / (n + z^2)
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (18, 20, 0.6990, 0.9721),
    ],
)
def test_wilson_95_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_is_symmetric_and_widens_with_confidence():
    lo, hi = wilson_interval(3, 20)
    lo2, hi2 = wilson_interval(17, 20)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)
    lo99, hi99 = wilson_interval(3, 20, confidence=0.99)
    assert lo99 < lo and hi99 > hi
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k, n, conf", [(11, 10, 0.95), (-1, 10, 0.95), (5, 10, 1.0)])
def test_wilson_rejects_bad_input(k, n, conf):
    with pytest.raises(ValueError, match="wilson_interval"):
        wilson_interval(k, n, conf)


def test_percentile_interpolates():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 90) == 10.0
    assert percentile([], 50) != percentile([], 50)  # NaN


@pytest.mark.parametrize("n", [1, 10, 13, 15, 17, 50])
def test_wilson_edges_are_exact_at_zero_and_all(n):
    assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
