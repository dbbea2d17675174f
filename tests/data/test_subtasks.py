"""Subtask labels on disk: storage round trip, unchanged unlabelled datasets, atomic relabelling, collate.

The Meta-World phase derivation and `add_subtasks` are tested in tests/envs/test_metaworld_subtasks.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader, default_collate

from vlaforge.data import Dataset, DatasetError, DatasetWriter, MixtureDataset, write_synthetic_dataset
from vlaforge.data import subtasks as st
from vlaforge.data.format import SUBTASK_FEATURE
from vlaforge.data.synthetic import synthetic_episode, synthetic_features
from vlaforge.envs.subtasks import add_subtasks

LENGTHS = (6, 9, 7)
PUSH = "push the puck to the goal"  # a Meta-World instruction: add-subtasks maps it to push-v3


def _labels(length: int, k: int) -> list[str]:
    """Made-up per-frame texts: two phases per episode, the second one shared across episodes."""
    cut = length // 2
    return [f"first part of episode {k}"] * cut + ["second part"] * (length - cut)


def _write(root: Path, *, version: str = "v3.0", labelled: bool, cameras: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(0)
    feats = synthetic_features(cameras, 16, 16)
    with DatasetWriter(root, fps=10, features=feats, version=version, subtasks=labelled) as w:
        for k, n in enumerate(LENGTHS):
            w.add_episode(
                synthetic_episode(n, feats, rng), PUSH, subtasks=_labels(n, k) if labelled else None
            )
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------ storage


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_written_labels_read_back(tmp_path, version):
    root = _write(tmp_path / "ds", version=version, labelled=True)
    ds = Dataset(root, chunk=3)
    expected = [
        "first part of episode 0",
        "second part",
        "first part of episode 1",
        "first part of episode 2",
    ]
    assert ds.has_subtasks and ds.meta.subtasks == expected  # first-seen order, shared text stored once
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["subtask_index"] == {"dtype": "int64", "shape": [1], "names": None}
    assert "subtask_index" in ds.stats
    for e, n in enumerate(LENGTHS):
        episode = ds.episode(e)
        assert episode["subtasks"] == _labels(n, e)
        assert [ds.meta.subtasks[i] for i in episode["subtask_index"]] == _labels(n, e)
    start = LENGTHS[0]  # first frame of episode 1
    item = ds[start + 5]
    assert item["subtask"] == "second part" and int(item["subtask_index"]) == 1
    assert ds[start]["subtask"] == "first part of episode 1"
    batch = next(iter(DataLoader(ds, batch_size=4)))  # the trainer's collate: list[str] of length B
    assert batch["subtask"] == [_labels(LENGTHS[0], 0)[t] for t in range(4)]
    assert batch["subtask_index"].shape == (4,)
    if version == "v3.0":  # same layout as tasks.parquet: LeRobot reads it with pandas (index = text)
        table = pq.read_table(root / "meta/subtasks.parquet")
        assert table.column("subtask").to_pylist() == expected
        assert table.schema.pandas_metadata["index_columns"] == ["subtask"]


def test_unlabelled_dataset_has_no_subtask_keys(v30_root, v21_root):
    for root in (v30_root, v21_root):
        ds = Dataset(root)
        assert not ds.has_subtasks and ds.meta.subtasks is None
        assert "subtask" not in ds[0] and "subtask_index" not in ds[0] and "subtasks" not in ds.episode(0)
        assert "subtask_index" not in json.loads((root / "meta/info.json").read_text())["features"]
        assert not list((root / "meta").glob("subtasks.*"))
        assert "subtask" not in default_collate([ds[0], ds[1]])


def test_writer_rejects_inconsistent_labels(tmp_path):
    feats = synthetic_features((), 16, 16)
    ep = synthetic_episode(4, feats, np.random.default_rng(0))
    with DatasetWriter(tmp_path / "a", fps=10, features=feats, subtasks=True) as w:
        with pytest.raises(DatasetError, match="one text per frame"):
            w.add_episode(ep, PUSH)
        with pytest.raises(DatasetError, match=r"expected one text per frame \(4\), got 3"):
            w.add_episode(ep, PUSH, subtasks=["a", "b", "c"])
        with pytest.raises(DatasetError, match=r"subtasks\[1\] must be a non-empty string"):
            w.add_episode(ep, PUSH, subtasks=["a", "", "b", "c"])
        w.add_episode(ep, PUSH, subtasks=["a"] * 4)
    assert Dataset(tmp_path / "a").meta.subtasks == ["a"]  # rejected episodes left no text behind
    unlabelled = DatasetWriter(tmp_path / "b", fps=10, features=feats)
    with pytest.raises(DatasetError, match="subtasks=True"):
        unlabelled.add_episode(ep, PUSH, subtasks=["a"] * 4)
    unlabelled.abort()
    with pytest.raises(DatasetError, match="added by the writer"):
        DatasetWriter(tmp_path / "c", fps=10, features={**feats, "subtask_index": SUBTASK_FEATURE})


def test_missing_subtask_list_is_a_clear_error(tmp_path):
    root = _write(tmp_path / "ds", labelled=True)
    (root / "meta/subtasks.parquet").unlink()
    with pytest.raises(DatasetError, match="subtasks.parquet is missing"):
        Dataset(root)


# ------------------------------------------------------------------------------- atomic relabelling


def test_add_subtasks_failure_leaves_the_dataset_intact(tmp_path, monkeypatch):
    root = _write(tmp_path / "ds", version="v2.1", labelled=False)  # one data file per episode
    before = _digest(root)
    calls = []

    def failing_write(table, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        pq.write_table(table, st._fresh(path))

    monkeypatch.setattr(st, "_write_table", failing_write)
    with pytest.raises(OSError, match="simulated"):
        add_subtasks(root, source="columns")
    assert len(calls) == 2 and _digest(root) == before  # the first rewritten file never touched the original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert not Dataset(root).has_subtasks


# ---------------------------------------------------------------------------------------- mixtures


def test_mixture_passes_subtasks_through_collate(tmp_path):
    a = Dataset(_write(tmp_path / "a", labelled=True))
    b_root = write_synthetic_dataset(tmp_path / "b", episodes=2, length=8, cameras=(), seed=1)
    b = Dataset(add_subtasks(b_root, source="columns", task="button-press").root)
    mix = MixtureDataset({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, seed=0)
    assert mix.has_subtasks and set(mix.meta.subtasks) == set(a.meta.subtasks) | set(b.meta.subtasks)
    batch = default_collate([mix[i] for i in range(8)])
    assert isinstance(batch["subtask"], list) and len(batch["subtask"]) == 8
    for text, index in zip(batch["subtask"], batch["subtask_index"].tolist(), strict=True):
        assert mix.meta.subtasks[index] == text  # indices refer to the mixture's union list
    plain = Dataset(write_synthetic_dataset(tmp_path / "c", episodes=2, length=8, cameras=()))
    with pytest.warns(UserWarning, match="no subtask labels"):
        partial = MixtureDataset({"a": a, "c": plain}, {"a": 1.0, "c": 1.0})
    assert partial.meta.subtasks is None
    batch = default_collate([partial[i] for i in range(8)])  # identical keys: the labels are dropped
    assert "subtask" not in batch and "subtask_index" not in batch


# -------------------------------------------------------------------------------------- conversion


@pytest.mark.parametrize(("src_version", "dst_version"), [("v3.0", "v2.1"), ("v2.1", "v3.0")])
def test_convert_keeps_subtask_labels(tmp_path, src_version, dst_version):
    from vlaforge.data.convert import convert_dataset

    src = _write(tmp_path / "src", version=src_version, labelled=True, cameras=("front",))
    dst = convert_dataset(src, tmp_path / "dst", to=dst_version)
    before, after = Dataset(src), Dataset(dst)
    assert after.meta.subtasks == before.meta.subtasks
    for e in range(len(LENGTHS)):
        assert after.episode(e)["subtasks"] == before.episode(e)["subtasks"]
