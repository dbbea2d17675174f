"""Fully sharded data parallel training (`TrainConfig.parallel="fsdp"`, `--fsdp`) with FSDP2.

    torchrun --nproc_per_node 2 -m vlaforge.train --data data/mt10 --out runs/fsdp --fsdp --steps 1000

Why: DDP keeps a full copy of the weights, gradients and AdamW state (together ~4x the weights in
fp32) on every rank. FSDP (`torch.distributed.fsdp.fully_shard`) splits all three over the N ranks
and all-gathers one unit's weights just before that unit runs, then frees them again, so a rank
holds about 1/N of the training state plus one unit's full weights at a time.

Units: each transformer block, then the root (encoders, embeddings, action head, final norm).
FSDP2 gathers weights in a forward pre-hook, so a unit must be a module whose ``forward`` the
policy calls: the blocks are (directly or through gradient checkpointing, whose recompute runs the
hook again), while the action head is reached through ``head.loss`` / ``head.sample`` and
therefore belongs to the root, whose ``forward`` is ``Policy.loss``.

Checkpoints stay the single-process format: every rank joins the gathers
(`get_model_state_dict` / `get_optimizer_state_dict` with ``full_state_dict=True,
cpu_offload=True``, so only rank 0 receives the tensors) and rank 0 writes them. The optimizer
state is stored keyed by parameter index like ``torch.optim.Optimizer.state_dict()`` rather than by
name, so a run can be resumed under DDP, FSDP or on one process alike.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

# Gathered to rank 0 only, on the CPU: other ranks get empty dicts and never hold a full copy.
FULL_TO_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Every rank passes the same full state (all ranks read the checkpoint); each keeps its own shard.
FULL_ON_EVERY_RANK = StateDictOptions(full_state_dict=True)


def shard_policy(policy: nn.Module, device: str | torch.device) -> None:
    """Shard `policy` in place over all ranks: one FSDP unit per transformer block, then the root.

    Call it before building the optimizer (which must hold the sharded parameters) and after any
    LoRA wrapping or freezing. Rank 0's weights are broadcast first, as DDP does at construction:
    each rank keeps its slice of its *own* tensors, so differently initialised ranks would
    otherwise train a silent mixture.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("shard_policy needs an initialised process group (launch with torchrun)")
    with torch.no_grad():
        for t in itertools.chain(policy.parameters(), policy.buffers()):
            dist.broadcast(t.data, src=0)
    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    # A block returns (x, kv) where kv holds views of its qkv projection; FSDP2 warns that an in-place op
    # on such a view would skip its backward hook. BlockTransformer only ever uses kv out of place.
    warnings.filterwarnings(
        "ignore", message=r"FSDP2-wrapped module \(FSDPTransformerBlock\) returned a view"
    )
    for block in policy.transformer.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(policy, mesh=mesh)


def is_sharded(module: nn.Module) -> bool:
    """True if any parameter of `module` is a DTensor shard (the module went through `shard_policy`)."""
    return any(isinstance(p, DTensor) for p in module.parameters())


def full_model_state(policy: nn.Module) -> dict[str, torch.Tensor]:
    """The full, unsharded state dict on rank 0 (CPU); ``{}`` on the other ranks. A collective."""
    return get_model_state_dict(policy, options=FULL_TO_RANK0)


def gather_tensors(state: dict[str, torch.Tensor], *, keep: bool) -> dict[str, torch.Tensor]:
    """Full CPU copies of `state` (DTensor shards gathered, plain tensors cloned). A collective.

    Every rank must call it; ranks with ``keep=False`` drop each gathered tensor at once, so only
    the rank that writes ever holds the whole dict (used for the EMA weights, which are sharded
    like the parameters they follow).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        full = v.full_tensor() if isinstance(v, DTensor) else v
        if keep:
            out[k] = full.detach().cpu().clone()
    return out


def shard_like(full: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut full tensors into the shards `like` holds (same mesh and placements), without communication.

    Every rank has the full tensors (each read the checkpoint), so each takes its own slice.
    Keys of `full` missing from `like` raise a KeyError naming them.
    """
    missing = sorted(set(full) - set(like))
    if missing:
        raise KeyError(f"no sharded tensor to load {missing[:8]} into")
    out: dict[str, torch.Tensor] = {}
    for k, v in full.items():
        ref = like[k]
        if isinstance(ref, DTensor):
            v = v.to(device=ref.device, dtype=ref.dtype)
            out[k] = distribute_tensor(v, ref.device_mesh, ref.placements, src_data_rank=None)
        else:
            out[k] = v
    return out


def full_optimizer_state(policy: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state, unsharded, on rank 0, keyed by parameter index as `Optimizer.state_dict()`.

    A collective. Before the first optimizer step there is no state to gather; then the plain
    (tensor-free) state dict is returned directly, because `get_optimizer_state_dict` would create
    the state with a zero-learning-rate step, which changes AdamW's step count.
    """
    if not opt.state:
        return opt.state_dict()
    by_name = get_optimizer_state_dict(policy, opt, options=FULL_TO_RANK0)
    return optimizer_state_by_index(by_name) if by_name else {}


def load_full_optimizer_state(policy: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an index-keyed full optimizer state (a checkpoint's) into the sharded optimizer. A collective."""
    if not state["state"]:
        opt.load_state_dict(state)  # nothing to shard: only the hyper-parameters
        return
    set_optimizer_state_dict(
        policy, opt, optimizer_state_by_name(state, parameter_names(policy, opt)), options=FULL_ON_EVERY_RANK
    )


def load_full_model_state(policy: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict into the sharded policy; every rank keeps its slice."""
    set_model_state_dict(policy, state, options=FULL_ON_EVERY_RANK)


def parameter_names(policy: nn.Module, opt: torch.optim.Optimizer) -> list[list[str]]:
    """For each optimizer parameter group, the names of its parameters in optimizer order."""
    names = {id(p): n for n, p in policy.named_parameters()}
    try:
        return [[names[id(p)] for p in g["params"]] for g in opt.param_groups]
    except KeyError as e:
        raise ValueError("the optimizer holds a parameter that is not in the policy") from e


def optimizer_state_by_index(state: dict[str, Any]) -> dict[str, Any]:
    """Name-keyed optimizer state (torch.distributed.checkpoint's format) -> index-keyed (`Optimizer`'s).

    Indices count parameters across groups in group order, exactly as `Optimizer.state_dict()` does.
    """
    index: dict[str, int] = {}
    groups = []
    for g in state["param_groups"]:
        ids = []
        for name in g["params"]:
            index[name] = len(index)
            ids.append(index[name])
        groups.append({**g, "params": ids})
    return {"state": {index[n]: s for n, s in state["state"].items()}, "param_groups": groups}


def optimizer_state_by_name(state: dict[str, Any], names: list[list[str]]) -> dict[str, Any]:
    """Index-keyed optimizer state -> name-keyed, given each group's parameter names (`parameter_names`)."""
    groups = state["param_groups"]
    if [len(g["params"]) for g in groups] != [len(n) for n in names]:
        raise ValueError(
            f"optimizer state has groups of {[len(g['params']) for g in groups]} parameters, "
            f"the optimizer has {[len(n) for n in names]}: the checkpoint is from a different model"
        )
    by_index = {i: n for g, group_names in zip(groups, names) for i, n in zip(g["params"], group_names)}
    return {
        "state": {by_index[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": n} for g, n in zip(groups, names)],
    }


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (a sharded gradient, or the replicated total norm `clip_grad_norm_` returns for sharded
    gradients) as a full plain tensor; plain tensors pass through. Every rank must call it for a DTensor."""
    return t.full_tensor() if isinstance(t, DTensor) else t
