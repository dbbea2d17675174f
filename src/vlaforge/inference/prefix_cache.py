"""Octo's task-prefix KV cache, and `Policy.predict` stage by stage (timers between the stages).

`Policy.predict` is observations_to_batch -> encode (image stems, state and text encoders, one
transformer pass) -> head.sample (all denoising / integration steps) -> unnormalize. A profiler
would attribute time to thousands of small ops; what a reader wants is four numbers, so
`StagedPredictor` calls the steps `Policy.encode` is made of (`observation_tokens`, `_text_tokens`,
`readout_tokens`, `octo_mask`, the transformer, `readout_features`) and then what `Policy.predict_batch`
calls, with a timer mark between the stages:

    tokenize     images -> float, resize, conv stems; state normalize + encoder; text tokens
    transformer  building the Octo mask and the one pass over [task | obs | readouts] -> features (B, D)
    head         head.sample: DDPM / DDIM / Euler steps, or the one pass of binned / l1
    rest         observation validation and batching, unnormalize, copy to numpy

With the same generator its actions are bit-identical to `predict_batch`'s (tests/bench checks it),
so the breakdown describes the real call, not an approximation of it.

Prefix cache (`prefix_cache=True`): in Octo's layout the task block attends only to itself
(`models/attention.py: octo_blocks`) and nothing before it exists, so its keys/values depend on the
instruction alone. They are computed once per instruction (with the text tokens and the attention
mask) and every later call runs the transformer on the observation and readout tokens only, reading
the task through `BlockTransformer(..., past_kv=...)`. The instruction is fixed for a whole episode,
so in a robot loop every call after the first is a cache hit. The cache belongs to frozen weights:
call `clear_cache()` after changing the policy's weights.

A deployable fast path (this is `inference/`); `vlaforge bench` times it (and every stage of the plain
call) through the same class, so what it measures is what ships.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlaforge.models.transformer import PastKV
from vlaforge.policies.octo.policy import Policy
from vlaforge.types import ACTION_KEY, Observation

STAGES = ("tokenize", "transformer", "head", "rest")


class StageTimer:
    """Accumulates wall time per stage; `mark(stage)` charges the time since the previous mark to it.

    On CUDA every mark synchronizes first, otherwise the time of queued kernels would be charged to
    whichever later stage happens to wait for them.
    """

    def __init__(self, device: torch.device, stages: Sequence[str] = STAGES):
        self.cuda = device.type == "cuda"
        self.seconds = dict.fromkeys(stages, 0.0)
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": sum(self.seconds.values())}


@dataclass
class _TaskPrefix:
    """What the prefix cache keeps per instruction batch."""

    kv: PastKV  # one (k, v) per layer, each (B, heads, L, head_dim)
    suffix_mask: torch.Tensor  # (B, N - L, N) bool: rows of obs + readout queries over all keys
    text_len: int  # L


class StagedPredictor:
    """The policy's predict path with stage timers; optionally with the task-prefix KV cache.

    Single-dataset policies only (a mixture's per-sample statistics are not staged here).
    """

    def __init__(self, policy: Policy, *, prefix_cache: bool = False, max_cached: int = 16):
        if policy.config.datasets:
            raise ValueError(
                f"StagedPredictor: mixture policies (datasets {policy.config.datasets}) are not supported; "
                "benchmark a single-dataset policy"
            )
        if max_cached < 1:
            raise ValueError(f"StagedPredictor: max_cached must be >= 1, got {max_cached}")
        self.policy = policy
        self.prefix_cache = prefix_cache
        self.max_cached = max_cached
        self._cache: OrderedDict[tuple[str, ...], _TaskPrefix] = OrderedDict()

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cached_instructions(self) -> int:
        return len(self._cache)

    # ------------------------------------------------------------------ public calls
    def predict(
        self,
        observations: Observation | Sequence[Observation],
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        timer: StageTimer | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Like `Policy.predict`: -> actions (H, A) float32 in robot units, seconds per stage (+ "total").

        timer: something else to mark the stages with (`flops.count_stage_flops` counts FLOPs per stage).
        """
        timer = timer or StageTimer(self.policy.device)
        with torch.inference_mode(), eval_mode(self.policy):
            batch = self.policy.observations_to_batch(observations)
            timer.mark("rest")
            actions = self._run(batch, steps, generator, timer)  # (1, H, A)
            out = actions[0].cpu().numpy().astype(np.float32)  # (H, A)
            timer.mark("rest")
        if not np.all(np.isfinite(out)):
            raise FloatingPointError("policy produced non-finite actions; refusing to return them")
        return out, timer.total()

    def predict_batch(
        self, batch: dict[str, Any], *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Like `Policy.predict_batch` (a batch as `observations_to_batch` builds it): -> (B, H, A), seconds."""
        timer = StageTimer(self.policy.device)
        with torch.inference_mode(), eval_mode(self.policy):
            actions = self._run(batch, steps, generator, timer)
        return actions, timer.total()

    # ------------------------------------------------------------------ the stages
    def _run(
        self,
        batch: dict[str, Any],
        steps: int | None,
        generator: torch.Generator | None,
        timer: StageTimer,
    ) -> torch.Tensor:
        p, c = self.policy, self.policy.config
        obs = p.observation_tokens(batch)  # (B, T, n_obs, D): images, state, time embedding
        B = obs.shape[0]
        tasks = [batch["task"]] * B if isinstance(batch["task"], str) else list(batch["task"])
        if len(tasks) != B:
            raise ValueError(f"batch['task'] has {len(tasks)} instructions for a batch of {B}")
        key = tuple(tasks)
        entry = self._cache.get(key) if self.prefix_cache else None
        text: torch.Tensor | None = None
        text_valid: torch.Tensor | None = None
        if entry is None:
            text, text_valid = p._text_tokens(tasks)  # (B, L, D), (B, L): the policy's own language branch
        timer.mark("tokenize")

        readouts = p.readout_tokens(B)  # (B, T*R, D)
        obs = obs.reshape(B, c.history * p.n_obs, c.width)  # (B, T*n_obs, D)
        if self.prefix_cache:
            if entry is None:
                assert text is not None and text_valid is not None
                entry = self._store_prefix(key, text, text_valid)
            self._cache.move_to_end(key)
            suffix = torch.cat([obs, readouts], dim=1)  # (B, N - L, D)
            out = p.transformer(suffix, entry.suffix_mask, past_kv=entry.kv)  # (B, N - L, D)
        else:
            assert text is not None and text_valid is not None
            L = text.shape[1]
            x = torch.cat([text, obs, readouts], dim=1)  # (B, N, D)
            out = p.transformer(x, p.octo_mask(text_valid))[:, L:]  # (B, N - L, D)
        features = p.readout_features(out)  # (B, D)
        timer.mark("transformer")

        actions = p.head.sample(features, steps=steps, generator=generator)  # (B, H, A) normalized
        timer.mark("head")
        actions = p.normalizer.unnormalize(ACTION_KEY, actions.float())  # (B, H, A) robot units
        timer.mark("rest")
        return actions

    def _store_prefix(
        self, key: tuple[str, ...], text: torch.Tensor, text_valid: torch.Tensor
    ) -> _TaskPrefix:
        """Run the task block alone and keep its keys/values; valid because task rows read only the task."""
        L = text.shape[1]
        mask = self.policy.octo_mask(text_valid)  # (B, N, N)
        _, kv = self.policy.transformer(text, mask[:, :L, :L], return_kv=True)  # kv: (B, h, L, hd) per layer
        entry = _TaskPrefix(kv=kv, suffix_mask=mask[:, L:, :].contiguous(), text_len=L)
        self._cache[key] = entry
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)  # least recently used instruction
        return entry


class eval_mode:
    """Eval mode for the duration of a call, restoring the previous mode (as `predict_batch` does)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)
