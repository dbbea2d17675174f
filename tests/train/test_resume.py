"""A run killed with SIGKILL and resumed reproduces the uninterrupted run bit-exactly (CPU, same seed)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.data import write_synthetic_dataset
from vlaforge.errors import CheckpointError
from vlaforge.policies.recipes import make_policy
from vlaforge.train.commands import resume_training, run_training
from vlaforge.train.config import TrainConfig
from vlaforge.train.sampler import StepBatchSampler
from vlaforge.train.trainer import latest_checkpoint, train

ROOT = Path(__file__).resolve().parents[2]


def _worker(run_dir: Path, mode: str, delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.train.resume_worker", str(run_dir), mode, str(delay)], cwd=ROOT, env=env
    )


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _worker(full, "fresh", 0.0).wait(timeout=120) == 0

    proc = _worker(killed, "fresh", 0.03)  # ~0.12 s per step: room to kill between checkpoints
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "00000004").is_dir():
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "policy").exists()  # it really died mid-run
    assert _worker(killed, "resume", 0.0).wait(timeout=120) == 0

    a = json.loads((full / "train_summary.json").read_text())["curve"]
    b = json.loads((killed / "train_summary.json").read_text())["curve"]
    assert [c["step"] for c in a] == [c["step"] for c in b] == list(range(2, 13, 2))
    assert [c["loss"] for c in a] == [c["loss"] for c in b]  # bit-exact loss curve
    wa, wb = (
        load_file(str(full / "policy" / "model.safetensors")),
        load_file(str(killed / "policy" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _short_run(run_dir: Path, steps: int = 4) -> None:
    torch.manual_seed(0)
    ds = TinyDataset(n=16)
    policy = make_policy("octo-tiny", ds, head="l1", **TINY)
    cfg = TrainConfig(
        steps=steps, batch_size=4, warmup_steps=1, log_every=2, save_every=2, keep_last=5, num_workers=0
    )
    train(policy, ds, cfg, run_dir, progress=False)


def test_corrupt_newest_checkpoint_falls_back_with_warning(tmp_path):
    _short_run(tmp_path / "run")
    ckpts = sorted((tmp_path / "run" / "checkpoints").iterdir())
    newest = ckpts[-1] / "policy" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:64])  # truncated
    with pytest.warns(UserWarning, match="unreadable"):
        assert latest_checkpoint(tmp_path / "run") == ckpts[-2]
    for c in ckpts:
        shutil.rmtree(c)
    with pytest.raises(CheckpointError, match="no checkpoints found"):
        latest_checkpoint(tmp_path / "run")


def test_resume_with_a_different_config_lists_the_fields(tmp_path):
    _short_run(tmp_path / "run")
    ds = TinyDataset(n=16)
    policy = make_policy("octo-tiny", ds, head="l1", **{**TINY, "depth": 3})
    cfg = TrainConfig(steps=6, batch_size=8, lr=5e-4, warmup_steps=1, num_workers=0)
    with pytest.raises(CheckpointError, match=r"(?s)policy.depth: checkpoint 2 != now 3.*train.batch_size"):
        train(policy, ds, cfg, tmp_path / "run", progress=False, resume=True)


def test_step_batch_sampler_is_a_function_of_the_step():
    s = StepBatchSampler(10, 3, seed=1)
    stream = iter(s)
    first = [next(stream) for _ in range(7)]  # 3 batches per epoch: crosses two epoch boundaries
    assert first == [s.batch(k) for k in range(7)]
    resumed = iter(StepBatchSampler(10, 3, seed=1, start_step=4))
    assert [next(resumed) for _ in range(3)] == first[4:7]
    assert sorted(sum(first[:3], [])) == sorted(set(sum(first[:3], [])))  # no repeats within an epoch


SMALL = {
    "width": 32,
    "depth": 1,
    "heads": 2,
    "mlp_dim": 64,
    "stem_channels": [8, 16],
    "encoder_image_size": [32, 32],
}
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.1, "targets": ["transformer.*"], "train_also": ["head.*"]}


@pytest.mark.parametrize("finetune", [{"lora": LORA}, {"train_only": ["head.*"]}], ids=["lora", "train_only"])
def test_finetuned_run_resumes_bit_exact(tmp_path, finetune):
    """Losing the last checkpoint and resuming re-applies LoRA / --train-only and reproduces the run exactly.

    With LoRA the raw training weights carry peft's keys (base_layer, lora_A/B.default); the resume
    loads the merged policy, re-attaches the adapters and must then accept those keys strictly.
    """
    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=10, height=32, width=32)
    run = tmp_path / "run"
    overrides = {
        "steps": 4,
        "batch_size": 4,
        "warmup_steps": 1,
        "log_every": 2,
        "save_every": 2,
        "num_workers": 0,
    }
    run_training(
        "octo-tiny",
        data,
        run,
        head="l1",
        model_overrides=SMALL,
        train_overrides={**overrides, "cache_frames": False},
        finetune=finetune,
        progress=False,
    )
    last = run / "checkpoints" / "00000004"
    full_state = torch.load(last / "trainer_state.pt", weights_only=True)
    full_policy = load_file(str(run / "policy" / "model.safetensors"))
    full_curve = json.loads((run / "train_summary.json").read_text())["curve"]
    shutil.rmtree(last)  # as if killed between the step-2 checkpoint and the end
    shutil.rmtree(run / "policy")

    resume_training(run, progress=False)
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    assert state["model"].keys() == full_state["model"].keys()
    assert all(torch.equal(state["model"][k], full_state["model"][k]) for k in state["model"])
    if "lora" in finetune:
        assert any(k.endswith(".lora_B.default.weight") for k in state["model"])
    policy = load_file(str(run / "policy" / "model.safetensors"))  # plain keys: merged
    assert policy.keys() == full_policy.keys() and not any("lora_" in k for k in policy)
    assert all(torch.equal(policy[k], full_policy[k]) for k in policy)
    curve = json.loads((run / "train_summary.json").read_text())["curve"]
    assert [c["step"] for c in curve] == [c["step"] for c in full_curve] == [2, 4]
    assert [c["loss"] for c in curve] == [c["loss"] for c in full_curve]
    # only the adapters (+ head) / only the head moved between the two checkpoints of the resumed run
    before = torch.load(run / "checkpoints" / "00000002" / "trainer_state.pt", weights_only=True)["model"]
    moved = {k for k in before if not torch.equal(before[k], state["model"][k])}
    assert moved and all(k.startswith("head.") or ".lora_" in k for k in moved)
    assert ("lora" in finetune) == any(".lora_" in k for k in moved)
