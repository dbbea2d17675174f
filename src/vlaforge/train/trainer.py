"""The training loop: AdamW, warmup + cosine, gradient clipping, EMA, checkpoints, TensorBoard.

Run directory layout:

    runs/x/
      policy/                   final policy (EMA weights): config.json, model.safetensors, normalization.safetensors
      checkpoints/<step>/       policy/ + trainer_state.pt (optimizer, EMA, step, RNG) — written atomically
      tb/                       TensorBoard scalars
      train_config.json         the PolicyConfig and TrainConfig of the run
      train_summary.json        throughput, data-wait fraction, loss curve, final figures
      loss.png                  the training curve
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch.utils.data import DataLoader

from vlaforge.errors import CheckpointError
from vlaforge.policies.base import resolve_checkpoint
from vlaforge.policies.octo.policy import Policy
from vlaforge.train import distributed, fsdp
from vlaforge.train.config import TrainConfig
from vlaforge.train.ema import EMA
from vlaforge.train.feature_cache import attach_feature_caches, detach_feature_caches
from vlaforge.train.lora import export_state_dict
from vlaforge.train.sampler import StepBatchSampler, StepKeyedBatches, StepSeededDataset
from vlaforge.train.schedule import lr_at
from vlaforge.transforms.text import WordDropoutDataset

TRAINER_STATE = "trainer_state.pt"


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the last good checkpoint was saved."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    wall_s: float
    samples_per_s: float
    data_wait_fraction: float
    final_loss: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # loader workers must not compete with the training threads


def make_optimizer(policy: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms and embeddings (the usual transformer split)."""
    decay, no_decay = [], []
    for name, p in policy.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or "embed" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def _save_checkpoint(
    run_dir: Path, policy: Policy, weights: dict[str, torch.Tensor], state: dict[str, Any], keep: int
) -> Path:
    """Atomic: write into a temp dir, then rename; keep the newest `keep` checkpoints.

    weights: the plain policy weights to write as `policy/` (EMA, LoRA merged: `_Snapshot.policy_weights`).
    """
    step = state["step"]
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:08d}"
    tmp = root / f".tmp-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp / "policy", state_dict=weights)
    torch.save(state, tmp / TRAINER_STATE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    done = sorted(p for p in root.iterdir() if p.name.isdigit())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _plot_curve(curve: list[dict[str, float]], path: Path) -> None:
    """Training loss (log scale) and, when evaluated during training, success on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [c for c in curve if "loss" in c]
    evals = [c for c in curve if "eval_success" in c]
    if not losses:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["step"] for c in losses], [c["loss"] for c in losses], lw=1.2, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if evals:
        ax2 = ax.twinx()
        ax2.plot([c["step"] for c in evals], [c["eval_success"] for c in evals], "o-", color="#C44E52")
        ax2.set_ylabel("eval success", color="#C44E52")
        ax2.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class _Snapshot:
    """The full (unsharded, CPU) training state that a checkpoint writes; built on rank 0 only."""

    model: dict[str, torch.Tensor]  # raw training weights, LoRA adapters unmerged
    optimizer: dict[str, Any] | None  # `Optimizer.state_dict()` layout (index-keyed); None when not needed
    ema: dict[str, torch.Tensor] | None
    ema_updates: int

    def policy_weights(self, policy: Policy) -> dict[str, torch.Tensor]:
        """What `policy/` holds: the EMA weights over the raw ones (integer buffers are not averaged), LoRA merged."""
        return export_state_dict(policy, {**self.model, **(self.ema or {})})


def _snapshot(
    policy: Policy, opt: torch.optim.Optimizer, ema: EMA | None, di: distributed.DistInfo, *, optimizer: bool
) -> _Snapshot | None:
    """Gather the training state for rank 0 to write; None on the other ranks.

    Under FSDP every rank must call this (the gathers are collectives); otherwise only rank 0 does.
    """
    if fsdp.is_sharded(policy):
        model = fsdp.full_model_state(policy)
        optim = fsdp.full_optimizer_state(policy, opt) if optimizer else None
        shadow = None if ema is None else fsdp.gather_tensors(ema.state_dict(), keep=di.is_main)
    elif di.is_main:
        model = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
        optim = opt.state_dict() if optimizer else None
        shadow = None if ema is None else {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}
    else:
        return None
    if not di.is_main:
        return None
    return _Snapshot(model, optim, shadow, 0 if ema is None else ema.updates)


@dataclass
class _Progress:
    """Counters that continue across a resume (the wall-clock budget counts every segment)."""

    step: int = 0
    samples: int = 0
    wait_s: float = 0.0
    elapsed_before_s: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    best_success: float = -1.0
    # The logging window in progress (losses since the last curve entry) and the last logged loss: a
    # resumed run must average the same steps into its next entry and its final loss.
    window_loss: float = 0.0
    window_n: int = 0
    last_loss: float = math.nan


def train(
    policy: Policy,
    dataset: Any,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `policy` on `dataset`; with `resume=True` continue from the newest readable checkpoint in run_dir.

    A resumed run reproduces the uninterrupted run exactly on CPU with a step budget (any num_workers): the
    data order and any randomness inside `dataset[i]` are functions of (seed, step), and weights, optimizer,
    EMA, the loss-logging window and every RNG state are restored. A wall-clock budget (`cfg.minutes`) is
    not reproducible: the LR schedule and the last step then follow the clock.
    Under torchrun (torch.distributed initialised) each rank trains on its slice of the global batch, and
    only rank 0 writes logs and checkpoints. `cfg.parallel` picks the wrapping: "ddp" replicates the policy
    (DistributedDataParallel); "fsdp" shards it in place (see `vlaforge.train.fsdp`), and the policy is
    returned still sharded (its parameters are DTensors): load `run_dir/policy` for a plain one.
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    di = distributed.current()
    sharded = cfg.parallel == "fsdp"
    if sharded and not di.enabled:
        raise ValueError(
            f"TrainConfig.parallel='fsdp' shards the model over several processes, but this is a single "
            f"process (world size {di.world_size}). Launch with `torchrun --nproc_per_node N -m vlaforge.train "
            "... --fsdp` (N >= 2), or use --parallel ddp / parallel='ddp' (also to resume an FSDP run on one "
            "process): one process holds the whole model anyway."
        )
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    policy.to(torch.device(cfg.device)).train()
    config_record = {"policy": policy.config.to_dict(), "train": cfg.to_dict(), **(run_info or {})}

    if cfg.cache_features:  # a frozen pretrained tower's tokens, once per frame (train/feature_cache.py);
        # before FSDP shards the tower's weights, which the cache's key hashes
        summary = attach_feature_caches(policy, dataset, progress=progress and di.is_main)
        if summary and progress and di.is_main:
            print(summary)
    if sharded:
        fsdp.shard_policy(policy, cfg.device)  # before the optimizer, which must hold the shards
    opt = make_optimizer(policy, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(policy, cfg.ema_decay) if cfg.ema_decay > 0 else None  # sharded like the parameters under FSDP
    prog = _Progress()
    if resume:
        ckpt = latest_checkpoint(run_dir)
        check_resume_config(run_dir, config_record)
        _restore(torch.load(ckpt / TRAINER_STATE, weights_only=True), policy, opt, ema, prog)
        if progress and di.is_main:
            print(f"resuming {run_dir} from step {prog.step} ({ckpt.name})")
    distributed.barrier()  # every rank has read the checkpoint before rank 0 writes anything
    log = _RunLogger(run_dir, config_record, purge_step=prog.step if resume else None) if di.is_main else None
    ddp = di.enabled and not sharded
    model = torch.nn.parallel.DistributedDataParallel(policy) if ddp else policy
    policy.set_gradient_checkpointing(cfg.grad_checkpointing)

    batches = iter(_make_loader(dataset, cfg, prog.step, di))
    t_start = time.perf_counter() - prog.elapsed_before_s
    budget_s = cfg.minutes * 60 if cfg.minutes else None
    # With a wall-clock budget the step total is only an upper bound: show time left instead of a step ETA.
    bar = tqdm(
        total=None if budget_s is not None else cfg.steps,
        initial=prog.step,
        desc="train",
        unit="step",
        disable=not (progress and di.is_main),
        dynamic_ncols=True,
    )

    def checkpoint() -> tuple[Path, _Snapshot | None]:
        """Every rank calls this (FSDP gathers are collectives); rank 0 writes. Returns rank 0's snapshot."""
        snap = _snapshot(policy, opt, ema, di, optimizer=True)
        path = run_dir / "checkpoints"
        if snap is not None:
            path = _save_checkpoint(
                run_dir, policy, snap.policy_weights(policy), _state(snap, prog, t_start), cfg.keep_last
            )
        return path, snap

    step = prog.step
    try:
        while step < cfg.steps:
            elapsed = time.perf_counter() - t_start
            if budget_s is not None and _any_rank(elapsed >= budget_s, di):
                break
            progress_frac = max(step / cfg.steps, elapsed / budget_s if budget_s else 0.0)
            lr = lr_at(
                step, progress_frac, base_lr=cfg.lr, warmup_steps=cfg.warmup_steps, min_ratio=cfg.min_lr_ratio
            )
            for group in opt.param_groups:
                group["lr"] = lr

            step_loss, grad_norm, metrics = _optimisation_step(
                model, policy, opt, ema, batches, cfg, di, prog, step=step, ddp=ddp, checkpoint=checkpoint
            )
            step += 1
            prog.step = step
            prog.window_loss += step_loss
            prog.window_n += 1

            if step % cfg.log_every == 0 or step == cfg.steps:
                _log_progress(prog, step, lr, grad_norm, metrics, t_start, budget_s, log, bar)
            bar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0:
                _evaluate_and_keep_best(
                    policy, opt, ema, cfg, di, run_dir, step, prog, log, bar, progress=progress
                )
            # After the evaluation, so the checkpoint holds its curve entry and the best score for a resume.
            if step % cfg.save_every == 0:
                checkpoint()
    finally:
        bar.close()
        if log is not None:
            log.close()
        detach_feature_caches(policy)

    wall = time.perf_counter() - t_start
    _, final = checkpoint()
    if ema is not None:
        ema.copy_to(policy)
    policy.eval()
    loss_val = prog.window_loss / prog.window_n if prog.window_n else prog.last_loss
    result = TrainResult(
        run_dir,
        step,
        wall,
        prog.samples / wall if wall else 0.0,
        prog.wait_s / wall if wall else 0.0,
        loss_val,
    )
    if log is not None:
        assert final is not None  # rank 0 always gets the snapshot
        policy.save(run_dir / "policy", state_dict=final.policy_weights(policy))
        log.finish(result, prog.curve, policy)
    distributed.barrier()
    return result


def _make_loader(dataset: Any, cfg: TrainConfig, start_step: int, di: distributed.DistInfo) -> DataLoader:
    """This rank's batches from optimizer step ``start_step`` on; the same batches whatever the workers."""
    sampler = StepBatchSampler(
        len(dataset),
        cfg.batch_size,
        cfg.seed,
        start_step=start_step * cfg.grad_accum,  # the sampler counts micro-batches
        rank=di.rank,
        world_size=di.world_size,
    )
    return DataLoader(
        # Any randomness in dataset[i] is seeded from (seed, micro-step, i): the same whichever worker
        # reads it, however many workers there are, and after a resume.
        StepSeededDataset(
            WordDropoutDataset(dataset, cfg.word_dropout) if cfg.word_dropout else dataset, cfg.seed
        ),
        batch_sampler=StepKeyedBatches(sampler),
        num_workers=cfg.num_workers,
        worker_init_fn=_worker_init if cfg.num_workers else None,
        persistent_workers=cfg.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched by the loader
    )


def _optimisation_step(
    model: torch.nn.Module,
    policy: Policy,
    opt: torch.optim.Optimizer,
    ema: EMA | None,
    batches: Iterator[dict[str, Any]],
    cfg: TrainConfig,
    di: distributed.DistInfo,
    prog: _Progress,
    *,
    step: int,
    ddp: bool,
    checkpoint: Callable[[], tuple[Path, _Snapshot | None]],
) -> tuple[float, torch.Tensor, dict[str, Any]]:
    """One optimizer step over ``cfg.grad_accum`` micro-batches: backward, clip, AdamW, EMA.

    model: ``policy`` itself, or its DDP wrapper. A non-finite loss saves a checkpoint (``checkpoint``)
    and raises :class:`TrainingError`. Returns (step loss averaged over ranks, the global gradient norm
    before clipping, the last micro-batch's metrics); counts waiting time and samples into ``prog``.
    """
    device_type = torch.device(cfg.device).type
    accum = cfg.grad_accum
    opt.zero_grad(set_to_none=True)
    step_loss = 0.0
    for micro in range(accum):
        t0 = time.perf_counter()
        batch = next(batches)
        prog.wait_s += time.perf_counter() - t0
        # DDP all-reduces gradients only on the last micro-batch of the step. FSDP reduce-scatters
        # every micro-batch, so each rank only ever holds its shard of the gradients.
        last = micro == accum - 1
        sync = model.no_sync() if ddp and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device_type, torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss, metrics = model(batch)  # Policy.forward == Policy.loss (through DDP/FSDP hooks)
            if _any_rank(not torch.isfinite(loss).item(), di):
                path, _ = checkpoint()
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at step {step}; last good weights saved to {path}. "
                    "Lower the learning rate or check the data for extreme values."
                )
            (loss.float() / accum).backward()
        step_loss += _mean_over_ranks(loss.detach().float(), di) / accum
        prog.samples += len(batch["task"]) * di.world_size
    # With sharded gradients (FSDP) the norm is still the global one: torch reduces it over the ranks.
    grad_norm = fsdp.full_tensor(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip))
    opt.step()
    if ema is not None:
        ema.update(policy)
    return step_loss, grad_norm, metrics


def _log_progress(
    prog: _Progress,
    step: int,
    lr: float,
    grad_norm: torch.Tensor,
    metrics: dict[str, Any],
    t_start: float,
    budget_s: float | None,
    log: _RunLogger | None,
    bar: Any,
) -> None:
    """Close the logging window: a curve entry, TensorBoard scalars (rank 0) and the progress bar."""
    loss_val = prog.last_loss = prog.window_loss / prog.window_n
    prog.window_loss, prog.window_n = 0.0, 0
    elapsed = time.perf_counter() - t_start
    sps = prog.samples / elapsed
    prog.curve.append({"step": step, "loss": loss_val, "lr": lr, "time_s": elapsed})
    if log is not None:
        log.scalars(step, loss_val, lr, float(grad_norm), sps, prog.wait_s / elapsed, metrics)
    postfix = {
        "loss": f"{loss_val:.4f}",
        "sps": f"{sps:.0f}",
        "wait": f"{prog.wait_s / elapsed:.0%}",
    }
    if budget_s is not None:
        postfix["left"] = f"{max(0.0, budget_s - elapsed) / 60:.1f}min"
    bar.set_postfix(postfix)


def _evaluate_and_keep_best(
    policy: Policy,
    opt: torch.optim.Optimizer,
    ema: EMA | None,
    cfg: TrainConfig,
    di: distributed.DistInfo,
    run_dir: Path,
    step: int,
    prog: _Progress,
    log: _RunLogger | None,
    bar: Any,
    *,
    progress: bool,
) -> None:
    """In-training evaluation on rank 0; a new best score saves the best checkpoint. Every rank calls it."""
    # Under FSDP rank 0 evaluates a plain copy built from the gathered EMA weights (all ranks
    # join the gather; the others then wait at their next collective).
    snap = _snapshot(policy, opt, ema, di, optimizer=False) if cfg.parallel == "fsdp" else None
    if di.is_main:
        weights = snap.policy_weights(policy) if snap is not None else None
        success = _evaluate_during_training(policy, ema, cfg, run_dir, step, weights)
        prog.curve.append({"step": step, "eval_success": success})
        if log is not None:
            log.tb.add_scalar("eval/success", success, step)
        if success > prog.best_success:
            prog.best_success = success
            _save_best(run_dir, policy, ema, step, success, weights)
        if progress:
            bar.write(f"step {step}: eval success {success:.1%} (best {prog.best_success:.1%})")


class _RunLogger:
    """Rank-0 side effects of a run: train_config.json, TensorBoard, train_summary.json, loss.png."""

    def __init__(self, run_dir: Path, config_record: dict[str, Any], purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(config_record, indent=2))
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def scalars(
        self,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float,
        sps: float,
        wait: float,
        metrics: dict[str, float],
    ) -> None:
        values = {
            "train/loss": loss,
            "train/lr": lr,
            "train/grad_norm": grad_norm,
            "perf/samples_per_s": sps,
            "perf/data_wait_fraction": wait,
            **{f"train/{k}": v for k, v in metrics.items()},
        }
        for name, v in values.items():
            self.tb.add_scalar(name, v, step)

    def close(self) -> None:
        self.tb.close()

    def finish(self, result: TrainResult, curve: list[dict[str, float]], policy: Policy) -> None:
        summary = {
            "steps": result.steps,
            "wall_s": round(result.wall_s, 2),
            "samples_per_s": round(result.samples_per_s, 2),
            "data_wait_fraction": round(result.data_wait_fraction, 4),
            "final_loss": result.final_loss if math.isfinite(result.final_loss) else None,
            "parameters": policy.num_parameters(),
            "trainable_parameters": policy.num_parameters(trainable_only=True),
            "curve": curve,
        }
        (self.run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        _plot_curve(curve, self.run_dir / "loss.png")


def _evaluate_during_training(
    policy: Policy,
    ema: EMA | None,
    cfg: TrainConfig,
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor] | None = None,
) -> float:
    """Roll out the EMA policy on fixed eval seeds; the training RNG state is left exactly as it was.

    weights: the full EMA policy weights when the live policy is sharded (FSDP): a sharded policy
    cannot run `predict` on one rank, so a plain copy is built from them and evaluated instead.
    """
    from vlaforge.envs import resolve_tasks
    from vlaforge.envs.protocol import get_protocol
    from vlaforge.eval.rollout import evaluate

    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    backup = None
    try:
        if weights is None:
            backup = ema.copy_to(policy) if ema is not None else None
            target = policy
        else:
            target = _plain_copy(policy, weights, cfg.device)  # its random init is undone by the RNG restore
        target.eval()
        report = evaluate(
            target,
            resolve_tasks(cfg.eval_tasks),
            episodes=cfg.eval_episodes,
            seed0=get_protocol(cfg.eval_protocol or "vlaforge").validation_seed0,
            workers=1,
            videos_per_task=0,
            out_dir=run_dir / "evals" / f"{step:08d}",
            progress=False,
            protocol=cfg.eval_protocol or None,
        )
    finally:
        if backup is not None:
            policy.load_state_dict(backup, strict=False)
        policy.train()
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
    return float(report.mean_success)


def _plain_copy(policy: Policy, weights: dict[str, torch.Tensor], device: str) -> Policy:
    """An ordinary (unsharded, LoRA-merged) Policy with `weights`, built as `Policy.load` builds one."""
    plain = Policy(policy.config, policy.normalizer, policy.tokenizer)
    plain.load_state_dict(weights)
    return plain.to(torch.device(device))


def _ema_weights(policy: Policy, ema: EMA | None) -> dict[str, torch.Tensor]:
    """The live policy's EMA weights (LoRA merged) as a plain state dict, leaving the module untouched."""
    return export_state_dict(policy, {**policy.state_dict(), **(ema.state_dict() if ema is not None else {})})


def _save_best(
    run_dir: Path,
    policy: Policy,
    ema: EMA | None,
    step: int,
    success: float,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """checkpoints/best/policy: the EMA policy with the highest in-training eval success (atomic).

    weights: the gathered EMA weights under FSDP; otherwise taken from the live policy and `ema`.
    """
    root = run_dir / "checkpoints"
    tmp, final = root / ".tmp-best", root / "best"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp / "policy", state_dict=_ema_weights(policy, ema) if weights is None else weights)
    (tmp / "best.json").write_text(json.dumps({"step": step, "eval_success": success}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _any_rank(flag: bool, di: distributed.DistInfo) -> bool:
    """True if `flag` is True on any rank (so all ranks stop together)."""
    if not di.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def _mean_over_ranks(x: torch.Tensor, di: distributed.DistInfo) -> float:
    if not di.enabled:
        return float(x)
    t = x.detach().float().reshape(1).cpu().clone()
    torch.distributed.all_reduce(t)
    return float(t) / di.world_size


def _state(snap: _Snapshot, prog: _Progress, t_start: float) -> dict[str, Any]:
    """Everything a resume needs, as tensors and plain Python (loadable with weights_only=True).

    The layout does not depend on how the run was parallelised, so any run resumes under DDP, FSDP
    or on a single process.
    """
    np_state = np.random.get_state()
    return {
        "step": prog.step,
        "samples": prog.samples,
        "wait_s": prog.wait_s,
        "elapsed_s": time.perf_counter() - t_start,
        "curve": prog.curve,
        "best_success": prog.best_success,  # so a resumed run does not replace checkpoints/best with a worse one
        "window_loss": prog.window_loss,
        "window_n": prog.window_n,
        "last_loss": prog.last_loss,
        "model": snap.model,  # raw, not EMA
        "optimizer": snap.optimizer,
        "ema": snap.ema,
        "ema_updates": snap.ema_updates,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": list(random.getstate()[1]),
            "python_gauss": random.getstate()[2],
        },
    }


def _restore(
    state: dict[str, Any], policy: Policy, opt: torch.optim.Optimizer, ema: EMA | None, prog: _Progress
) -> None:
    """Load a checkpoint's full training state; a sharded (FSDP) policy keeps each rank's slice of it."""
    if fsdp.is_sharded(policy):
        fsdp.load_full_model_state(policy, state["model"])
        fsdp.load_full_optimizer_state(policy, opt, state["optimizer"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(fsdp.shard_like(state["ema"], ema.state_dict()))
            ema.updates = state["ema_updates"]
    else:
        policy.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
            ema.updates = state["ema_updates"]
    prog.step, prog.samples, prog.wait_s = state["step"], state["samples"], state["wait_s"]
    prog.elapsed_before_s, prog.curve = state["elapsed_s"], list(state["curve"])
    prog.best_success = state.get("best_success", -1.0)  # absent in checkpoints written before it was kept
    prog.window_loss = state.get("window_loss", 0.0)  # (older checkpoints: the window restarts)
    prog.window_n = state.get("window_n", 0)
    prog.last_loss = state.get("last_loss", math.nan)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate((3, tuple(rng["python"]), rng["python_gauss"]))


# Fields that may change between segments of one run; everything else must match to resume.
RESUMABLE_CHANGES = {
    "steps",
    "minutes",
    "save_every",
    "log_every",
    "keep_last",
    "num_workers",
    "threads",
    "device",
    "parallel",  # checkpoints hold full, unsharded state whatever the wrapping
    "grad_checkpointing",  # memory for time: the gradients are the same (tested to 1e-6)
    # cached frozen-tower tokens equal the live ones up to float rounding (~2e-5); runs saved before the
    # field existed resume with it on
    "cache_features",
}


def check_resume_config(run_dir: Path, current: dict[str, Any]) -> None:
    """Refuse to resume with a different model or optimisation setup; list every differing field."""
    path = run_dir / "train_config.json"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} is missing")
    saved = json.loads(path.read_text())
    diffs = []
    for section in ("policy", "train", "finetune"):
        a, b = saved.get(section, {}), current.get(section, {})
        for k in sorted(set(a) | set(b)):
            if k in RESUMABLE_CHANGES and section == "train":
                continue
            if a.get(k) != b.get(k):
                diffs.append(f"{section}.{k}: checkpoint {a.get(k)!r} != now {b.get(k)!r}")
    if diffs:
        raise CheckpointError("cannot resume with a different configuration:\n  " + "\n  ".join(diffs))


def latest_checkpoint(run_dir: Path) -> Path:
    """Newest complete checkpoint; an unreadable one is skipped with a warning (falls back to the previous)."""
    root = run_dir / "checkpoints"
    candidates = (
        sorted((p for p in root.glob("*") if p.name.isdigit()), reverse=True) if root.is_dir() else []
    )
    problems = []
    for ckpt in candidates:
        try:
            resolve_checkpoint(ckpt)  # policy files present
            for name in (
                "policy/config.json",
                "policy/model.safetensors",
                "policy/normalization.safetensors",
            ):
                if not (ckpt / name).is_file():
                    raise CheckpointError(f"missing {name}")
            safetensors.torch.load_file(str(ckpt / "policy" / "model.safetensors"))
            torch.load(ckpt / TRAINER_STATE, weights_only=True)
        except Exception as e:  # truncated or corrupt files raise various error types
            problems.append(f"{ckpt}: {e}")
            warnings.warn(
                f"checkpoint {ckpt} is unreadable ({e}); falling back to the previous one", stacklevel=2
            )
            continue
        return ckpt
    detail = ("; ".join(problems)) if problems else "no checkpoints found"
    raise CheckpointError(f"cannot resume {run_dir}: {detail}")
