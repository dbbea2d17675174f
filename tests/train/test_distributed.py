"""2 CPU processes (gloo, torchrun) == 1 process with the same global batch, to tolerance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlaforge.train.sampler import StepBatchSampler

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=300)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun not found next to the interpreter"
    _run([sys.executable, "-m", "tests.train.ddp_worker", str(tmp_path / "single")])
    _run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "tests.train.ddp_worker",
            str(tmp_path / "ddp"),
        ]
    )
    ga = torch.load(tmp_path / "single" / "final_grads.pt", weights_only=True)
    gb = torch.load(tmp_path / "ddp" / "final_grads.pt", weights_only=True)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for k in ga:  # same weights, same global batch: the averaged gradients agree to float rounding
        assert torch.allclose(ga[k], gb[k], atol=1e-6, rtol=1e-4), k
    a = torch.load(tmp_path / "single" / "final_weights.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "final_weights.pt", weights_only=True)
    init = torch.load(tmp_path / "single.init_weights.pt", weights_only=True)
    lr = 1e-3  # Adam's first update is ~lr * sign(g), so weights agree to within one step of lr
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2 * lr), k
    assert sum(not torch.equal(init[k], a[k]) for k in a) > 10  # training really moved the weights
    assert (tmp_path / "ddp" / "train_summary.json").is_file()  # rank 0 wrote the run


def test_ranks_split_the_global_batch():
    full = StepBatchSampler(20, 8, seed=3)
    ranks = [StepBatchSampler(20, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(5):
        assert ranks[0].batch(step) + ranks[1].batch(step) == full.batch(step)
    with pytest.raises(ValueError, match="divisible by world_size=3"):
        StepBatchSampler(20, 8, seed=3, world_size=3)
