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


def test_quickstart_cli_writes_its_summary(tmp_path):
    """`vlaforge quickstart` (what `make demo` runs), shrunk: its quickstart.json holds the command that
    reproduces it, the machine, stage times and the training and evaluation results of the run's own files."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    data, run = tmp_path / "data", tmp_path / "run"
    args = ["quickstart", "--tasks", "drawer-close-v3", "--episodes-per-task", "2", "--steps", "4"]
    args += ["--eval-episodes", "2", "--workers", "1", "--data", str(data), "--out", str(run)]
    assert main(args) == 0
    s = json.loads((run / "quickstart.json").read_text())
    assert s["command"].startswith("vlaforge quickstart --tasks drawer-close-v3 --episodes-per-task 2 ")
    assert "--steps 4 " in s["command"] and f"--out {run}" in s["command"]
    assert s["machine"]["cores"] and s["tasks"] == ["drawer-close-v3"]
    assert s["train"]["steps"] == 4 and s["train"]["parameters"] > 0
    assert s["eval"]["overall"]["episodes"] == 2
    assert s["mean_success"] == s["eval"]["overall"]["mean_success"]
    assert s["total_s"] >= s["record_s"] + s["train_s"] + s["eval_s"] > 0
