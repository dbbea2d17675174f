"""Body of the multi-process test: train a tiny deterministic policy (l1 head, no augmentation) and save
its raw weights. Run by torchrun with 2 processes, or directly as a single process."""

import sys

import torch

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.policies.recipes import make_policy
from vlaforge.train import distributed
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

if __name__ == "__main__":
    out = sys.argv[1]
    torch.set_num_threads(1)
    distributed.init_distributed()
    torch.manual_seed(0)
    ds = TinyDataset(n=32)
    policy = make_policy("octo-tiny", ds, head="l1", augment=False, **TINY)
    if distributed.current().is_main:
        torch.save({k: v.clone() for k, v in policy.state_dict().items()}, f"{out}.init_weights.pt")
    cfg = TrainConfig(
        steps=4, batch_size=8, lr=1e-3, warmup_steps=1, ema_decay=0.0, log_every=2, num_workers=0
    )
    train(policy, ds, cfg, out, progress=False)
    if distributed.current().is_main:
        torch.save(policy.state_dict(), f"{out}/final_weights.pt")
        # The last step's gradients stay in .grad (zeroed only at the next step): DDP's averaged ones.
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        torch.save(grads, f"{out}/final_grads.pt")
