"""Streaming per-feature statistics with bounded memory, in LeRobot's stats.json layout.

Each feature gets {min, max, mean, std, count, q01, q10, q50, q90, q99}:

* vectors (state, action, indices): per dimension, arrays shaped like the feature.
  mean/std are exact (Chan's parallel update in float64; population std like numpy).
  Quantiles come from a uniform reservoir sample of at most `reservoir_rows` rows
  (Algorithm R): exact while the dataset has no more rows than that, otherwise each
  quantile's rank is off by about sqrt(q(1-q)/n) (< 0.1 % for the default 100k rows).
  The reservoir also caps its size at `RESERVOIR_BYTES` for very wide features.
* images (uint8 frames): per channel, in [0, 1], shaped (3, 1, 1) like LeRobot. All pixels
  of all frames enter a 256-bin histogram per channel, which makes *every* statistic,
  quantiles included, exact (numpy's "linear" quantile definition), in 6 KB of memory.
  `count` is the number of frames.

Nothing holds the dataset in memory: the writer feeds one episode at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.data.errors import DatasetError

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)
DEFAULT_RESERVOIR_ROWS = 100_000
RESERVOIR_BYTES = 64 * 2**20


class VectorStats:
    """Running statistics of a numeric feature of shape `shape`, fed (T, *shape) arrays."""

    def __init__(self, shape: tuple[int, ...], reservoir_rows: int = DEFAULT_RESERVOIR_ROWS, seed: int = 0):
        self.shape = tuple(shape)
        self.dim = int(np.prod(self.shape))
        self.capacity = max(1, min(reservoir_rows, RESERVOIR_BYTES // (4 * self.dim)))
        self.count = 0
        self._mean = np.zeros(self.dim, np.float64)
        self._m2 = np.zeros(self.dim, np.float64)
        self._min = np.full(self.dim, np.inf)
        self._max = np.full(self.dim, -np.inf)
        self._reservoir = np.empty((0, self.dim), np.float32)  # grows to (capacity, D)
        self._rng = np.random.default_rng(seed)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), self.dim)  # (T, D)
        n_new = len(x)
        if n_new == 0:
            return
        b_mean = x.mean(axis=0)
        b_m2 = ((x - b_mean) ** 2).sum(axis=0)
        n = self.count + n_new
        delta = b_mean - self._mean
        self._mean = self._mean + delta * (n_new / n)
        self._m2 = self._m2 + b_m2 + delta**2 * (self.count * n_new / n)
        self._min = np.minimum(self._min, x.min(axis=0))
        self._max = np.maximum(self._max, x.max(axis=0))
        self._sample(x.astype(np.float32))
        self.count = n

    def _sample(self, x: np.ndarray) -> None:
        """Algorithm R: row k (0-based, global) is kept with probability capacity / (k + 1)."""
        filled = len(self._reservoir)
        take = min(self.capacity - filled, len(x))
        if take > 0:
            self._reservoir = np.concatenate([self._reservoir, x[:take]])
        rest = x[take:]
        if len(rest) == 0:
            return
        k = self.count + take + np.arange(len(rest))  # global row numbers of `rest`
        slot = self._rng.integers(0, k + 1)
        keep = slot < self.capacity
        self._reservoir[slot[keep]] = rest[keep]

    def result(self) -> dict[str, np.ndarray]:
        if self.count == 0:
            raise DatasetError("cannot compute statistics of a feature that received no data")
        out = {
            "min": self._min.reshape(self.shape),
            "max": self._max.reshape(self.shape),
            "mean": self._mean.reshape(self.shape),
            "std": np.sqrt(np.maximum(self._m2 / self.count, 0.0)).reshape(self.shape),
            "count": np.array([self.count], np.int64),
        }
        q = np.quantile(self._reservoir.astype(np.float64), QUANTILES, axis=0)  # (5, D)
        for key, row in zip(QUANTILE_KEYS, q):
            out[key] = row.reshape(self.shape)
        return out


class ImageStats:
    """Exact per-channel statistics of uint8 (T, H, W, 3) frames, scaled to [0, 1]."""

    def __init__(self) -> None:
        self.count = 0  # frames
        self._hist = np.zeros((3, 256), np.int64)  # (C, 256) pixel counts per value

    def update(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise DatasetError(
                f"image statistics need uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}"
            )
        flat = frames.reshape(-1, 3)  # (T*H*W, 3)
        for c in range(3):
            self._hist[c] += np.bincount(flat[:, c], minlength=256)
        self.count += len(frames)

    def result(self) -> dict[str, np.ndarray]:
        if self.count == 0:
            raise DatasetError("cannot compute statistics of an image feature that received no frames")
        values = np.arange(256, dtype=np.float64) / 255.0
        n = self._hist.sum(axis=1)  # (C,) pixels per channel
        mean = (self._hist * values).sum(axis=1) / n
        var = (self._hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
        nonzero = self._hist > 0
        lo = values[np.argmax(nonzero, axis=1)]
        hi = values[255 - np.argmax(nonzero[:, ::-1], axis=1)]
        cum = np.cumsum(self._hist, axis=1)  # (C, 256)

        def value_at_rank(r: np.ndarray) -> np.ndarray:  # r: (C,) 0-based ranks in the sorted pixels
            return values[[np.searchsorted(cum[c], r[c], side="right") for c in range(3)]]

        out = {"min": lo, "max": hi, "mean": mean, "std": np.sqrt(var)}
        for key, q in zip(QUANTILE_KEYS, QUANTILES):
            pos = q * (n - 1)  # numpy "linear": interpolate between the order statistics around pos
            below, above = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
            frac = pos - below
            out[key] = value_at_rank(below) * (1 - frac) + value_at_rank(above) * frac
        out = {k: v.reshape(3, 1, 1) for k, v in out.items()}
        out["count"] = np.array([self.count], np.int64)
        return out


def make_accumulator(dtype: str, shape: tuple[int, ...], reservoir_rows: int = DEFAULT_RESERVOIR_ROWS):
    if dtype in ("video", "image"):
        return ImageStats()
    return VectorStats(shape, reservoir_rows)


def compute_stats(columns: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Exact statistics of one episode's arrays (each (T, *shape)); string features are skipped."""
    out = {}
    for key, arr in columns.items():
        if dtypes[key] == "string":
            continue
        acc = make_accumulator(dtypes[key], tuple(arr.shape[1:]) or (1,), reservoir_rows=max(len(arr), 1))
        acc.update(arr if dtypes[key] in ("video", "image") else arr.reshape(len(arr), -1))
        out[key] = acc.result()
    return out


def aggregate_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Merge per-episode statistics (used when converting a dataset that has no stats.json).

    min/max/mean/std/count are exact; quantiles are the count-weighted mean of the episodes'
    quantiles (LeRobot does the same), an approximation that is exact only for identical episodes.
    """
    keys = sorted({k for s in per_episode for k in s})
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        items = [s[key] for s in per_episode if key in s]
        counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in items])
        total = counts.sum()
        w = counts / total
        means = np.stack([np.asarray(s["mean"], np.float64) for s in items])
        wb = w.reshape(-1, *([1] * (means.ndim - 1)))
        mean = (means * wb).sum(axis=0)
        var = (
            (np.stack([np.asarray(s["std"], np.float64) ** 2 for s in items]) + (means - mean) ** 2) * wb
        ).sum(0)
        agg = {
            "min": np.min(np.stack([np.asarray(s["min"], np.float64) for s in items]), axis=0),
            "max": np.max(np.stack([np.asarray(s["max"], np.float64) for s in items]), axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([int(total)], np.int64),
        }
        for q in QUANTILE_KEYS:
            if all(q in s for s in items):
                agg[q] = (np.stack([np.asarray(s[q], np.float64) for s in items]) * wb).sum(axis=0)
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def stats_from_json(obj: Any, where: str) -> dict[str, dict[str, np.ndarray]]:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected an object of feature -> statistics, got {type(obj).__name__}")
    out = {}
    for key, d in obj.items():
        if not isinstance(d, dict):
            raise DatasetError(f"{where}: statistics of {key!r} must be an object, got {type(d).__name__}")
        out[key] = {s: np.asarray(v, dtype=np.int64 if s == "count" else np.float64) for s, v in d.items()}
    return out
