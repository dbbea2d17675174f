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

- **rtc** (real-time chunking, Black et al. 2025, arXiv 2506.07339): re-plan every k = s ticks
  like receding, but the next chunk is *inpainted*: its first d actions (those due while the
  policy is still thinking, d = ``rtc_delay``) are frozen to the previous chunk's, the rest of
  the overlap is guided toward it with decaying weights, and only the tail is free. Chunks then
  join without the jump a receding switch makes when two samples pick different modes.
  ``rtc_guidance()`` hands the previous chunk (aligned to now) and the weights to the caller,
  which samples with ``vlaforge.runtime.rtc`` (flow and diffusion heads).

Every chunk is stored together with the tick its first action is due at
(``push(chunk, start_step=...)``). A chunk requested at tick s that arrives after a delay of d
ticks is pushed with ``start_step=s``; its first d actions are then already in the past and are
skipped (receding, rtc) or only overlap-averaged for the remaining ticks (ensemble). In a
synchronous loop (simulation) RTC needs no late push: the frozen first d actions of the new
chunk *are* the previous chunk's, so executing them from the new chunk is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaforge.types import ActionChunk

MODES = ("receding", "ensemble", "rtc")


@dataclass(frozen=True)
class ExecutorConfig:
    """How chunks are executed.

    mode: "receding" | "ensemble" | "rtc".
    execute: k, ticks between two policy calls. None = the whole chunk H (receding), 1 (ensemble)
        or H // 2 (rtc, the paper's s; needs rtc_delay <= s <= H - rtc_delay).
    ensemble_decay: m in w_i = exp(-m * i), i = 0 the oldest prediction (ACT uses 0.01).
    rtc_delay: d, inference delay in ticks for rtc: the first d actions of a new chunk are frozen.
    """

    mode: str = "receding"
    execute: int | None = None
    ensemble_decay: float = 0.01
    rtc_delay: int = 1

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
        if isinstance(self.rtc_delay, bool) or not isinstance(self.rtc_delay, int) or self.rtc_delay < 0:
            raise ValueError(
                f"ExecutorConfig.rtc_delay: expected an int >= 0 (inference delay in control ticks), "
                f"got {self.rtc_delay!r}"
            )
        if self.mode == "rtc" and self.execute is not None and self.execute < self.rtc_delay:
            raise ValueError(
                f"ExecutorConfig.execute={self.execute} < rtc_delay={self.rtc_delay}: real-time chunking "
                "needs d <= s (a chunk must not be requested before the previous one arrived)"
            )
        if not math.isfinite(self.ensemble_decay):
            raise ValueError(
                f"ExecutorConfig.ensemble_decay: expected a finite float, got {self.ensemble_decay!r}"
            )

    def describe(self) -> str:
        """A short human-readable label, e.g. 'receding k=8', 'ensemble k=1 m=0.01', 'rtc k=H/2 d=1'."""
        if self.mode == "rtc":
            return f"rtc k={self.execute or 'H/2'} d={self.rtc_delay}"
        k = "H" if self.execute is None and self.mode == "receding" else (self.execute or 1)
        if self.mode == "receding":
            return f"receding k={k}"
        return f"ensemble k={k} m={self.ensemble_decay:g}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "execute": self.execute,
            "ensemble_decay": self.ensemble_decay,
        }
        if self.mode == "rtc":
            out["rtc_delay"] = self.rtc_delay
        return out


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
        if not self._chunks:
            return None
        horizon = len(self._chunks[-1][1])
        return max(horizon // 2, self.config.rtc_delay, 1) if self.config.mode == "rtc" else horizon

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
        if self.config.mode != "ensemble":  # receding and rtc: the newest chunk replaces the plan
            self._chunks = [(start, actions)]
        else:
            self._chunks.append((start, actions))

    def pending_actions(self) -> np.ndarray:
        """Actions of the newest chunk not yet due or executed: (H - elapsed, A)."""
        if not self._chunks:
            raise RuntimeError("ChunkExecutor.pending_actions: no chunk pushed yet")
        start, chunk = self._chunks[-1]
        return chunk[self.step - start :]

    def rtc_guidance(self) -> tuple[np.ndarray, np.ndarray] | None:
        """What the next chunk must continue, for mode "rtc": (prefix (H, A), weights (H,)), or None.

        prefix[i] is the previous chunk's action for tick now + i (padded with its last action
        where it has none; those entries get weight 0); weights = rtc_weights(H, d, s) with
        s = ticks executed from the previous chunk and d = min(rtc_delay, H - s). None before the
        first chunk of an episode (nothing to continue: sample freely).
        """
        if self.config.mode != "rtc":
            raise RuntimeError(
                f"ChunkExecutor.rtc_guidance: executor mode is {self.config.mode!r}; use ExecutorConfig(mode='rtc')"
            )
        if not self._chunks:
            return None
        from vlaforge.runtime.rtc import aligned_prefix, rtc_weights

        start, chunk = self._chunks[-1]
        horizon, s = len(chunk), self.step - start
        d = min(self.config.rtc_delay, horizon - s)
        return aligned_prefix(chunk, s), rtc_weights(horizon, d, s)

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
        if self.config.mode != "ensemble":
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
