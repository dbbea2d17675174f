"""MixtureDataset: weighted sampling, padding + masks, per-dataset statistics, loud errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.synthetic import write_libero_like
from vlaforge.data import Dataset, DatasetError, MixtureDataset, write_synthetic_dataset


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    a = write_synthetic_dataset(
        d / "a", episodes=3, length=10, state_dim=4, action_dim=4, tasks=("pick up the block",)
    )
    b = write_synthetic_dataset(
        d / "b", episodes=2, length=8, state_dim=7, action_dim=2, tasks=("open the drawer", "push"), seed=1
    )
    return a, b


@pytest.fixture(scope="module")
def parts(roots):
    return {"a": Dataset(roots[0], history=2, chunk=4), "b": Dataset(roots[1], history=2, chunk=4)}


def _mix(parts, **kw) -> MixtureDataset:
    return MixtureDataset(parts, {"a": 3.0, "b": 1.0}, seed=kw.pop("seed", 0), **kw)


def test_weights_give_the_sampled_proportions(parts):
    mix = _mix(parts, epoch_length=4000)
    assert mix.counts() == {"a": 3000, "b": 1000}  # exact per virtual epoch
    # Any stretch of the shuffled epoch (e.g. the first 50 batches of 8) follows the weights too.
    names = Counter(mix.locate(i)[0] for i in range(400))
    assert abs(names["a"] / 400 - 0.75) < 0.06
    assert mix.weights == {"a": 0.75, "b": 0.25}


def test_mapping_is_a_pure_function_of_index_and_seed(parts):
    first = [_mix(parts).locate(i) for i in range(30)]
    again = [_mix(parts).locate(i) for i in range(30)]
    other = [_mix(parts, seed=1).locate(i) for i in range(30)]
    assert first == again and first != other


def test_default_epoch_visits_every_frame_of_every_dataset(parts):
    mix = _mix(parts)
    # b has weight 1/4: the epoch must be >= 4 * len(b) for all of b's frames to appear.
    assert len(mix) == max(int(np.ceil(len(parts["a"]) / 0.75)), 4 * len(parts["b"]))
    seen = {"a": set(), "b": set()}
    for i in range(len(mix)):
        name, frame = mix.locate(i)
        seen[name].add(frame)
    assert seen == {n: set(range(len(ds))) for n, ds in parts.items()}


def test_items_are_padded_with_masks_and_collate(parts):
    mix = _mix(parts)
    rows = {name: next(i for i in range(len(mix)) if mix.locate(i)[0] == name) for name in ("a", "b")}
    item_b = mix[rows["b"]]
    raw_b = parts["b"][mix.locate(rows["b"])[1]]
    assert item_b["dataset_name"] == "b" and int(item_b["dataset_index"]) == 1
    assert item_b["observation.state"].shape == (2, 7)  # b already has the largest state
    assert item_b["action"].shape == (4, 4)  # (H, A_max)
    assert torch.equal(item_b["action"][:, :2], raw_b["action"])
    assert torch.all(item_b["action"][:, 2:] == 0)
    assert item_b["action_dim_mask"].tolist() == [True, True, False, False]
    assert item_b["state_dim_mask"].tolist() == [True] * 7

    item_a = mix[rows["a"]]
    assert torch.all(item_a["observation.state"][:, 4:] == 0)
    assert item_a["state_dim_mask"].tolist() == [True] * 4 + [False] * 3
    assert item_a["action_dim_mask"].all()

    batch = default_collate([item_a, item_b])
    assert batch["dataset_name"] == ["a", "b"]
    assert batch["action"].shape == (2, 4, 4) and batch["action_dim_mask"].shape == (2, 4)


def test_features_stats_tasks_and_sizes(parts):
    mix = _mix(parts)
    assert mix.features["observation.state"]["shape"] == (7,)
    assert mix.features["action"]["shape"] == (4,)
    assert mix.features["observation.images.corner"]["shape"] == (32, 32, 3)
    assert mix.fps == 10 and mix.num_episodes == 5
    assert mix.meta.tasks == ["pick up the block", "open the drawer", "push"]
    assert mix.dataset_dims == {"a": (4, 4), "b": (7, 2)}
    act_b = mix.stats["b"]["action"]
    np.testing.assert_allclose(act_b["mean"][:2], parts["b"].stats["action"]["mean"])
    assert act_b["mean"][2:].tolist() == [0, 0] and act_b["std"][2:].tolist() == [1, 1]
    assert act_b["q01"][2:].tolist() == [-1, -1] and act_b["q99"][2:].tolist() == [1, 1]
    assert mix.stats["a"]["observation.state"]["mean"].shape == (7,)


def test_requested_padding_sizes(parts):
    mix = _mix(parts, state_dim=8, action_dim=6)
    item = mix[0]
    assert item["observation.state"].shape == (2, 8) and item["action"].shape == (4, 6)
    with pytest.raises(DatasetError, match=r"action_dim=3 is smaller than the datasets' sizes \{'a': 4\}"):
        _mix(parts, action_dim=3)


class _Stub:
    """Only what the constructor reads: features, fps, len."""

    def __init__(self, cams=("corner",), size=(32, 32), fps=10.0, n=5):
        self.fps, self.n = fps, n
        self.features = {f"observation.images.{c}": {"dtype": "video", "shape": (*size, 3)} for c in cams}
        self.features["observation.state"] = {"dtype": "float32", "shape": (3,)}
        self.features["action"] = {"dtype": "float32", "shape": (2,)}

        class _Meta:
            tasks = ["x"]

        self.meta = _Meta()

    def __len__(self):
        return self.n


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (_Stub(cams=("wrist",)), "camera 'corner' is in dataset 'one' but not in 'two'"),
        (
            _Stub(size=(64, 64)),
            r"camera 'corner' is \(64, 64, 3\) in dataset 'two' but \(32, 32, 3\) in 'one'",
        ),
        (_Stub(n=0), "dataset 'two' is empty"),
    ],
)
def test_incompatible_datasets_are_named(other, message):
    with pytest.raises(DatasetError, match=message):
        MixtureDataset({"one": _Stub(), "two": other})


def test_camera_map_renames_one_datasets_cameras_and_keeps_each_control_rate(tmp_path):
    """Meta-World (corner, gripper; 80 Hz) beside LIBERO (image, wrist_image; 20 Hz), as Octo mixes them."""
    mw = write_synthetic_dataset(tmp_path / "mw", episodes=2, length=6, cameras=("corner", "gripper"), fps=80)
    lib = write_libero_like(tmp_path / "lib", length=6)
    parts = {"mt10": Dataset(mw, chunk=2), "libero": Dataset(lib, chunk=2)}
    with pytest.raises(DatasetError, match="camera 'corner' is in dataset 'mt10' but not in 'libero'"):
        MixtureDataset(parts)
    mix = MixtureDataset(parts, cameras={"mt10": {"corner": "image", "gripper": "wrist_image"}})
    assert mix.camera_keys == ["observation.images.image", "observation.images.wrist_image"]
    assert mix.dataset_fps == {"mt10": 80.0, "libero": 20.0} and mix.fps == 80.0
    names = {mix.locate(i)[0]: i for i in range(len(mix))}
    item = mix[names["mt10"]]
    frame = parts["mt10"][mix.locate(names["mt10"])[1]]
    assert torch.equal(item["observation.images.image"], frame["observation.images.corner"])
    assert torch.equal(
        item["observation.images.wrist_image_is_pad"], frame["observation.images.gripper_is_pad"]
    )
    assert "observation.images.corner" not in item
    batch = default_collate([mix[i] for i in range(4)])  # identical keys across the two datasets
    assert batch["observation.images.image"].shape == (4, 32, 32, 3)
    assert set(mix.stats["mt10"]) >= {"observation.images.image", "observation.images.wrist_image"}
    with pytest.raises(DatasetError, match=r"camera map for 'mt10' names cameras \['top'\] it lacks"):
        MixtureDataset(parts, cameras={"mt10": {"top": "image"}})
    with pytest.raises(DatasetError, match="camera map names unknown datasets"):
        MixtureDataset(parts, cameras={"metaworld": {"corner": "image"}})
    with pytest.raises(DatasetError, match="gives two cameras one name"):
        MixtureDataset(parts, cameras={"mt10": {"corner": "gripper"}})


def test_bad_weights_are_named():
    ds = {"one": _Stub(), "two": _Stub()}
    with pytest.raises(DatasetError, match=r"unknown \['three'\], missing \['two'\]"):
        MixtureDataset(ds, {"one": 1.0, "three": 1.0})
    with pytest.raises(DatasetError, match="weight of dataset 'two' is 0.0"):
        MixtureDataset(ds, {"one": 1.0, "two": 0.0})
    with pytest.raises(DatasetError, match="without '@'"):
        MixtureDataset({"a@b": _Stub()})
    assert MixtureDataset(ds).weights == {"one": 0.5, "two": 0.5}  # None: proportional to size
