"""`vlaforge eval` on the fake env: --expert, a run dir with --execute, --instructions, bad input."""

from __future__ import annotations

import json

import eval_fakes
import pytest
from eval_fakes import ConstantPolicy, make_fake_env

import vlaforge.envs
import vlaforge.inference.load
from tests.synthetic import write_libero_like
from vlaforge.cli import main
from vlaforge.eval import commands


@pytest.fixture
def fake_envs(monkeypatch):
    """Route `vlaforge.envs.make_env` / `resolve_tasks` to the 1-D reach env."""
    monkeypatch.setattr(vlaforge.envs, "make_env", make_fake_env, raising=False)
    monkeypatch.setattr(vlaforge.envs, "resolve_tasks", lambda spec: [spec], raising=False)


def test_eval_expert_writes_report_and_prints_table(fake_envs, tmp_path, capsys):
    out = tmp_path / "expert"
    rc = main(["eval", "--expert", "--tasks", "reach-mixed,reach-easy", "--episodes", "3", "--videos", "0",
               "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    assert list(data["tasks"]) == ["reach-mixed", "reach-easy"]
    assert data["tasks"]["reach-mixed"]["successes"] == 2  # targets 0.3, 0.6 reached; 0.9 is too far
    assert data["tasks"]["reach-easy"]["successes"] == 3
    assert data["config"]["policy"] == "scripted expert"
    assert data["config"]["policy_spec"]["action_dim"] == 1  # followed the env
    assert not (out / "videos").exists()
    printed = capsys.readouterr().out
    assert "| reach-mixed | 2/3 | 66.7% |" in printed and str(out / "eval.json") in printed


def test_eval_run_dir_with_execute_and_instructions(fake_envs, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    loaded = []

    def fake_load(path):
        loaded.append(path)
        return ConstantPolicy(history=2, chunk=4)

    monkeypatch.setattr(vlaforge.inference.load, "load_policy", fake_load)
    instr = tmp_path / "instructions.json"
    instr.write_text(json.dumps({"reach-easy": "nudge the block"}))
    rc = main(["eval", str(run_dir), "--tasks", "reach-easy", "--episodes", "2", "--execute", "2",
               "--instructions", str(instr), "--no-progress"])  # fmt: skip
    assert rc == 0 and loaded == [str(run_dir)]
    data = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert data["config"]["executor"] == {"mode": "receding", "execute": 2, "ensemble_decay": 0.01}
    assert data["config"]["instructions"] == {"reach-easy": "nudge the block"}
    assert data["tasks"]["reach-easy"]["instruction"] == "nudge the block"
    assert data["latency"]["calls"] == 4  # 3 steps, re-planning every 2 -> 2 calls per episode
    assert (run_dir / "eval" / "videos" / "reach-easy_seed0_success.mp4").exists()


def test_eval_rejects_bad_arguments(fake_envs, tmp_path):
    with pytest.raises(SystemExit, match="RUN_DIR is required"):
        main(["eval", "--tasks", "reach-easy"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="do not apply to --expert"):
        main(["eval", "--expert", "--execute", "2"])
    with pytest.raises(SystemExit):  # argparse: --execute and --ensemble are exclusive
        main(["eval", "--expert", "--execute", "2", "--ensemble"])
    bad = tmp_path / "bad.json"
    bad.write_text('["not", "a", "dict"]')
    with pytest.raises(ValueError, match="must hold a JSON object"):
        commands.load_instructions(bad)


def test_fake_env_module_is_importable_by_workers():
    # the worker test spawns processes that import this helper by name
    assert eval_fakes.make_fake_env.__module__ == "eval_fakes"


def test_a_cross_embodiment_run_trains_with_a_camera_map_and_evaluates_as_one_dataset(
    fake_envs, tmp_path, capsys
):
    """`train --camera-map` puts the reach env's corner/gripper cameras under another dataset's names;
    `eval --dataset reach` acts as that dataset: its 1-D action, 10 Hz, the env's own camera names."""
    from vlaforge.data import write_synthetic_dataset

    reach = write_synthetic_dataset(
        tmp_path / "reach", episodes=2, length=8, state_dim=2, action_dim=1, fps=10
    )
    arm = write_libero_like(tmp_path / "arm")
    small = {"width": 32, "depth": 1, "heads": 2, "mlp_dim": 64, "stem_channels": [8, 16], "history": 1}
    run = tmp_path / "run"
    rc = main(["train", "--data", f"arm={arm},reach={reach}", "--camera-map", "reach:corner=image,gripper=wrist_image",
               "--out", str(run), "--steps", "2", "--batch-size", "4", "--workers", "0", "--no-cache",
               "--head", "l1", "--model-overrides", json.dumps(small)])  # fmt: skip
    assert rc == 0
    with pytest.raises(
        SystemExit, match=r"several datasets \['arm', 'reach'\]: choose the one to act as with --dataset"
    ):
        main(["eval", str(run), "--tasks", "reach-easy", "--episodes", "1", "--no-progress"])
    with pytest.raises(SystemExit, match=r"--dataset lab: .* was trained on \['arm', 'reach'\]"):
        main(["eval", str(run), "--tasks", "reach-easy", "--dataset", "lab", "--no-progress"])
    rc = main(["eval", str(run), "--tasks", "reach-easy", "--dataset", "reach", "--episodes", "1", "--videos", "0",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    data = json.loads((run / "eval-reach" / "eval.json").read_text())
    spec = data["config"]["policy_spec"]
    assert (
        sorted(spec["cameras"]) == ["corner", "gripper"] and spec["action_dim"] == 1 and spec["fps"] == 10.0
    )
    assert data["config"]["policy"].endswith(" as reach")
    with pytest.raises(
        SystemExit, match=r"several datasets \['arm', 'reach'\]: choose the robot it serves with --dataset"
    ):
        main(["serve", str(run)])
    with pytest.raises(SystemExit, match="--camera-map renames a mixture's cameras: give several --data"):
        main(
            [
                "train",
                "--data",
                str(reach),
                "--camera-map",
                "reach:corner=image",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
    with pytest.raises(SystemExit, match="expected NAME:its_camera=policy_camera"):
        main(
            [
                "train",
                "--data",
                f"arm={arm},reach={reach}",
                "--camera-map",
                "reach:corner",
                "--out",
                str(tmp_path / "r3"),
            ]
        )
