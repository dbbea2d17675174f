from __future__ import annotations

import pickle

import torch
from torch.utils.data import DataLoader

from vlaforge.data import Dataset


def test_dataloader_two_workers_gives_the_same_samples(v30_root):
    ds = Dataset(v30_root, history=2, chunk=4)
    ds[0]  # open containers in the parent first: workers must not reuse them after fork
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["observation.images.corner"].shape[1:] == (2, 32, 32, 3)
        assert batch["action"].shape[1:] == (4, 4) and batch["action_is_pad"].dtype == torch.bool
        assert isinstance(batch["task"], list)
        for j, i in enumerate(batch["index"].tolist()):
            want = ds[i]
            assert torch.equal(batch["observation.images.gripper"][j], want["observation.images.gripper"])
            assert torch.equal(batch["observation.state"][j], want["observation.state"])
            assert batch["task"][j] == want["task"]
        seen += len(batch["index"])
    assert seen == len(ds)


def test_pickles_without_open_files_or_cache_contents(v30_root, tmp_path):
    ds = Dataset(v30_root, history=2)
    ds.cache_frames(tmp_path / "cache")
    ds[3]
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 200_000  # no memmapped frames inside
    assert torch.equal(clone[3]["observation.images.corner"], ds[3]["observation.images.corner"])
