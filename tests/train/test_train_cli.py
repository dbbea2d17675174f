"""`vlaforge train` flows on a generated on-disk dataset: pretrain -> fine-tune (LoRA, head only) -> load -> resume."""

import json
import os

import pytest
import torch

from vlaforge.cli import main
from vlaforge.data import write_synthetic_dataset
from vlaforge.policies.octo.policy import Policy

SMALL = json.dumps(
    {
        "width": 32,
        "depth": 1,
        "heads": 2,
        "mlp_dim": 64,
        "stem_channels": [8, 16],
        "encoder_image_size": [32, 32],
    }
)


def _train(*args: str) -> int:
    base = ["train", "--batch-size", "4", "--workers", "0", "--save-every", "2", "--no-cache"]
    return main([*base, *args])


def test_pretrain_finetune_lora_resume(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data", episodes=3, length=12, height=32, width=32)
    assert (
        _train(
            "--data",
            str(data),
            "--out",
            str(tmp_path / "pre"),
            "--steps",
            "2",
            "--head",
            "l1",
            "--model-overrides",
            SMALL,
        )
        == 0
    )

    run = tmp_path / "ft"
    rc = _train(
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "2",
        "--init-from",
        str(tmp_path / "pre"),
        "--lora-rank",
        "4",
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "trainable params" in out and "loaded" in out.lower()
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["finetune"]["lora"]["rank"] == 4 and saved["finetune"]["init_from"]
    policy = Policy.load(run)  # the saved policy has the adapters merged: a plain checkpoint
    assert not any("lora_" in k for k in policy.state_dict())

    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 4
    state = torch.load(sorted((run / "checkpoints").iterdir())[-1] / "trainer_state.pt", weights_only=True)
    assert any(k.endswith(".lora_A.default.weight") for k in state["model"])  # raw state: peft's keys
    assert any(k.endswith(".base_layer.weight") for k in state["model"])
    assert not any("lora_" in k for k in Policy.load(run).state_dict())  # the resumed run's policy: merged


def _raw_weights(run, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"{step:08d}" / "trainer_state.pt", weights_only=True)["model"]


def test_train_only_head_trains_the_head_alone_and_resumes(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=10, height=32, width=32)
    pre = tmp_path / "pre"
    assert (
        _train(
            "--data", str(data), "--out", str(pre), "--steps", "2", "--head", "l1", "--model-overrides", SMALL
        )
        == 0
    )
    run = tmp_path / "ft"
    rc = _train(
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "2",
        "--init-from",
        str(pre),
        "--train-only",
        "head.*",
    )
    assert rc == 0
    assert "trainable params" in capsys.readouterr().out
    assert json.loads((run / "train_config.json").read_text())["finetune"]["train_only"] == ["head.*"]
    before, after = Policy.load(pre).state_dict(), Policy.load(run).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)  # EMA of a frozen weight is the weight

    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0  # the resume freezes the same weights
    w2, w4 = _raw_weights(run, 2), _raw_weights(run, 4)
    changed = {k for k in w2 if not torch.equal(w2[k], w4[k])}
    assert changed and all(k.startswith("head.") for k in changed)


@pytest.mark.parametrize("other", [["--lora-rank", "4"], ["--freeze", "image_encoders.*"]])
def test_train_only_with_lora_or_freeze_is_an_error(tmp_path, other):
    with pytest.raises(SystemExit, match=rf"--train-only.*cannot be combined with {other[0]}"):
        _train(
            "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"), "--train-only", "head.*", *other
        )
    assert not (tmp_path / "run").exists()


def test_freeze_flag_freezes(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=10, height=32, width=32)
    run = tmp_path / "run"
    assert (
        _train(
            "--data",
            str(data),
            "--out",
            str(run),
            "--steps",
            "2",
            "--head",
            "l1",
            "--model-overrides",
            SMALL,
            "--freeze",
            "image_encoders.*",
        )
        == 0
    )
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["trainable_parameters"] < summary["parameters"]


@pytest.mark.slow
def test_in_training_eval_logs_success_and_keeps_best(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    data = write_synthetic_dataset(
        tmp_path / "data", episodes=2, length=10, height=128, width=128, state_dim=4, action_dim=4
    )
    run = tmp_path / "run"
    args = [
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "2",
        "--head",
        "l1",
        "--model-overrides",
        SMALL,
    ]
    assert _train(*args, "--eval-every", "2", "--eval-tasks", "reach", "--eval-episodes", "1") == 0
    curve = json.loads((run / "train_summary.json").read_text())["curve"]
    evals = [c for c in curve if "eval_success" in c]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval_success"] <= 1.0
    best = json.loads((run / "checkpoints" / "best" / "best.json").read_text())
    assert best["step"] == 2
    assert Policy.load(run / "checkpoints" / "best" / "policy").config.head == "l1"
    assert (run / "evals" / "00000002" / "eval.json").is_file()


def test_mixture_of_two_embodiments_trains_and_resumes(tmp_path):
    a = write_synthetic_dataset(tmp_path / "arm4", episodes=2, length=10, height=32, width=32)
    b = write_synthetic_dataset(
        tmp_path / "arm7", episodes=2, length=10, height=32, width=32, state_dim=7, action_dim=2
    )
    run = tmp_path / "run"
    data = f"{a},{b}"
    rc = _train(
        "--data",
        data,
        "--weights",
        "3,1",
        "--out",
        str(run),
        "--steps",
        "2",
        "--head",
        "l1",
        "--model-overrides",
        SMALL,
    )
    assert rc == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["names"] == ["arm4", "arm7"] and saved["weights"] == {"arm4": 3.0, "arm7": 1.0}
    policy = Policy.load(run)
    assert sorted(policy.config.datasets) == ["arm4", "arm7"]
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 3


def test_run_training_refuses_bad_setups_with_value_errors(tmp_path):
    """The library raises (the CLI prints one line): nothing exits the interpreter, nothing is read first."""
    from vlaforge.train.commands import check_training_setup, run_training

    with pytest.raises(ValueError, match="are not unique"):
        check_training_setup("octo-tiny", "a=x,a=y")
    with pytest.raises(ValueError, match="--weights has 1 values for 2 datasets"):
        check_training_setup("octo-tiny", "x,y", weights=[1.0])
    with pytest.raises(ValueError, match="--init-from with several --data"):
        check_training_setup("octo-tiny", "x,y", finetune={"init_from": "somewhere"})
    missing = tmp_path / "no-such-dataset"
    with pytest.raises(ValueError, match="'octo-tiny' is not one"):
        run_training("octo-tiny", missing, tmp_path / "run", cotrain={"vl": missing, "robot_fraction": 0.5})
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit, match="^vlaforge train: .*are not unique"):
        main(["train", "--data", "a=x,a=y", "--out", str(tmp_path / "run")])


def test_word_dropout_is_a_saved_training_setting(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=8, height=32, width=32)
    run = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run), "--steps", "2", "--model-overrides", SMALL]
    assert _train(*args, "--word-dropout", "0.25") == 0
    assert json.loads((run / "train_config.json").read_text())["train"]["word_dropout"] == 0.25
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0  # resumes with the same setting
    assert json.loads((run / "train_config.json").read_text())["train"]["word_dropout"] == 0.25
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"word_dropout=1.5: must be in \[0, 1\)"):
        _train("--data", str(data), "--out", str(tmp_path / "bad"), "--word-dropout", "1.5")
    assert not (tmp_path / "bad").exists()
