"""TrainConfig: the optimisation side of a run (the model side is PolicyConfig)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass
class TrainConfig:
    steps: int = 20_000  # upper bound on optimizer steps
    minutes: float | None = (
        None  # wall-clock budget; the schedule follows whichever of steps/minutes ends first
    )
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA
    num_workers: int = 1
    threads: int | None = None  # torch threads in the training process (default: all cores)
    cache_frames: bool = True  # decode every video frame once into RAM/disk instead of per sample
    # a frozen pretrained image tower (Lite0) encodes each distinct frame once, not every sample
    # (train/feature_cache.py); needs cache_frames
    cache_features: bool = True
    precision: str = "fp32"  # "bf16": autocast the forward pass (weights and optimizer stay fp32)
    grad_accum: int = 1  # micro-batches of `batch_size` per optimizer step
    grad_checkpointing: bool = False  # recompute transformer blocks in backward: less memory, more time
    # Under torchrun: "ddp" replicates the model on every rank; "fsdp" shards weights, gradients and
    # AdamW state over the ranks (FSDP2, one unit per transformer block + the rest). Same checkpoints.
    parallel: str = "ddp"
    eval_every: int = 0  # run simulator episodes every N steps (0: never); logged as eval/success
    eval_tasks: str = ""  # e.g. "mt10" or "reach,drawer-close"
    eval_episodes: int = 2  # per task
    # Meta-World protocol of the in-training episodes ("" = ours; "lerobot" for a `record --protocol lerobot`
    # dataset: its camera and instructions, on validation seeds 2000.. so that the protocol's test seeds
    # 1000.. never pick the best checkpoint)
    eval_protocol: str = ""
    # Instruction augmentation: each word of a sample's instruction deleted with this probability
    # (`transforms.text.drop_words`), so no single word or position decides the task.
    word_dropout: float = 0.0
    seed: int = 0
    log_every: int = 50
    save_every: int = 2000
    keep_last: int = 3
    device: str = "cpu"

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"TrainConfig.{fld}={getattr(self, fld)!r}: {msg}")

        for fld in ("steps", "batch_size", "log_every", "save_every", "keep_last"):
            if getattr(self, fld) < 1:
                raise bad(fld, "must be >= 1")
        if self.lr <= 0:
            raise bad("lr", "must be > 0")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "must be in [0, 1); use 0 to disable EMA")
        if self.minutes is not None and self.minutes <= 0:
            raise bad("minutes", "must be > 0 (or omit it for a step budget only)")
        if self.num_workers < 0:
            raise bad("num_workers", "must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if self.precision not in ("fp32", "bf16"):
            raise bad("precision", "use 'fp32' or 'bf16'")
        if self.grad_accum < 1:
            raise bad("grad_accum", "must be >= 1")
        if self.parallel not in PARALLEL_MODES:
            raise bad("parallel", f"use one of {PARALLEL_MODES} (multi-process training under torchrun)")
        if not 0 <= self.word_dropout < 1:
            raise bad("word_dropout", "must be in [0, 1), e.g. 0.15 (0 = off)")
        if self.eval_every < 0 or self.eval_episodes < 1:
            raise bad("eval_every", "eval_every must be >= 0 and eval_episodes >= 1")
        if self.eval_every and not self.eval_tasks:
            raise bad("eval_tasks", "set the tasks to evaluate (e.g. 'mt10') when eval_every > 0")
        if self.eval_protocol:
            from vlaforge.envs.protocol import get_protocol

            try:
                get_protocol(self.eval_protocol)
            except ValueError as e:
                raise bad("eval_protocol", str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
