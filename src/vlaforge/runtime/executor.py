"""Turn a stream of predicted action chunks into one action per control tick.

A policy predicts H future actions per call, but the robot takes one action per tick. How the
chunks are consumed matters as much as how they are predicted:

- **receding** horizon (Diffusion Policy): execute the first k of the H actions open-loop, then
  re-plan from a fresh observation. k = H is the cheapest (one policy call per chunk); small k
  reacts faster but calls the policy more often and can switch between modes of the action
  distribution mid-motion.
- **ensemble** (ACT temporal ensembling): re-plan every k ticks (k = 1 in ACT) and execute, at
  each tick, the weighted average of every still-valid prediction for that tick, with weights
  ``w_i = exp(-m * i)`` where **i = 0 is the oldest prediction**, exactly as in ACT
  (Zhao et al. 2023, "w_0 is the weight for the oldest action"). With m > 0 older predictions
  weigh more, which smooths the motion; a smaller m incorporates new observations faster;
  m < 0 favours the newest prediction.

Seam for real-time / asynchronous chunking: every chunk is stored together with the tick its
first action is due at (``push(chunk, start_step=...)``). A chunk requested at tick s that
arrives after a delay of d ticks is pushed with ``start_step=s``; its first d actions are then
already in the past and are skipped (receding) or only overlap-averaged for the remaining
ticks (ensemble). A real-time-chunking executor (inpainting the frozen prefix) slots in as one
more mode using ``executed_since(start)`` and ``pending_actions()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaforge.types import ActionChunk

MODES = ("receding", "ensemble")


@dataclass(frozen=True)
class ExecutorConfig:
    """How chunks are executed.

    mode: "receding" | "ensemble".
    execute: k, ticks between two policy calls. None = the whole chunk H (receding) or 1 (ensemble).
    ensemble_decay: m in w_i = exp(-m * i), i = 0 the oldest prediction (ACT uses 0.01).
    """

    mode: str = "receding"
    execute: int | None = None
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ExecutorConfig.mode: expected one of {MODES}, got {self.mode!r}")
        if self.execute is not None and (
            isinstance(self.execute, bool) or not isinstance(self.execute, int) or self.execute < 1
        ):
            raise ValueError(
                f"ExecutorConfig.execute: expected a positive int (actions per policy call) or None "
                f"for the default, got {self.execute!r}"
            )
        if not math.isfinite(self.ensemble_decay):
            raise ValueError(
                f"ExecutorConfig.ensemble_decay: expected a finite float, got {self.ensemble_decay!r}"
            )

    def describe(self) -> str:
        """A short human-readable label, e.g. 'receding k=8' or 'ensemble k=1 m=0.01'."""
        k = "H" if self.execute is None and self.mode == "receding" else (self.execute or 1)
        if self.mode == "receding":
            return f"receding k={k}"
        return f"ensemble k={k} m={self.ensemble_decay:g}"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "execute": self.execute, "ensemble_decay": self.ensemble_decay}


def ensemble_weights(n: int, decay: float) -> np.ndarray:
    """Normalised ACT weights for n overlapping predictions, oldest first: w_i ∝ exp(-decay * i)."""
    if n < 1:
        raise ValueError(f"ensemble_weights: need at least one prediction, got n={n}")
    w = np.exp(-decay * np.arange(n, dtype=np.float64))  # (n,)
    return w / w.sum()


def ensemble_action(predictions: np.ndarray, decay: float) -> np.ndarray:
    """Weighted average of n predictions for the same tick, oldest first: (n, A) -> (A,)."""
    predictions = np.asarray(predictions, dtype=np.float64)  # (n, A)
    if predictions.ndim != 2:
        raise ValueError(f"ensemble_action: expected predictions of shape (n, A), got {predictions.shape}")
    w = ensemble_weights(predictions.shape[0], decay)  # (n,)
    return (w[:, None] * predictions).sum(axis=0).astype(np.float32)  # (A,)


class ChunkExecutor:
    """Stateful consumer of action chunks; one instance per episode stream (call `reset()` between).

    Loop::

        executor.reset()
        while running:
            if executor.needs_new_chunk():
                executor.push(policy.predict(history).actions)   # (H, A)
            env.step(executor.next_action())                     # (A,)
    """

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()
        self.reset()

    # --- state -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all chunks and restart the tick counter at 0."""
        self.step = 0  # ticks executed since reset
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start_step, (H, A)), oldest first
        self._action_dim: int | None = None

    @property
    def execute(self) -> int | None:
        """k: ticks between policy calls (None until the first chunk fixes H in receding mode)."""
        if self.config.execute is not None:
            return self.config.execute
        if self.config.mode == "ensemble":
            return 1
        return len(self._chunks[-1][1]) if self._chunks else None

    def executed_since(self, start_step: int) -> int:
        """Ticks executed since `start_step` (the inference delay, for asynchronous schedulers)."""
        return self.step - start_step

    def needs_new_chunk(self) -> bool:
        """True when the policy must be called before the next `next_action()`."""
        if not self._chunks:
            return True
        start, chunk = self._chunks[-1]
        return self.step - start >= min(self.execute or len(chunk), len(chunk))

    def push(self, chunk: np.ndarray | ActionChunk, *, start_step: int | None = None) -> None:
        """Add a predicted chunk (H, A) whose first action is due at `start_step` (default: now)."""
        actions = chunk.actions if isinstance(chunk, ActionChunk) else chunk
        actions = np.asarray(actions, dtype=np.float32)  # (H, A)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise ValueError(
                f"ChunkExecutor.push: expected an action chunk of shape (H, A), got {actions.shape}"
            )
        if not np.all(np.isfinite(actions)):
            raise ValueError("ChunkExecutor.push: the action chunk contains NaN or Inf")
        if self._action_dim is not None and actions.shape[1] != self._action_dim:
            raise ValueError(
                f"ChunkExecutor.push: action dimension changed from {self._action_dim} to {actions.shape[1]} "
                "within one episode; call reset() between episodes"
            )
        if self.config.execute is not None and self.config.execute > actions.shape[0]:
            raise ValueError(
                f"ExecutorConfig.execute={self.config.execute} is larger than the chunk length "
                f"H={actions.shape[0]}; execute at most H actions per chunk"
            )
        start = self.step if start_step is None else int(start_step)
        if start > self.step:
            raise ValueError(
                f"ChunkExecutor.push: start_step={start} is in the future (now at step {self.step})"
            )
        if start + actions.shape[0] <= self.step:
            raise ValueError(
                f"ChunkExecutor.push: chunk of {actions.shape[0]} actions starting at step {start} is entirely "
                f"in the past (now at step {self.step})"
            )
        self._action_dim = actions.shape[1]
        if self.config.mode == "receding":
            self._chunks = [(start, actions)]
        else:
            self._chunks.append((start, actions))

    def pending_actions(self) -> np.ndarray:
        """Actions of the newest chunk not yet due or executed: (H - elapsed, A)."""
        if not self._chunks:
            raise RuntimeError("ChunkExecutor.pending_actions: no chunk pushed yet")
        start, chunk = self._chunks[-1]
        return chunk[self.step - start :]

    def next_action(self) -> np.ndarray:
        """The action for the current tick (A,), then advance one tick."""
        if not self._chunks:
            raise RuntimeError("ChunkExecutor.next_action: no chunk pushed yet; push a chunk first")
        t = self.step
        # every chunk with a prediction for tick t, oldest first (by the tick it starts at)
        live = sorted(((s, c) for s, c in self._chunks if s <= t < s + len(c)), key=lambda sc: sc[0])
        if not live:
            start, chunk = self._chunks[-1]
            raise RuntimeError(
                f"ChunkExecutor.next_action: chunk pushed at step {start} with H={len(chunk)} is used up at "
                f"step {t}; check needs_new_chunk() and push a new chunk"
            )
        if self.config.mode == "receding":
            start, chunk = live[-1]
            action = chunk[t - start].copy()  # (A,)
        else:
            action = ensemble_action(
                np.stack([c[t - s] for s, c in live]), self.config.ensemble_decay
            )  # (A,)
        self.step += 1
        # Drop chunks that cannot contribute any more (keep the newest for pending_actions/needs_new_chunk).
        self._chunks = [
            (s, c)
            for i, (s, c) in enumerate(self._chunks)
            if s + len(c) > self.step or i == len(self._chunks) - 1
        ]
        return action
