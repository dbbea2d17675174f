from __future__ import annotations

import numpy as np
import pytest

from vlaforge.data import DatasetError, WindowSampler

# episodes [0, 3), [3, 8), [8, 9)
SAMPLER = WindowSampler(np.array([0, 3, 8]), np.array([3, 8, 9]))
HIST2 = WindowSampler.history_offsets(2)  # [-1, 0]
CHUNK4 = WindowSampler.chunk_offsets(4)  # [0, 1, 2, 3]


def test_offsets():
    assert WindowSampler.history_offsets(3).tolist() == [-2, -1, 0]
    assert WindowSampler.chunk_offsets(3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="history"):
        WindowSampler.history_offsets(0)
    with pytest.raises(ValueError, match="chunk"):
        WindowSampler.chunk_offsets(0)


def test_history_pads_at_episode_start_with_first_frame():
    idx, pad = SAMPLER.window(3, HIST2)  # first frame of episode 1
    assert idx.tolist() == [3, 3] and pad.tolist() == [True, False]
    idx, pad = SAMPLER.window(4, HIST2)
    assert idx.tolist() == [3, 4] and pad.tolist() == [False, False]


def test_chunk_pads_at_episode_end_with_last_frame():
    idx, pad = SAMPLER.window(6, CHUNK4)  # episode 1 ends at 8 (exclusive)
    assert idx.tolist() == [6, 7, 7, 7] and pad.tolist() == [False, False, True, True]
    idx, pad = SAMPLER.window(3, CHUNK4)
    assert idx.tolist() == [3, 4, 5, 6] and not pad.any()


def test_never_crosses_into_neighbour_episode():
    for i in range(SAMPLER.num_frames):
        ep = SAMPLER.episode_of(i)
        for offsets in (HIST2, CHUNK4, WindowSampler.history_offsets(5)):
            idx, pad = SAMPLER.window(i, offsets)
            assert all(SAMPLER.episode_of(int(j)) == ep for j in idx)
            raw = i + offsets
            assert np.array_equal(pad, (raw < SAMPLER.starts[ep]) | (raw >= SAMPLER.ends[ep]))


def test_single_frame_episode_is_all_padding_but_t():
    idx, pad = SAMPLER.window(8, CHUNK4)
    assert idx.tolist() == [8, 8, 8, 8] and pad.tolist() == [False, True, True, True]


def test_episode_of_and_out_of_range():
    assert [SAMPLER.episode_of(i) for i in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 2]
    with pytest.raises(IndexError, match="out of range"):
        SAMPLER.episode_of(9)
    with pytest.raises(DatasetError, match="out of range"):
        SAMPLER.window(-1, HIST2)


def test_rejects_non_contiguous_episodes():
    with pytest.raises(ValueError, match="contiguous"):
        WindowSampler(np.array([0, 4]), np.array([3, 8]))
