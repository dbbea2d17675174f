"""Subtask labels: storage round trip, unchanged unlabelled datasets, phase derivation, add-subtasks, collate."""

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
from vlaforge.data.subtasks import ACT, GRASP, REACH, add_subtasks, episode_subtasks, segment_phases
from vlaforge.data.synthetic import synthetic_episode, synthetic_features
from vlaforge.types import ACTION_KEY, STATE_KEY

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


# --------------------------------------------------------------------------------------- derivation


def _grasp_trace() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Push-like expert: approach (0-9), close the gripper while settling (10-14), drive to the goal (15-)."""
    T = 30
    action = np.zeros((T, 4), np.float32)
    action[:10, :3] = (0.0, 0.0, -0.8)  # descend toward the puck, saturated-ish
    action[10:15, :3] = (0.0, 0.0, -0.1)  # converging on the sub-goal: small command
    action[15:, :3] = (1.0, 0.0, 0.0)  # sub-goal switch: toward the goal
    action[10:, 3] = 0.6  # close
    state = np.zeros((T, 4), np.float32)
    state[:, 0] = np.concatenate([np.zeros(15), 0.01 * np.arange(1, 16)])  # hand x
    state[:, 2] = np.linspace(0.2, 0.05, T)  # hand z
    obj = np.zeros((T, 3))
    obj[:, 2] = 0.02
    obj[17:, 0] = 0.01 * np.arange(1, 14)  # the puck moves with the hand from frame 17 on
    return state, action, obj


def test_phases_of_a_grasping_trace():
    state, action, obj = _grasp_trace()
    expected = np.array([REACH] * 10 + [GRASP] * 7 + [ACT] * 13)
    np.testing.assert_array_equal(segment_phases(state, action, obj), expected)  # true object motion
    from_columns = np.array([REACH] * 10 + [GRASP] * 5 + [ACT] * 15)  # the command jump at 15
    np.testing.assert_array_equal(segment_phases(state, action), from_columns)
    texts = episode_subtasks("push", state, action, obj)
    assert texts[0] == "reach the puck" and texts[12] == "grasp the puck" and texts[-1] == PUSH
    generic = episode_subtasks("some-other-robot-task", state, action, obj)
    assert sorted(set(generic)) == ["grasp the object", "move to the goal", "reach the object"]


def test_phases_of_a_pressing_trace():
    """Constant closed fist (no grasp): align, approach, then the button moves once the hand touches it."""
    T = 40
    action = np.zeros((T, 4), np.float32)
    action[:, 3] = 1.0
    action[:8, :3] = (0.0, 1.0, 0.0)
    action[8:20, :3] = (0.0, 0.0, -1.0)  # switch at 8
    action[20:, :3] = (0.0, 1.0, 0.0)  # switch at 20: push toward the button
    obj = np.tile([0.0, 0.9, 0.0], (T, 1))
    obj[:5, 2] = np.linspace(0.05, 0.0, 5)  # settles after reset while the hand is far: not contact
    obj[24:, 1] += 0.002 * np.arange(1, 17)  # pressed from frame 24
    state = np.zeros((T, 4), np.float32)
    state[:24, 1] = np.linspace(0.5, 0.88, 24)  # hand y: approach ...
    state[24:, 1] = obj[24:, 1] - 0.02  # ... then pushing the button
    expected = np.array([REACH] * 24 + [ACT] * 16)
    np.testing.assert_array_equal(segment_phases(state, action, obj), expected)
    np.testing.assert_array_equal(segment_phases(state, action), [REACH] * 20 + [ACT] * 20)
    texts = episode_subtasks("button-press-v3", state, action, obj)
    assert texts[0] == "reach the button" and texts[-1] == "press the button"
    assert set(episode_subtasks("reach", state, action, obj)) == {"reach the goal"}  # reaching only


def test_phases_are_in_order_even_with_a_flickering_gripper():
    state, action, obj = _grasp_trace()
    action[3, 3] = 1.0  # a one-frame close command is not a grasp
    phases = segment_phases(state, action, obj)
    assert phases[3] == REACH and np.all(np.diff(phases) >= 0)
    with pytest.raises(ValueError, match="dx, dy, dz, gripper"):
        segment_phases(state, action[:, :3])


# ------------------------------------------------------------------------------------- add-subtasks


def test_add_subtasks_is_deterministic_and_loads(tmp_path):
    a = add_subtasks(_write(tmp_path / "a", labelled=False), source="columns")
    b = add_subtasks(_write(tmp_path / "b", labelled=False), source="columns")
    assert _digest(a.root) == _digest(b.root)
    ds = Dataset(a.root)
    assert ds.has_subtasks and set(ds.meta.subtasks) <= {"reach the puck", "grasp the puck", PUSH}
    assert list(a.summaries) == ["push-v3"] and a.summaries["push-v3"].episodes == 3
    assert abs(sum(a.summaries["push-v3"].shares.values()) - 1.0) < 1e-9
    for e in range(ds.num_episodes):  # exactly what the derivation gives for the stored columns
        episode = ds.episode(e)
        assert episode["subtasks"] == episode_subtasks("push", episode[STATE_KEY], episode[ACTION_KEY])
        assert "subtask_index" in ds.meta.episodes[e].stats  # per-episode statistics, as the writer keeps
    assert "push-v3" in a.table() and "columns" in a.table()
    with pytest.raises(DatasetError, match="already has subtask labels"):
        add_subtasks(a.root, source="columns")
    add_subtasks(a.root, source="columns", overwrite=True)  # relabelling replaces the column
    assert _digest(a.root) == _digest(b.root)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary trees left


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


def test_add_subtasks_keeps_frame_caches_working(tmp_path):
    root = _write(tmp_path / "ds", labelled=False, cameras=("corner",))
    before = Dataset(root)
    before.cache_frames()
    add_subtasks(root, source="columns")
    after = Dataset(root)
    after.cache_frames()  # the data files changed: the cache is checked (and rebuilt), not trusted blindly
    for i in (0, len(after) - 1):
        np.testing.assert_array_equal(
            after[i]["observation.images.corner"], before[i]["observation.images.corner"]
        )
        assert "subtask" in after[i]


def test_cli_add_subtasks_prints_the_phase_table(tmp_path, capsys):
    from vlaforge.cli import main

    root = _write(tmp_path / "ds", labelled=False)
    assert main(["dataset", "add-subtasks", str(root), "--from-columns", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "push-v3" in out and "reach the puck" in out and "%" in out
    assert main(["dataset", "add-subtasks", str(root), "--from-columns", "--quiet"]) == 1  # already labelled


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


# -------------------------------------------------------------------------------------- recording


@pytest.mark.slow
def test_record_with_subtasks_labels_phases_in_order(tmp_path):
    pytest.importorskip("metaworld")
    from vlaforge.envs.record import record, summary_path

    out = record(
        "push",
        1,
        tmp_path / "push",
        workers=0,
        image_size=16,
        cameras=("corner",),
        progress=False,
        subtasks=True,
    )
    ds = Dataset(out, cameras=[])
    texts = ds.episode(0)["subtasks"]
    order = list(dict.fromkeys(texts))
    assert order == ["reach the puck", "grasp the puck", PUSH]  # each phase once, in order
    summary = json.loads(summary_path(out).read_text())
    assert list(summary["subtasks"]["push-v3"]["shares"]) == order
    # Post hoc, the replay from the recorded seed reproduces the recorder's labels exactly.
    report = add_subtasks(out, overwrite=True)
    assert report.fallbacks == [] and report.summaries["push-v3"].sources == {"replay"}
    assert Dataset(out, cameras=[]).episode(0)["subtasks"] == texts


@pytest.mark.parametrize(("src_version", "dst_version"), [("v3.0", "v2.1"), ("v2.1", "v3.0")])
def test_convert_keeps_subtask_labels(tmp_path, src_version, dst_version):
    from vlaforge.data.convert import convert_dataset

    src = _write(tmp_path / "src", version=src_version, labelled=True, cameras=("front",))
    dst = convert_dataset(src, tmp_path / "dst", to=dst_version)
    before, after = Dataset(src), Dataset(dst)
    assert after.meta.subtasks == before.meta.subtasks
    for e in range(len(LENGTHS)):
        assert after.episode(e)["subtasks"] == before.episode(e)["subtasks"]
