"""Meta-World subtask phases (π0.5): derivation from expert traces, `add_subtasks` on a recording, the
`vlaforge dataset add-subtasks` command, and labels written while recording."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.extras import require
from vlaforge.data import Dataset, DatasetError, DatasetWriter
from vlaforge.data.synthetic import synthetic_episode, synthetic_features
from vlaforge.envs.subtasks import ACT, GRASP, REACH, add_subtasks, episode_subtasks, segment_phases
from vlaforge.types import ACTION_KEY, STATE_KEY

LENGTHS = (6, 9, 7)
PUSH = "push the puck to the goal"  # a Meta-World instruction: add-subtasks maps it to push-v3


def _write(root: Path, *, cameras: tuple[str, ...] = ()) -> Path:
    """An unlabelled recording of three push-v3 episodes (synthetic columns and frames)."""
    rng = np.random.default_rng(0)
    feats = synthetic_features(cameras, 16, 16)
    with DatasetWriter(root, fps=10, features=feats) as w:
        for n in LENGTHS:
            w.add_episode(synthetic_episode(n, feats, rng), PUSH)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
    a = add_subtasks(_write(tmp_path / "a"), source="columns")
    b = add_subtasks(_write(tmp_path / "b"), source="columns")
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


def test_add_subtasks_keeps_frame_caches_working(tmp_path):
    root = _write(tmp_path / "ds", cameras=("corner",))
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

    root = _write(tmp_path / "ds")
    assert main(["dataset", "add-subtasks", str(root), "--from-columns", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "push-v3" in out and "reach the puck" in out and "%" in out
    assert main(["dataset", "add-subtasks", str(root), "--from-columns", "--quiet"]) == 1  # already labelled


# -------------------------------------------------------------------------------------- recording


@pytest.mark.slow
def test_record_with_subtasks_labels_phases_in_order(tmp_path):
    require("metaworld", "sim")
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
