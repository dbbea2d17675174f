"""Which frames a training sample reads: observation history and action chunk windows.

For frame t of an episode spanning global indices [start, end):
    history window (T = history): t-T+1 .. t      (oldest first)
    action window  (H = chunk):   t   .. t+H-1
Indices outside the episode are clamped to its first/last frame and flagged in a pad mask,
LeRobot's `<key>_is_pad` convention: padded values repeat the edge value, losses skip them.
"""

from __future__ import annotations

import numpy as np

from vlaforge.data.errors import DatasetIndexError


class WindowSampler:
    """Maps a global frame index to windows of global indices inside the same episode.

    episode_starts, episode_ends: (E,) global index bounds [start, end) of each episode, in order.
    """

    def __init__(self, episode_starts: np.ndarray, episode_ends: np.ndarray):
        self.starts = np.asarray(episode_starts, dtype=np.int64)  # (E,)
        self.ends = np.asarray(episode_ends, dtype=np.int64)  # (E,)
        if self.starts.shape != self.ends.shape or self.starts.ndim != 1:
            raise ValueError(
                f"episode bounds must be two (E,) arrays, got {self.starts.shape} and {self.ends.shape}"
            )
        if len(self.starts) and (
            np.any(self.ends <= self.starts) or np.any(self.starts[1:] != self.ends[:-1])
        ):
            raise ValueError(
                "episodes must be non-empty and contiguous: starts[i+1] == ends[i], ends[i] > starts[i]"
            )
        self.num_frames = int(self.ends[-1]) if len(self.ends) else 0

    @staticmethod
    def history_offsets(history: int) -> np.ndarray:
        """(T,) offsets -T+1 .. 0 for an observation history of T steps."""
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        return np.arange(-history + 1, 1, dtype=np.int64)

    @staticmethod
    def chunk_offsets(chunk: int) -> np.ndarray:
        """(H,) offsets 0 .. H-1 for an action chunk of H steps."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        return np.arange(chunk, dtype=np.int64)

    def episode_of(self, index: int) -> int:
        if not 0 <= index < self.num_frames:
            raise DatasetIndexError(
                f"frame index {index} out of range; the dataset has {self.num_frames} frames"
            )
        return int(np.searchsorted(self.ends, index, side="right"))

    def window(self, index: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global indices (K,) of index + offsets clamped to index's episode, and pad mask (K,) bool."""
        ep = self.episode_of(index)
        start, end = self.starts[ep], self.ends[ep]
        raw = index + np.asarray(offsets, dtype=np.int64)  # (K,)
        is_pad = (raw < start) | (raw >= end)
        return np.clip(raw, start, end - 1), is_pad
