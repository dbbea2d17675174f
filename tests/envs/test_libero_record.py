"""`vlaforge record --suite ...`: a LIBERO dataset in LeRobot's LIBERO layout (slow: real rollouts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.extras import require

require("libero", "libero")


@pytest.mark.slow
def test_record_one_libero_episode(tmp_path):
    from vlaforge.cli import main
    from vlaforge.data import Dataset
    from vlaforge.envs.record import summary_path

    out = tmp_path / "goal"
    argv = ["record", "--suite", "libero_goal/put_the_bowl_on_the_plate", "--episodes-per-task", "1"]
    assert main([*argv, "--out", str(out), "--workers", "0", "--image-size", "64", "--quiet"]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["robot_type"] == "panda" and info["fps"] == 20
    features = info["features"]
    assert set(features) >= {"observation.images.image", "observation.images.wrist_image"}
    assert features["observation.state"]["shape"] == [8] and features["action"]["shape"] == [7]
    summary = json.loads(summary_path(out).read_text())
    assert "official initial state" in summary["config"]["layouts"] and summary["episodes"] == 1
    ds = Dataset(out, history=1, chunk=4)
    sample = ds[0]
    assert sample["task"] == "put the bowl on the plate"
    assert np.asarray(sample["observation.images.image"]).shape[-3:] == (64, 64, 3)
    assert main(["record", "--suite", "libero_goal/0", "--tasks", "reach", "--out", str(tmp_path / "x")]) == 2
