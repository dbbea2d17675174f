import json

import pytest
import torch

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import TrainingError, train


def _cfg(**kw) -> TrainConfig:
    base = {
        "steps": 6,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": 2,
        "log_every": 2,
        "save_every": 3,
        "num_workers": 0,
    }
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("head", ["diffusion", "flow", "binned", "l1"])
def test_train_writes_a_complete_run(tmp_path, head):
    ds = TinyDataset()
    policy = make_policy("octo-tiny", ds, head=head, **TINY)
    res = train(policy, ds, _cfg(), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert res.steps == 6
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 6 and len(summary["curve"]) == 3 and 0 <= summary["data_wait_fraction"] <= 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["00000003", "00000006"]
    assert (run / "checkpoints" / "00000006" / "trainer_state.pt").is_file()
    assert (run / "loss.png").is_file() and any((run / "tb").iterdir())
    loaded = Policy.load(run)  # run dir resolves to run/policy
    assert loaded.config.head == head


def test_time_budget_stops_training(tmp_path):
    ds = TinyDataset()
    policy = make_policy("octo-tiny", ds, head="l1", **TINY)
    res = train(policy, ds, _cfg(steps=10_000, minutes=0.02), tmp_path / "run", progress=False)
    assert 0 < res.steps < 10_000


def test_non_finite_loss_stops_with_message_and_saves(tmp_path, monkeypatch):
    ds = TinyDataset()
    policy = make_policy("octo-tiny", ds, head="l1", **TINY)
    real_loss = policy.loss
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        loss, m = real_loss(batch)
        return (loss * float("nan"), m) if calls["n"] == 3 else (loss, m)

    monkeypatch.setattr(policy, "loss", flaky)
    with pytest.raises(TrainingError, match="non-finite loss .* at step 2; last good weights saved"):
        train(policy, ds, _cfg(), tmp_path / "run", progress=False)
    saved = Policy.load(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in saved.parameters())
