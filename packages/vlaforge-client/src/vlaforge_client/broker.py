"""ActionChunkBroker: one action per control tick from a remote policy, without stalling the loop.

    broker = ActionChunkBroker(client.infer, refill_below=4)
    for tick in range(n):
        action = broker.act(obs)          # never waits for the network unless the queue ran dry
        obs = robot.step(action)

A chunk takes a network round trip plus a forward pass to arrive. Waiting for it at every chunk
boundary makes the robot stop and go; instead, when fewer than `refill_below` actions are queued the
broker asks for the next chunk on a background thread with the current observation and keeps handing
out queued actions meanwhile. When the new chunk arrives ``d`` ticks after it was requested, its first
``d`` actions belong to ticks already executed and are dropped; the rest overlaps what is still queued,
and the overlap is blended linearly from the old plan to the new one (weight of the new chunk rising
from 1/(r+1) to r/(r+1) over the r overlapping actions) so that the switch is smooth.

With ``rtc=True`` (servers whose metadata says ``"rtc": true``: flow and diffusion heads) the broker
asks for **real-time chunking** instead of blending: each request carries the current plan as
``"rtc": {"prefix": ..., "delay": d}``, the server inpaints the new chunk so that its first d actions
(due before the reply can arrive) equal the plan and the rest of the overlap is guided toward it,
and the arriving chunk simply replaces the queue. d is the largest delay, in ticks, of the last
few chunks (``rtc_delay`` before the first one arrives).

All requests run on one worker thread, so a non-thread-safe client (a websocket) is fine.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from vlaforge_client.msgpack_numpy import observation_to_message

log = logging.getLogger("vlaforge.broker")


def blend_overlap(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Linear cross-fade of the r still-queued actions `old` (r, A) into the new plan `new` (n, A)."""
    r = min(len(old), len(new))
    if r == 0:
        return np.asarray(new, dtype=np.float32)
    w = (np.arange(1, r + 1) / (r + 1))[:, None]  # (r, 1): new plan's weight grows along the overlap
    mixed = (1.0 - w) * old[:r] + w * new[:r]  # (r, A)
    return np.concatenate([mixed, new[r:]]).astype(np.float32)  # (n, A)


class ActionChunkBroker:
    """Hands out one action per `act` call, refilling asynchronously.

    infer: observation -> reply dict with "actions" (H, A) (e.g. `PolicyClient.infer`), or -> (H, A) array.
    refill_below: request the next chunk when fewer than this many actions are queued (>= 1).
    blend: cross-fade the overlap (True) or replace the queue with the new chunk (False).
    rtc: request real-time chunking (observations must be message dicts or Observations); replaces
        blending. rtc_delay: the assumed inference delay in ticks until the first chunk has measured it.
    """

    def __init__(
        self,
        infer: Callable[[Any], Any],
        refill_below: int = 2,
        *,
        blend: bool = True,
        rtc: bool = False,
        rtc_delay: int = 2,
    ) -> None:
        if refill_below < 1:
            raise ValueError(f"ActionChunkBroker.refill_below: expected >= 1, got {refill_below}")
        if rtc_delay < 1:
            raise ValueError(f"ActionChunkBroker.rtc_delay: expected >= 1 tick, got {rtc_delay}")
        self._infer = infer
        self.refill_below = refill_below
        self.blend = blend
        self.rtc = rtc
        self.rtc_delay = rtc_delay
        self._recent_delays: deque[int] = deque(maxlen=8)
        self._horizon: int | None = None
        self._queue: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlaforge-broker")
        self._pending: Future | None = None
        self._requested_at = 0
        self.tick = 0
        self.chunks_received = 0
        self.stalls = 0  # ticks where the queue was empty and act() had to wait
        self.decode_failures = 0  # chunks the server flagged "decode_failed" (executed like any other)

    def _call(self, obs: Any, plan: np.ndarray | None = None, delay: int = 0) -> np.ndarray:
        if plan is not None:  # real-time chunking: continue the plan (P, A) from the request's tick on
            message = dict(obs) if isinstance(obs, dict) else observation_to_message(obs)
            message["rtc"] = {"prefix": plan, "delay": min(delay, len(plan))}
            obs = message
        reply = self._infer(obs)
        if isinstance(reply, dict) and reply.get("decode_failed"):
            self.decode_failures += 1
            log.warning("server flagged a chunk that failed to decode: %s", reply.get("decode_error"))
        actions = reply["actions"] if isinstance(reply, dict) else reply
        actions = np.asarray(actions, dtype=np.float32)  # (H, A)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"ActionChunkBroker: expected actions (H, A), got shape {actions.shape}")
        return actions

    def delay_estimate(self) -> int:
        """Ticks between a request and its chunk's first usable action (RTC's frozen prefix length d)."""
        return max(self._recent_delays) if self._recent_delays else self.rtc_delay

    def _merge(self, chunk: np.ndarray, requested_at: int) -> None:
        late = self.tick - requested_at  # ticks executed while the chunk was in flight
        if late > 0:  # 0 = act() waited for it (empty queue): says nothing about the delay
            self._recent_delays.append(late)
        self._horizon = len(chunk)
        fresh = chunk[late:]  # (H - late, A)
        if len(fresh) == 0:
            return  # the whole chunk is stale: keep the current plan, a new request follows
        with self._lock:
            old = np.asarray(list(self._queue)) if self._queue else np.zeros((0, chunk.shape[1]), np.float32)
            # RTC chunks already continue the plan (frozen + guided overlap): they replace it as they are
            plan = blend_overlap(old, fresh) if self.blend and not self.rtc else fresh
            self._queue = deque(plan)
        self.chunks_received += 1

    def _collect(self, wait: bool) -> None:
        f = self._pending
        if f is None or (not wait and not f.done()):
            return
        self._pending = None
        self._merge(f.result(), self._requested_at)  # re-raises a failed request here, on the caller's thread

    def act(self, obs: Any) -> np.ndarray:
        """The action for this tick, float32 (A,). `obs` is the current observation."""
        self._collect(wait=False)
        if not self._queue:
            self.stalls += 1
            if self._pending is None:
                self._pending, self._requested_at = self._pool.submit(self._call, obs), self.tick
            self._collect(wait=True)
            if not self._queue:  # the chunk arrived entirely stale: ask again with this observation
                self._merge(self._pool.submit(self._call, obs).result(), self.tick)
        with self._lock:
            action = self._queue.popleft()
            refill = len(self._queue) < self.refill_below and self._pending is None
            plan = None
            if refill and self.rtc:  # this tick's action, then the queue: the plan from this tick on
                plan = np.stack([action, *self._queue])[: self._horizon]  # (P, A)
        if refill:
            # the chunk is predicted from this tick's observation: its first action is for this tick
            self._pending = self._pool.submit(self._call, obs, plan, self.delay_estimate())
            self._requested_at = self.tick
        self.tick += 1
        return action

    def reset(self) -> None:
        """New episode: drop queued actions and wait out (then discard) any request in flight."""
        if self._pending is not None:
            try:
                self._pending.result()
            except Exception:  # the old episode's failure does not matter any more
                pass
            self._pending = None
        with self._lock:
            self._queue.clear()
        self.tick = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)
