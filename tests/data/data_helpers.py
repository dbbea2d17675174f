"""Helpers shared by the dataset tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.data.synthetic import synthetic_episode, synthetic_features
from vlaforge.data.writer import DatasetWriter

FPS = 10
LENGTHS = (7, 12, 9)  # short, uneven episodes: windows hit both edges often
TASKS = ("pick up the block", "open the drawer", "pick up the block")


def make_episodes(seed: int = 0, height: int = 32, width: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feats = synthetic_features(("corner", "gripper"), height, width)
    return [synthetic_episode(n, feats, rng) for n in LENGTHS]


def write_dataset(root: Path, episodes: list[dict[str, np.ndarray]], **kwargs) -> Path:
    h, w = episodes[0]["observation.images.corner"].shape[1:3]
    writer = DatasetWriter(root, fps=FPS, features=synthetic_features(("corner", "gripper"), h, w), **kwargs)
    for ep, task in zip(episodes, TASKS):
        writer.add_episode(ep, task)
    return writer.finalize()
