"""Synthetic datasets shared by tests (built on `vlaforge.data.write_synthetic_dataset`)."""

from __future__ import annotations

from pathlib import Path

from vlaforge.data import write_synthetic_dataset


def write_libero_like(root: Path, *, episodes: int = 2, length: int = 8) -> Path:
    """A LIBERO-shaped dataset: cameras image + wrist_image, 8-D state, 7-D action, 20 Hz."""
    return write_synthetic_dataset(
        root,
        episodes=episodes,
        length=length,
        cameras=("image", "wrist_image"),
        state_dim=8,
        action_dim=7,
        fps=20,
    )
