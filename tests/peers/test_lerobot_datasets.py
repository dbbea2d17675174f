"""Datasets both ways with LeRobot 0.3.2's own code (``lerobot.datasets.lerobot_dataset.LeRobotDataset``):

* LeRobot's writer (``LeRobotDataset.create`` → ``add_frame`` → ``save_episode``: v2.1, PNG frames encoded to
  AV1 mp4 by LeRobot) → vlaforge's ``Dataset`` reads every frame: state, action, timestamps, indices and
  task strings equal; images equal to what LeRobot's own reader decodes (PyAV, through the torchvision
  stand-in); the statistics vlaforge loads equal LeRobot's aggregated ``meta.stats``;
* vlaforge's writer (v3.0) → ``vlaforge dataset convert --to v2.1`` → LeRobot's reader opens it and
  returns the same frames (LeRobot 0.3.2 reads v2.1 only; v3.0 needs LeRobot >= 0.4).

Runs where LeRobot 0.3.2 is installed (``make test-peers``); skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from tests.peers.need import need

need("lerobot.datasets.lerobot_dataset", "LeRobot 0.3.2")

from tests.peers.lerobot_data import CAMS, FPS, LENGTHS, TASKS, A, S, lerobot_features, synthetic  # noqa: E402
from vlaforge.data import Dataset  # noqa: E402
from vlaforge.data.convert import convert_dataset  # noqa: E402
from vlaforge.data.synthetic import smooth_frames  # noqa: E402
from vlaforge.data.video import keep_thread_scheduling  # noqa: E402
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY  # noqa: E402


def lerobot_dataset(repo_id: str, root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend="pyav")


def image_u8(x: torch.Tensor) -> np.ndarray:
    """LeRobot's float (3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    return (x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def assert_same_frames(ours: Dataset, theirs) -> dict[str, float]:
    """Every frame of both readers: numbers exactly, images exactly (same PyAV decoding) -> max diffs."""
    assert len(ours) == len(theirs)
    worst = {"images": 0.0, "state/action": 0.0}
    for i in range(len(ours)):
        o, t = ours[i], theirs[i]
        for key in ("index", "episode_index", "frame_index", "task_index"):
            assert int(o[key]) == int(t[key]), (i, key)
        assert abs(float(o["timestamp"]) - float(t["timestamp"])) < 1e-6
        assert o["task"] == t["task"]
        for key in (STATE_KEY, ACTION_KEY):
            d = float((o[key] - t[key]).abs().max())
            worst["state/action"] = max(worst["state/action"], d)
        for c in CAMS:
            d = np.abs(
                o[IMAGE_PREFIX + c].numpy().astype(int) - image_u8(t[IMAGE_PREFIX + c]).astype(int)
            ).max()
            worst["images"] = max(worst["images"], float(d))
    assert worst == {"images": 0.0, "state/action": 0.0}, worst
    return worst


def write_episodes(writer, g: np.random.Generator) -> None:
    """LeRobot's recording loop: ``add_frame`` per frame, ``save_episode`` per episode."""
    for e, n in enumerate(LENGTHS):
        frames = {c: smooth_frames(n, 32, 32, phase=e + 0.5 * k) for k, c in enumerate(CAMS)}
        for i in range(n):
            frame = {IMAGE_PREFIX + c: frames[c][i] for c in CAMS}
            frame[STATE_KEY] = g.normal(size=S).astype(np.float32)
            frame[ACTION_KEY] = g.normal(size=A).astype(np.float32)
            writer.add_frame(frame, task=TASKS[e])
        writer.save_episode()


def test_vlaforge_reads_a_dataset_written_by_lerobot(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "by-lerobot"
    writer = LeRobotDataset.create(
        "local/by-lerobot", fps=FPS, features=lerobot_features(), root=root, video_backend="pyav"
    )
    g = np.random.default_rng(0)
    # LeRobot encodes with SVT-AV1, which as root leaves the thread SCHED_FIFO (tests/conftest.py)
    with keep_thread_scheduling():
        write_episodes(writer, g)

    ours = Dataset(root, accurate_color=False)  # PyAV's own RGB conversion, as LeRobot's reader
    ours = Dataset(root, accurate_color=False)  # PyAV's own RGB conversion, as LeRobot's reader
    theirs = lerobot_dataset("local/by-lerobot", root)
    assert ours.version == "v2.1" and ours.num_episodes == len(LENGTHS) and len(ours) == sum(LENGTHS)
    assert_same_frames(ours, theirs)
    for key in (STATE_KEY, ACTION_KEY):  # statistics aggregated from LeRobot's episodes_stats.jsonl
        for stat in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(
                np.asarray(ours.stats[key][stat]).reshape(-1),
                np.asarray(theirs.meta.stats[key][stat]).reshape(-1),
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{key} {stat}",
            )


def test_lerobot_reads_the_v2_1_export_of_a_vlaforge_dataset(tmp_path):
    src = synthetic(tmp_path / "v3")
    dst = convert_dataset(src, tmp_path / "v2.1", to="v2.1")
    theirs = lerobot_dataset("local/by-vlaforge", dst)
    assert theirs.meta.info["codebase_version"] == "v2.1"
    assert theirs.num_episodes == 3 and theirs.meta.camera_keys == [IMAGE_PREFIX + c for c in CAMS]
    assert_same_frames(Dataset(src, accurate_color=False), theirs)
