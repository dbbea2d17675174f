"""A run is a function of its seed: `vlaforge train` twice gives the same losses and weights (CPU, same
threads), with the default DataLoader worker, augmentation and frame cache; a run killed with SIGKILL and
resumed through the CLI ends exactly where the uninterrupted run ends."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vlaforge.train.trainer as trainer
from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.cli import main
from vlaforge.data import write_synthetic_dataset
from vlaforge.policies.recipes import make_policy
from vlaforge.train.commands import run_training
from vlaforge.train.config import TrainConfig
from vlaforge.train.sampler import StepSeededDataset, sample_seed

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "width": 32,
    "depth": 1,
    "heads": 2,
    "mlp_dim": 64,
    "stem_channels": [8, 16],
    "encoder_image_size": [32, 32],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("det") / "data", episodes=3, length=12, height=32, width=32
    )


def _argv(data: Path, out: Path, *extra: str, log_every: int = 1) -> list[str]:
    # No --workers / --no-cache / --no-augment: the defaults (one loader worker, frame cache, augmentation).
    return [
        "train",
        "--recipe",
        "octo-tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--log-every",
        str(log_every),
        "--model-overrides",
        json.dumps(SMALL),
        *extra,
    ]


def _losses(run: Path) -> list[float]:
    return [c["loss"] for c in json.loads((run / "train_summary.json").read_text())["curve"] if "loss" in c]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = (
        load_file(str(a / "policy" / "model.safetensors")),
        load_file(str(b / "policy" / "model.safetensors")),
    )
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_same_seed_same_run_through_the_cli(data, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        assert main(_argv(data, run, "--steps", "3", "--seed", "3")) == 0
    cfg = json.loads((runs[0] / "train_config.json").read_text())
    assert cfg["train"]["num_workers"] == 1 and cfg["train"]["cache_frames"] and cfg["policy"]["augment"]
    assert len(_losses(runs[0])) == 3
    assert _losses(runs[0]) == _losses(runs[1])  # bit-exact, every step
    assert _same_weights(*runs)


def _initial_weights(monkeypatch, data: Path, seed: int) -> dict[str, torch.Tensor]:
    """The policy's weights as `vlaforge train` hands it to the training loop (nothing is trained)."""
    seen = {}

    def fake_train(policy, dataset, cfg, run_dir, **kw):
        seen.update({k: v.clone() for k, v in policy.state_dict().items()})
        return None

    monkeypatch.setattr(trainer, "train", fake_train)
    torch.manual_seed(1234 + seed)  # whatever the caller's RNG holds must not matter
    run_training(
        "octo-tiny",
        data,
        "unused",
        model_overrides=SMALL,
        train_overrides={"seed": seed, "cache_frames": False},
        progress=False,
    )
    return seen


def test_initial_weights_are_a_function_of_the_seed(data, monkeypatch):
    a, b, c = (_initial_weights(monkeypatch, data, s) for s in (3, 3, 4))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


class NoisyDataset(TinyDataset):
    """Draws from every global RNG in __getitem__, as a dataset with its own augmentation would."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        noise = torch.rand(()) + float(np.random.rand()) + __import__("random").random()
        item["observation.state"] = item["observation.state"] + 0.01 * noise
        return item


def test_randomness_inside_the_dataset_is_keyed_by_step_and_index():
    ds = StepSeededDataset(NoisyDataset(n=8), seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    x = ds[(5, 2)]["observation.state"]
    assert torch.equal(torch.get_rng_state(), before)  # the main process's training RNG is left alone
    assert torch.equal(ds[(5, 2)]["observation.state"], x)
    assert not torch.equal(ds[(6, 2)]["observation.state"], x)
    assert sample_seed(3, 5, 2) != sample_seed(4, 5, 2) and sample_seed(-1, 0, 0) >= 0


def _noisy_run(run_dir: Path, workers: int, resume: bool = False) -> None:
    torch.manual_seed(0)
    ds = NoisyDataset(n=16)
    policy = make_policy("octo-tiny", ds, head="l1", **TINY)
    cfg = TrainConfig(steps=4, batch_size=4, warmup_steps=1, log_every=1, save_every=2, num_workers=workers)
    trainer.train(policy, ds, cfg, run_dir, progress=False, resume=resume)


def test_loader_workers_do_not_change_the_run(tmp_path):
    """A dataset that draws random numbers trains the same with 0 or 2 workers and across a resume."""
    w0, w2 = tmp_path / "w0", tmp_path / "w2"
    _noisy_run(w0, 0)
    _noisy_run(w2, 2)
    assert _losses(w0) == _losses(w2)
    assert _same_weights(w0, w2)
    shutil.rmtree(w2 / "checkpoints" / "00000004")  # as if killed between the step-2 checkpoint and the end
    shutil.rmtree(w2 / "policy")
    _noisy_run(w2, 2, resume=True)  # fresh workers continue the (seed, step) keys
    assert _losses(w0) == _losses(w2)
    assert _same_weights(w0, w2)


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "vlaforge.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_cli_sigkill_then_resume_is_bit_exact(data, tmp_path):
    # log-every 4 with checkpoints every 3 steps: the resumed run must continue a half-full loss window.
    common = ["--steps", "30", "--seed", "3", "--save-every", "3"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    _finish(_cli(*_argv(data, full, *common, log_every=4)))

    proc = _cli(*_argv(data, killed, *common, log_every=4))
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "00000003").is_dir():
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "policy").exists(), "the run finished before it was killed"
    _finish(_cli("train", "--resume", str(killed)))

    a = json.loads((full / "train_summary.json").read_text())
    b = json.loads((killed / "train_summary.json").read_text())
    assert a["steps"] == b["steps"] == 30
    assert a["final_loss"] == b["final_loss"]
    assert (
        [c["step"] for c in a["curve"]] == [c["step"] for c in b["curve"]] == [4, 8, 12, 16, 20, 24, 28, 30]
    )
    assert _losses(full) == _losses(killed)
    assert _same_weights(full, killed)
