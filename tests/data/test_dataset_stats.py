from __future__ import annotations

import numpy as np
import pytest
from data_helpers import LENGTHS

from vlaforge.data import QUANTILE_KEYS, Dataset
from vlaforge.data.stats import QUANTILES, ImageStats, VectorStats, aggregate_stats


def _numpy_stats(x: np.ndarray, axis) -> dict[str, np.ndarray]:
    out = {"min": x.min(axis), "max": x.max(axis), "mean": x.mean(axis), "std": x.std(axis)}
    for key, q in zip(QUANTILE_KEYS, QUANTILES):
        out[key] = np.quantile(x, q, axis=axis)
    return out


def test_vector_stats_streaming_equal_numpy_when_reservoir_holds_everything():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3, 2, size=(n, 2, 3)).astype(np.float32) for n in (5, 17, 1, 40)]
    acc = VectorStats((2, 3))
    for b in batches:
        acc.update(b)
    got = acc.result()
    want = _numpy_stats(np.concatenate(batches).astype(np.float64), axis=0)
    assert got["count"].tolist() == [63]
    for key, value in want.items():
        assert got[key].shape == (2, 3)
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=key)


def test_vector_stats_quantiles_from_bounded_reservoir():
    """Past the reservoir size quantiles are estimated; memory stays at `capacity` rows."""
    rng = np.random.default_rng(1)
    acc = VectorStats((1,), reservoir_rows=5_000)
    data = rng.uniform(0, 1, size=200_000).astype(np.float32)
    for b in np.split(data, 100):
        acc.update(b[:, None])
    got = acc.result()
    assert acc._reservoir.shape == (5_000, 1)
    np.testing.assert_allclose(got["mean"], data.mean(), atol=1e-6)
    for key, q in zip(QUANTILE_KEYS, QUANTILES):
        # rank error ~ sqrt(q(1-q)/5000) <= 0.007; uniform data: value error == rank error. 4 sigma:
        assert abs(got[key][0] - q) < 0.03, (key, got[key])


def test_image_stats_exact_per_channel_in_unit_range():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(6, 9, 7, 3), dtype=np.uint8)
    frames[..., 2] //= 3  # a different distribution per channel
    acc = ImageStats()
    acc.update(frames[:2])
    acc.update(frames[2:])
    got = acc.result()
    want = _numpy_stats(frames.astype(np.float64) / 255.0, axis=(0, 1, 2))
    assert got["count"].tolist() == [6]
    for key, value in want.items():
        assert got[key].shape == (3, 1, 1)
        np.testing.assert_allclose(got[key].reshape(3), value, rtol=0, atol=1e-12, err_msg=key)


def test_aggregate_stats_exact_for_moments():
    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(n, 2)) for n in (10, 30, 5)]
    per_ep = []
    for p in parts:
        acc = VectorStats((2,))
        acc.update(p)
        per_ep.append({"x": acc.result()})
    agg = aggregate_stats(per_ep)["x"]
    allx = np.concatenate(parts)
    np.testing.assert_allclose(agg["mean"], allx.mean(0), atol=1e-12)
    np.testing.assert_allclose(agg["std"], allx.std(0), atol=1e-12)
    np.testing.assert_allclose(agg["min"], allx.min(0))
    assert agg["count"].tolist() == [45]


def test_dataset_stats_equal_numpy_over_written_data(any_root, episodes):
    ds = Dataset(any_root)
    for key in ("observation.state", "action"):
        allx = np.concatenate([ep[key] for ep in episodes]).astype(np.float64)
        want = _numpy_stats(allx, axis=0)
        for stat, value in want.items():
            # json round trip of float64 is exact; float32 inputs -> compare at float32 precision
            np.testing.assert_allclose(
                ds.stats[key][stat], value, rtol=1e-6, atol=1e-7, err_msg=f"{key} {stat}"
            )
        assert ds.stats[key]["count"].tolist() == [sum(LENGTHS)]
    # image stats are computed on the frames given to the writer (before lossy encoding), exactly
    key = "observation.images.corner"
    allimg = np.concatenate([ep[key] for ep in episodes]).astype(np.float64) / 255.0
    for stat, value in _numpy_stats(allimg, axis=(0, 1, 2)).items():
        np.testing.assert_allclose(ds.stats[key][stat].reshape(3), value, atol=1e-12, err_msg=stat)
    # per-episode stats as well
    for e, ep in enumerate(episodes):
        np.testing.assert_allclose(
            ds.meta.episodes[e].stats["action"]["mean"], ep["action"].mean(0), rtol=1e-6
        )
        np.testing.assert_allclose(
            ds.meta.episodes[e].stats["action"]["q99"],
            np.quantile(ep["action"].astype(np.float64), 0.99, 0),
            rtol=1e-6,
        )
        assert ds.meta.episodes[e].stats[key]["mean"].shape == (3, 1, 1)


def test_stats_reject_empty():
    with pytest.raises(ValueError, match="no data"):
        VectorStats((2,)).result()
