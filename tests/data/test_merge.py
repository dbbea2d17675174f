"""`vlaforge dataset merge`: episodes concatenated in order, video re-muxed, mismatches refused."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.data import Dataset
from vlaforge.data.convert import merge_datasets
from vlaforge.data.errors import DatasetError
from vlaforge.data.synthetic import write_synthetic_dataset


def test_merge_keeps_every_episode_and_frame(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", episodes=2, tasks=("open the drawer",), seed=0)
    b = write_synthetic_dataset(tmp_path / "b", episodes=3, tasks=("close the drawer",), seed=1)
    out = merge_datasets([a, b], tmp_path / "ab")
    merged, da, db = Dataset(out), Dataset(a), Dataset(b)
    assert merged.num_episodes == 5 and merged.num_frames == da.num_frames + db.num_frames
    for e_src, (src, e) in enumerate([(da, 0), (da, 1), (db, 0), (db, 1), (db, 2)]):
        want, got = src.episode(e), merged.episode(e_src)
        assert got["task"] == want["task"]
        for key in ("observation.state", "action", "observation.images.corner"):
            np.testing.assert_array_equal(got[key], want[key])  # re-muxed video: identical pixels
    assert merged.stats["action"]["max"].shape == (4,)


def test_merge_refuses_different_features(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", episodes=1)
    b = write_synthetic_dataset(tmp_path / "b", episodes=1, action_dim=7)
    with pytest.raises(DatasetError, match="features differ"):
        merge_datasets([a, b], tmp_path / "ab")
    with pytest.raises(DatasetError, match="at least two"):
        merge_datasets([a], tmp_path / "ab")
