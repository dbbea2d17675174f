"""Small synthetic datasets for tests, benchmarks and demos (no simulator needed).

Images are smooth moving colour gradients (video codecs keep them within ~1-2 grey levels;
pure noise would measure the codec, not the code); state is a random walk and action its
next-step difference, so windows over time are easy to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.writer import DatasetWriter
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, FeatureSpec

PERIOD = 160.0  # pixels per wave of the synthetic images (chroma subsampling blurs steeper ones)


def smooth_frames(length: int, height: int, width: int, phase: float = 0.0) -> np.ndarray:
    """uint8 (T, H, W, 3): low-frequency colour waves drifting over time."""
    t = np.arange(length, dtype=np.float32)[:, None, None]  # (T, 1, 1)
    # Coordinates in units of PERIOD pixels: the waves are equally smooth at every image size.
    y = np.arange(height, dtype=np.float32)[None, :, None] / PERIOD  # (1, H, 1)
    x = np.arange(width, dtype=np.float32)[None, None, :] / PERIOD  # (1, 1, W)
    r = 0.5 + 0.4 * np.sin(2 * np.pi * (x + 0.03 * t) + phase)
    g = 0.5 + 0.4 * np.cos(2 * np.pi * (y - 0.02 * t) + 2 * phase)
    b = 0.5 + 0.3 * np.sin(np.pi * (x + y) + 0.05 * t + phase)
    rgb = np.stack(np.broadcast_arrays(r, g, b), axis=-1)  # (T, H, W, 3)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def synthetic_features(
    cameras: tuple[str, ...] = ("corner", "gripper"),
    height: int = 32,
    width: int = 32,
    state_dim: int = 4,
    action_dim: int = 4,
) -> dict[str, FeatureSpec]:
    feats = {IMAGE_PREFIX + c: FeatureSpec("video", (height, width, 3)) for c in cameras}
    feats[STATE_KEY] = FeatureSpec("float32", (state_dim,))
    feats[ACTION_KEY] = FeatureSpec("float32", (action_dim,))
    return feats


def synthetic_episode(
    length: int, features: dict[str, FeatureSpec], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, (key, spec) in enumerate(features.items()):
        if spec.dtype in ("video", "image"):
            out[key] = smooth_frames(length, spec.shape[0], spec.shape[1], phase=float(rng.uniform(0, 6)) + i)
    state_dim = features[STATE_KEY].shape[0]
    action_dim = features[ACTION_KEY].shape[0]
    walk = np.cumsum(rng.normal(0, 0.1, size=(length + 1, max(state_dim, action_dim))), axis=0)
    out[STATE_KEY] = walk[:-1, :state_dim].astype(np.float32)  # (T, S)
    out[ACTION_KEY] = np.diff(walk, axis=0)[:, :action_dim].astype(np.float32)  # (T, A)
    return out


def write_synthetic_dataset(
    root: str | Path,
    *,
    episodes: int = 4,
    length: int = 20,
    length_jitter: int = 5,
    cameras: tuple[str, ...] = ("corner", "gripper"),
    height: int = 32,
    width: int = 32,
    state_dim: int = 4,
    action_dim: int = 4,
    fps: float = 10,
    tasks: tuple[str, ...] = ("pick up the block", "open the drawer"),
    seed: int = 0,
    **writer_kwargs: Any,
) -> Path:
    """Write `episodes` episodes of about `length` frames (+- jitter); returns the dataset root."""
    rng = np.random.default_rng(seed)
    features = synthetic_features(cameras, height, width, state_dim, action_dim)
    with DatasetWriter(root, fps=fps, features=features, **writer_kwargs) as writer:
        for e in range(episodes):
            n = max(1, length + int(rng.integers(-length_jitter, length_jitter + 1)))
            writer.add_episode(synthetic_episode(n, features, rng), task=tasks[e % len(tasks)])
    return Path(root)
