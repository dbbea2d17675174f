"""Multi-process training on torch.distributed (DDP or FSDP): gloo on CPU, NCCL on GPU.

Launch with torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK:

    torchrun --nproc_per_node 2 -m vlaforge.train --data data/mt10 --out runs/ddp --steps 1000

`TrainConfig.batch_size` stays the *global* batch; each rank trains on its slice, gradients are
averaged by DDP, and only rank 0 logs and writes checkpoints. With `--fsdp` (`TrainConfig.parallel`)
the model is sharded instead of replicated: see `vlaforge.train.fsdp`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return DistInfo(rank, world, local_rank)


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
