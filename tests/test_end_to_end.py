"""record -> train -> eval through the real CLI on Meta-World (slow: runs in `make test-all`)."""

import json
import os

import pytest

from vlaforge.cli import main

pytestmark = pytest.mark.slow


def test_record_train_eval_cli(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    data, run = tmp_path / "data", tmp_path / "run"
    assert (
        main(
            [
                "record",
                "--tasks",
                "drawer-close",
                "--episodes-per-task",
                "2",
                "--out",
                str(data),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["dataset", "info", str(data)]) == 0
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(run),
                "--steps",
                "3",
                "--batch-size",
                "8",
                "--workers",
                "0",
                "--head",
                "flow",
            ]
        )
        == 0
    )
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 3
    rc = main(
        ["eval", str(run), "--tasks", "drawer-close", "--episodes", "1", "--max-steps", "20", "--no-progress"]
    )
    assert rc == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["tasks"]["drawer-close-v3"]["episodes"] == 1
    assert report["overall"]["episodes"] == 1
    assert (run / "eval" / "success.png").is_file() and (run / "eval" / "eval.md").is_file()
