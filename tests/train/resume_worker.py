"""Subprocess body for the resume test: train a tiny policy, optionally resuming. Slow data on purpose
(a short sleep per sample) so the parent can SIGKILL it between checkpoints."""

import sys
import time

import torch

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.policies.recipes import make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train


class SlowTinyDataset(TinyDataset):
    def __getitem__(self, i):
        time.sleep(float(sys.argv[3]))
        return super().__getitem__(i)


if __name__ == "__main__":
    run_dir, resume = sys.argv[1], sys.argv[2] == "resume"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = SlowTinyDataset(n=24)
    policy = make_policy("octo-tiny", ds, head="diffusion", **TINY)  # diffusion: uses the RNG every step
    cfg = TrainConfig(
        steps=12,
        batch_size=4,
        lr=1e-3,
        warmup_steps=2,
        log_every=2,
        save_every=2,
        keep_last=10,
        num_workers=0,
    )
    train(policy, ds, cfg, run_dir, progress=False, resume=resume)
