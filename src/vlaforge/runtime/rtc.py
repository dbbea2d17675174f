"""Real-time chunking (RTC, Black et al. 2025, arXiv 2506.07339): the next chunk continues the current one.

A chunk of H actions is predicted from the observation at tick t, but it only arrives d ticks
later (the inference delay); meanwhile the robot keeps executing the previous chunk. Sampling
the new chunk independently lets it pick another mode of the action distribution, and the
switch is a jump. RTC samples it as an *inpainting* problem instead (paper symbols):

    i < d            frozen: those actions are executed from the previous chunk anyway -> W = 1
    d <= i < H - s   overlap: guided toward the previous chunk, W decaying exponentially
    i >= H - s       free: the previous chunk has no action there -> W = 0

with s the number of actions executed between two chunk starts (d <= s <= H - d). The weights
follow the paper's schedule W_i = c_i (e^{c_i} - 1) / (e - 1), c_i = (H - s - i) / (H - s - d + 1).

The heads do the guidance (``FlowHead.sample`` / ``DiffusionHead.sample`` with ``prefix`` and
``prefix_weights``, in normalized action space); this module builds the weights, aligns the
previous chunk to the new chunk's time, and runs a `Policy` with them (`rtc_predict`), without
`Policy` needing an RTC-specific method. torch is imported lazily: `vlaforge.runtime` (executor,
safety filter) also runs on robot computers that have only numpy.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vlaforge.types import ACTION_KEY, ActionChunk, Observation

if TYPE_CHECKING:
    import torch


def rtc_weights(horizon: int, delay: int, execute: int) -> np.ndarray:
    """Guidance weights W (H,) float32: 1 for i < d, exponential decay on [d, H - s), 0 from H - s on.

    horizon: H. delay: d, ticks of inference delay (frozen actions). execute: s, actions executed
    from the previous chunk before the new one starts (its overlap with the new one is H - s).
    """
    H, d, s = horizon, delay, execute
    for name, v in (("horizon", H), ("delay", d), ("execute", s)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"rtc_weights: {name} must be an int >= 0, got {v!r}")
    if H < 1 or s > H or d > H - s:
        raise ValueError(
            f"rtc_weights: need H >= 1 and 0 <= d <= H - s (the frozen actions lie inside the previous "
            f"chunk's overlap); got H={H}, d={d}, s={s}"
        )
    i = np.arange(H, dtype=np.float64)  # (H,)
    c = (H - s - i) / (H - s - d + 1)  # (H,) in (0, 1) on the overlap
    w = c * np.expm1(c) / (math.e - 1)
    w = np.where(i < d, 1.0, np.where(i >= H - s, 0.0, w))
    return w.astype(np.float32)


def aligned_prefix(previous: np.ndarray, executed: int, horizon: int | None = None) -> np.ndarray:
    """The previous chunk (H, A) seen from `executed` ticks after its start: (H, A), padded with its last row.

    prefix[i] is the previous chunk's action for the new chunk's tick i; the padding only fills
    entries whose RTC weight is 0.
    """
    prev = np.asarray(previous, dtype=np.float32)  # (H, A)
    if prev.ndim != 2 or prev.shape[0] < 1:
        raise ValueError(f"aligned_prefix: expected the previous chunk as (H, A), got {prev.shape}")
    H = prev.shape[0] if horizon is None else horizon
    if not 0 <= executed < prev.shape[0]:
        raise ValueError(
            f"aligned_prefix: executed={executed} must be in [0, {prev.shape[0]}) (the previous chunk is used up)"
        )
    rest = prev[executed : executed + H]  # (<= H, A)
    pad = np.repeat(rest[-1:], H - rest.shape[0], axis=0)  # (H - len(rest), A)
    return np.concatenate([rest, pad], axis=0)  # (H, A)


def supports_prefix(head: Any) -> bool:
    """Whether a head's ``sample`` accepts ``prefix`` / ``prefix_weights`` (flow and diffusion heads)."""
    try:
        params = inspect.signature(head.sample).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return "prefix" in params and "prefix_weights" in params


def rtc_mode(policy: Any) -> str | None:
    """How a policy runs real-time chunking: "own" (its ``predict_rtc``), "head" (`rtc_predict`: guided
    sampling through its flow or diffusion head), or None.

    A vlaforge policy class declares it (``capabilities.rtc``; "head" holds when its configured head can
    inpaint); any other policy (a `RemotePolicy`, a user's) runs RTC if it has ``predict_rtc``.
    """
    declared = getattr(policy, "capabilities", None)  # vlaforge policies: policies.base.Capabilities
    if declared is None:
        return "own" if callable(getattr(policy, "predict_rtc", None)) else None
    if declared.rtc == "head":
        return "head" if supports_prefix(policy.head) else None
    return declared.rtc  # type: ignore[no-any-return]


def supports_rtc(policy: Any) -> bool:
    """Whether `predict_rtc(policy, ...)` can run (`rtc_mode` is not None)."""
    return rtc_mode(policy) is not None


def rtc_predict(
    policy: Any,
    batch: dict[str, Any],
    prev_chunk: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    steps: int | None = None,
) -> torch.Tensor:
    """`Policy.predict_batch` with the chunk inpainted toward `prev_chunk`: actions (B, H, A) in robot units.

    prev_chunk: (H, A) or (B, H, A) robot-unit actions already aligned to the new chunk's time
    (`aligned_prefix`); weights: (H,) in [0, 1] (`rtc_weights`). With all weights 0 the result
    equals ``policy.predict_batch(batch, steps=steps, generator=generator)`` for the same generator;
    entries with weight 1 are returned exactly as given (robot units, no normalization round-off).
    """
    import torch

    if not supports_prefix(getattr(policy, "head", None)):
        head = type(getattr(policy, "head", None)).__name__
        raise TypeError(
            f"rtc_predict: the policy's head ({head}) cannot inpaint a prefix; real-time chunking needs a "
            "flow or diffusion head (recipe option head=flow or head=diffusion)"
        )
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():  # not inference_mode: the guidance takes a backward pass through the head
            features = policy.encode(batch, train=False)  # (B, D)
            B, H, A = features.shape[0], policy.head.horizon, policy.head.action_dim
            prev = torch.as_tensor(prev_chunk, dtype=torch.float32, device=features.device)
            if prev.dim() == 2:
                prev = prev.unsqueeze(0).expand(B, -1, -1)  # (B, H, A)
            if tuple(prev.shape) != (B, H, A):
                raise ValueError(
                    f"rtc_predict: prev_chunk must be (H, A) = ({H}, {A}) or (B, H, A) = ({B}, {H}, {A}) robot-unit "
                    f"actions aligned to the new chunk, got {tuple(prev.shape)}"
                )
            w = torch.as_tensor(weights, dtype=torch.float32, device=features.device)  # (H,)
            prefix = policy.normalizer.normalize(ACTION_KEY, prev)  # (B, H, A) normalized
            actions = policy.head.sample(
                features, steps=steps, generator=generator, prefix=prefix, prefix_weights=w
            )  # (B, H, A) normalized
            out = policy.normalizer.unnormalize(ACTION_KEY, actions.float())  # (B, H, A) robot units
            frozen = (w >= 1)[None, :, None]  # (1, H, 1)
            return torch.where(frozen, prev.to(out.dtype), out)
    finally:
        policy.train(was_training)


def predict_rtc(
    policy: Any,
    observations: Observation | Sequence[Observation],
    prefix: np.ndarray,
    weights: np.ndarray,
    *,
    generator: torch.Generator | None = None,
    steps: int | None = None,
) -> ActionChunk:
    """One RTC chunk for one observation window: `policy.predict_rtc` if it has one, else `rtc_predict`.

    prefix: (H, A) robot-unit previous actions aligned to now; weights: (H,). Returns an ActionChunk (H, A).
    """
    mode = rtc_mode(policy)
    if mode == "own":
        return policy.predict_rtc(observations, prefix=prefix, weights=weights, generator=generator)  # type: ignore[no-any-return]
    if mode is None:
        raise TypeError(
            f"executor mode 'rtc' needs a vlaforge Policy with a flow or diffusion head, or a policy with "
            f"predict_rtc(observations, prefix=, weights=, generator=); got {type(policy).__name__}"
        )
    batch = policy.observations_to_batch(observations)
    out = rtc_predict(policy, batch, prefix, weights, generator, steps=steps)[0].cpu().numpy()  # (H, A)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(
            "policy produced non-finite actions under RTC guidance; refusing to return them"
        )
    return ActionChunk(out.astype(np.float32), control_hz=float(policy.config.fps), info={"rtc": True})
