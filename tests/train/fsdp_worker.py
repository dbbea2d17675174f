"""Body of the FSDP tests: train a tiny deterministic policy (l1 head, no augmentation) for 4 steps with
clipping that really clips, EMA, gradient checkpointing, checkpoints every 2 steps and a (faked)
in-training evaluation, then save the raw weights and last gradients gathered to full tensors.

    python -m tests.train.fsdp_worker OUT single                           # one process, plain
    torchrun --nproc_per_node 2 -m tests.train.fsdp_worker OUT fsdp        # sharded over 2 processes
    torchrun --nproc_per_node 2 -m tests.train.fsdp_worker OUT fsdp resume # continue OUT's newest checkpoint

The simulator evaluation is replaced by a stand-in that checks it was handed an ordinary, unsharded
policy, saves the weights it got and returns a fixed score per step, so the test needs no Meta-World.
"""

import importlib
import sys
from types import SimpleNamespace

import torch
from torch.distributed.tensor import DTensor

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import make_policy
from vlaforge.train import distributed, fsdp
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

SCORES = {2: 0.75, 4: 0.5}  # eval success by step: the best policy is step 2's


def fake_evaluate(policy, tasks, *, out_dir, **_):
    """Stand-in for the rollouts: checks it got a plain Policy and keeps the weights it was handed."""
    if type(policy) is not Policy or fsdp.is_sharded(policy) or policy.training:
        raise AssertionError(f"in-training eval got {type(policy).__name__}, not a plain Policy in eval mode")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in policy.state_dict().items()}, out_dir / "evaluated_weights.pt")
    return SimpleNamespace(mean_success=SCORES[int(out_dir.name)])


def config(mode: str) -> TrainConfig:
    return TrainConfig(
        steps=4,
        batch_size=8,
        lr=1e-3,
        warmup_steps=1,
        grad_clip=0.05,  # below the gradient norm (~0.8): clipping is active on every step
        ema_decay=0.9,
        log_every=2,
        save_every=2,
        keep_last=5,
        num_workers=0,
        grad_checkpointing=mode != "single",  # checkpointed FSDP blocks must match plain ones
        eval_every=2,
        eval_tasks="reach",
        eval_episodes=1,
        parallel="ddp" if mode == "single" else "fsdp",
    )


if __name__ == "__main__":
    out, mode, resume = sys.argv[1], sys.argv[2], sys.argv[3:] == ["resume"]
    torch.set_num_threads(1)
    # The trainer imports `evaluate` from the module at call time. (`vlaforge.eval.rollout` as an attribute is
    # the package's re-exported function, hence import_module.)
    importlib.import_module("vlaforge.eval.rollout").evaluate = fake_evaluate
    distributed.init_distributed()
    torch.manual_seed(0)
    ds = TinyDataset(n=32)
    policy = make_policy("octo-tiny", ds, head="l1", augment=False, **TINY)
    main = distributed.current().is_main
    if main and not resume:
        torch.save({k: v.clone() for k, v in policy.state_dict().items()}, f"{out}.init_weights.pt")
    train(policy, ds, config(mode), out, progress=False, resume=resume)
    # train() leaves the EMA weights in the policy; under FSDP its parameters are still shards.
    weights = fsdp.full_model_state(policy) if fsdp.is_sharded(policy) else policy.state_dict()
    grads = {
        n: fsdp.full_tensor(p.grad) if isinstance(p.grad, DTensor) else p.grad
        for n, p in policy.named_parameters()
        if p.grad is not None
    }
    if main:
        torch.save({k: v.clone() for k, v in weights.items()}, f"{out}/final_weights.pt")
        # The last step's gradients stay in .grad (zeroed only at the next step), clipped.
        torch.save({k: v.clone() for k, v in grads.items()}, f"{out}/final_grads.pt")
