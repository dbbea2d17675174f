"""PolicyServer: serve a policy over a websocket, in the openpi message format, safely.

    server = PolicyServer(Policy.load("runs/x"), host="0.0.0.0", port=8000, api_key="secret")
    server.run()  # blocks; SIGTERM / SIGINT close connections cleanly (code 1001) and return

Per connection: the server sends the metadata map, then answers every binary msgpack message. An
observation gets ``{"actions": (H, A), "decode_failed": bool, "server_timing": {...}, "policy_timing":
{...}}`` (+ ``"decode_error"`` when the chunk is a token-decoding fallback, ``"subtask"`` from π0.5 with
subtasks); anything that cannot be served gets ``{"error": "...", "kind": ...}`` and the connection stays
usable. ``decode_failures="error"`` answers a failed chunk with an error (kind ``"decode"``) instead. ``GET /healthz``
answers 200 without a websocket (and without the API key, so load balancers can probe it).

Why these choices (the two best-known open servers get them wrong):
- the API key is checked during the HTTP handshake, with `hmac.compare_digest` (constant time), and a
  wrong or missing key gets 401 before any message is read;
- frames are bounded by ``max_message_bytes`` (websockets closes with 1009 above it) and decoding is
  bounded too (see protocol.py): no pickle, no object arrays, no huge allocations from a small frame;
- inference runs on one worker thread, off the event loop, so health checks, handshakes and other
  clients' error replies are never blocked behind a forward pass; with ``max_batch > 1`` concurrent
  requests share one forward pass (more requests per second on the same hardware).

History: the server keeps the last T observations per connection (T = the policy's history), so an
openpi-style client sends one observation per call. ``{"control": "reset"}`` starts a new episode, a new
instruction resets too, and a message may carry the whole history itself (state (T, S)).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from vlaforge.serve.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ProtocolError,
    control_of,
    error_message,
    metadata_message,
    pack,
    parse_observation,
    parse_rtc,
    unpack,
)

log = logging.getLogger("vlaforge.serve")
HEALTH_PATH = "/healthz"
DECODE_FAILURE_MODES = ("flag", "error")


def chunk_fields(info: Any) -> dict[str, Any]:
    """The reply fields of one chunk's `ActionChunk.info` (per chunk, so a batch may mix): ``decode_failed``
    (always), ``decode_error`` (when it failed), ``subtask`` (π0.5 with subtasks)."""
    info = info if isinstance(info, dict) else {}
    out: dict[str, Any] = {"decode_failed": bool(info.get("decode_failed", False))}
    if out["decode_failed"]:
        out["decode_error"] = str(info.get("decode_error") or "decoding failed")
    if isinstance(info.get("subtask"), str):
        out["subtask"] = info["subtask"]
    return out


def _batchable(policy: Any) -> bool:
    """Batched inference: a vlaforge policy that declares it (``capabilities.batching``: its
    `observations_to_batch` + `predict_batch`), trained on one dataset (a mixture needs a name per request)."""
    declared = getattr(policy, "capabilities", None)  # vlaforge policies: policies.base.Capabilities
    return declared is not None and declared.batching and not policy.config.datasets


class TimingStats:
    """Running latency record for the aggregate log line (bounded memory: last 10k requests)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.total_ms: deque[float] = deque(maxlen=keep)
        self.requests = self.errors = self.decode_failures = 0

    def add(self, ms: float) -> None:
        self.requests += 1
        self.total_ms.append(ms)

    def summary(self) -> dict[str, float]:
        counts = {"requests": self.requests, "errors": self.errors, "decode_failures": self.decode_failures}
        if not self.total_ms:
            return counts
        arr = np.asarray(self.total_ms)
        return {
            **counts,
            "p50_ms": round(float(np.percentile(arr, 50)), 3),
            "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "mean_ms": round(float(arr.mean()), 3),
        }


class PolicyServer:
    """Serve one `PolicyLike` (anything with `.spec` and `.predict(list[Observation])`).

    safety: optional `SafetyLimits`; when set, every returned chunk is filtered (as a trajectory from the
    observed state) and the reply carries ``"safety": {"interventions": [...], "stats": {...}}``.
    max_batch: > 1 runs concurrent requests of different clients as one forward pass (vlaforge `Policy`
        only); batch_timeout_ms: how long the first request of a batch waits for company. Requests that
        arrive while a batch is running form the next batch, so under load batches fill up without waiting.

    A message with an ``"rtc"`` key (see `parse_rtc`) is answered by real-time chunking: the chunk
    is inpainted to continue the client's current plan (flow and diffusion heads; metadata "rtc").

    decode_failures: what a chunk that failed to decode (π0-FAST's fallback chunk, OpenVLA's replaced
    non-action tokens) gets: "flag" (default) returns it with ``"decode_failed": true`` and the reason in
    ``"decode_error"``; "error" returns no actions but an error reply of kind "decode".
    """

    def __init__(
        self,
        policy: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        api_key: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        safety: Any | None = None,
        metadata: dict[str, Any] | None = None,
        max_batch: int = 1,
        batch_timeout_ms: float = 2.0,
        decode_failures: str = "flag",
    ) -> None:
        if api_key is not None and not api_key:
            raise ValueError("PolicyServer: api_key is empty; pass None for no authentication")
        if max_message_bytes < 1024:
            raise ValueError(f"PolicyServer: max_message_bytes={max_message_bytes} is too small (>= 1024)")
        if max_batch < 1:
            raise ValueError(f"PolicyServer: max_batch={max_batch} must be >= 1 (1 = no batching)")
        if batch_timeout_ms < 0:
            raise ValueError(f"PolicyServer: batch_timeout_ms={batch_timeout_ms} must be >= 0")
        if decode_failures not in DECODE_FAILURE_MODES:
            raise ValueError(f"PolicyServer: decode_failures={decode_failures!r}: expected 'flag' or 'error'")
        self.decode_failures = decode_failures
        self.policy = policy
        self.spec = policy.spec
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.safety_limits = safety
        self._expected_auth = None if api_key is None else f"Api-Key {api_key}".encode()
        from vlaforge.runtime.rtc import supports_rtc

        self.rtc = supports_rtc(policy)
        self.max_batch = max_batch if _batchable(policy) else 1
        if max_batch > 1 and self.max_batch == 1:
            log.warning("max_batch=%d ignored: %s has no batched inference", max_batch, type(policy).__name__)
        self.batch_timeout_s = batch_timeout_ms / 1e3
        self._batch_queue: asyncio.Queue | None = None
        recipe = getattr(getattr(policy, "config", None), "recipe", None)
        self.metadata = metadata_message(
            self.spec,
            recipe=recipe,
            max_message_bytes=max_message_bytes,
            safety=safety is not None,
            rtc=self.rtc,
            max_batch=self.max_batch,
            decode_failures=decode_failures,
            **(metadata or {}),
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlaforge-infer")
        self.stats = TimingStats()
        self._bound = threading.Event()
        self._stop: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ HTTP handshake
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self._expected_auth is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, self._expected_auth):
                log.warning(
                    "rejected connection from %s: missing or wrong API key", connection.remote_address
                )
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED, "missing or wrong API key (Authorization: Api-Key ...)\n"
                )
        return None

    # ------------------------------------------------------------------ one connection
    async def _handler(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        history: deque = deque(maxlen=self.spec.history)
        safety = None
        if self.safety_limits is not None:
            from vlaforge.runtime.safety import SafetyFilter

            safety = SafetyFilter(self.safety_limits)
        conn_stats = TimingStats()
        prev_total_ms: float | None = None
        log.info("client connected: %s", peer)
        try:
            await ws.send(pack(self.metadata))
            async for frame in ws:
                t0 = time.perf_counter()
                reply = await self._answer(frame, history, safety, prev_total_ms, t0)
                await ws.send(pack(reply))
                total_ms = (time.perf_counter() - t0) * 1e3
                if reply.get("decode_failed") or reply.get("kind") == "decode":
                    conn_stats.decode_failures += 1
                    self.stats.decode_failures += 1
                if "error" in reply:
                    conn_stats.errors += 1
                    self.stats.errors += 1
                    log.info("%s error reply (%s): %s", peer, reply.get("kind"), reply["error"][:200])
                elif "actions" in reply:
                    prev_total_ms = total_ms
                    conn_stats.add(total_ms)
                    self.stats.add(total_ms)
                    log.debug("%s request %.2f ms %s", peer, total_ms, reply["server_timing"])
        except ConnectionClosed:
            pass
        finally:
            log.info("client disconnected: %s %s", peer, conn_stats.summary())

    async def _answer(
        self, frame: Any, history: deque, safety: Any, prev_total_ms: float | None, t0: float
    ) -> dict[str, Any]:
        try:
            message = unpack(frame, max_bytes=self.max_message_bytes)
            control = control_of(message)
            if control == "reset":
                history.clear()
                return {"control": "reset", "ok": True}
            if control == "metadata":
                return {"control": "metadata", "metadata": self.metadata}
            if control is not None:
                raise ProtocolError(f"unknown control {control!r} (known: 'reset', 'metadata')")
            observations, explicit = parse_observation(message, self.spec)
            rtc = parse_rtc(message, self.spec)
            if rtc is not None and not self.rtc:
                return error_message(
                    "this policy cannot do real-time chunking (it needs a flow or diffusion head); "
                    "drop the 'rtc' key",
                    "validation",
                )
        except ProtocolError as e:
            return error_message(str(e), "protocol")
        except Exception as e:  # a parser bug must cost one reply, not the connection
            log.exception("unexpected error while decoding a message")
            return error_message(f"could not decode the message: {type(e).__name__}: {e}", "protocol")
        t_decoded = time.perf_counter()

        if explicit:
            history.clear()
        elif history and history[-1].instruction != observations[-1].instruction:
            history.clear()  # a new task is a new episode
        before = list(history)
        history.extend(observations)
        window = list(history)
        T = self.spec.history
        if len(window) < T:
            window = [window[0]] * (T - len(window)) + window  # episode start: edge padding, as in datasets

        try:
            actions, info, infer_ms, queue_ms, batch_size = await self._run_policy(window, rtc, t_decoded)
        except (ValueError, KeyError) as e:  # the policy's own validation
            history.clear()
            history.extend(before)  # a rejected observation must not poison the next request
            return error_message(f"observation rejected by the policy: {e}", "validation")
        except Exception as e:  # a crashing forward pass must not take the server down
            history.clear()
            history.extend(before)
            log.exception("inference failed")
            return error_message(f"inference failed: {type(e).__name__}: {e}", "inference")

        fields = chunk_fields(info)
        if fields["decode_failed"] and self.decode_failures == "error":
            return error_message(f"the policy's output failed to decode: {fields['decode_error']}", "decode")
        reply: dict[str, Any] = {"actions": actions, **fields}
        if safety is not None:
            safe, per_step = safety.filter_chunk(actions, observations[-1].state)
            reply["actions"] = safe
            reply["safety"] = {
                "interventions": [
                    {"step": h, **iv.to_json()} for h, ivs in enumerate(per_step) for iv in ivs
                ],
                "stats": safety.stats(),
            }
        now = time.perf_counter()
        reply["server_timing"] = {
            "decode_ms": (t_decoded - t0) * 1e3,
            "queue_ms": queue_ms,
            "infer_ms": infer_ms,
            "batch_size": batch_size,
            "total_ms": (now - t0) * 1e3,
            **({} if prev_total_ms is None else {"prev_total_ms": prev_total_ms}),
        }
        reply["policy_timing"] = {"infer_ms": infer_ms}
        return reply

    async def _run_policy(
        self, window: list, rtc: tuple[np.ndarray, np.ndarray] | None, t_submitted: float
    ) -> tuple[np.ndarray, dict[str, Any], float, float, int]:
        """(actions (H, A), the chunk's info, infer_ms, queue_ms, batch_size); batched with other clients
        when enabled."""
        loop = asyncio.get_running_loop()
        if self.max_batch == 1 or rtc is not None or self._batch_queue is None:
            actions, info, infer_ms, queue_ms = await loop.run_in_executor(
                self._executor, self._infer, window, rtc, t_submitted
            )
            return actions, info, infer_ms, queue_ms, 1
        future = loop.create_future()
        await self._batch_queue.put((window, t_submitted, future))
        return await future

    def _infer(
        self, window: list, rtc: tuple[np.ndarray, np.ndarray] | None, t_submitted: float
    ) -> tuple[np.ndarray, dict[str, Any], float, float]:
        t0 = time.perf_counter()
        if rtc is None:
            chunk = self.policy.predict(window)
        else:
            from vlaforge.runtime.rtc import predict_rtc

            chunk = predict_rtc(self.policy, window, *rtc)
        infer_ms = (time.perf_counter() - t0) * 1e3
        actions = self._check_actions(getattr(chunk, "actions", chunk))
        return actions, dict(getattr(chunk, "info", None) or {}), infer_ms, (t0 - t_submitted) * 1e3

    def _check_actions(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)  # (H, A)
        if actions.shape != (self.spec.chunk, self.spec.action_dim):
            raise RuntimeError(
                f"policy returned actions of shape {actions.shape}, spec says ({self.spec.chunk}, {self.spec.action_dim})"
            )
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError("policy produced non-finite actions; refusing to return them")
        return actions

    # ------------------------------------------------------------------ batching
    async def _batch_loop(self) -> None:
        """Collect concurrent requests (up to max_batch, waiting at most batch_timeout for company after
        the first) and run them as one forward pass on the inference thread. While a batch runs, new
        requests queue up and form the next batch, so batching adapts to the load by itself."""
        assert self._batch_queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._batch_queue.get()]
            deadline = loop.time() + self.batch_timeout_s
            while len(items) < self.max_batch:
                try:
                    items.append(self._batch_queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._batch_queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                results = await loop.run_in_executor(self._executor, self._infer_batch, items)
            except Exception as e:  # the whole forward pass failed: every request in it gets the error
                results = [e] * len(items)
            for (_, _, future), result in zip(items, results, strict=True):
                if future.done():  # the client went away meanwhile
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _infer_batch(self, items: list) -> list:
        """One forward pass for several windows -> per item (actions, info, infer_ms, queue_ms, B) or an
        exception. The info is each chunk's own (`predict_batch_info`): one failed chunk flags one reply."""
        import torch

        t0 = time.perf_counter()
        results: list[Any] = [None] * len(items)
        batches, index = [], []
        for i, (window, _, _) in enumerate(items):
            try:
                batches.append(self.policy.observations_to_batch(window))
                index.append(i)
            except (ValueError, KeyError) as e:  # this request's own validation error
                results[i] = e
        if batches:
            merged = {
                k: torch.cat([b[k] for b in batches])
                if torch.is_tensor(batches[0][k])
                else [x for b in batches for x in b[k]]
                for k in batches[0]
            }
            actions_t, infos = self.policy.predict_batch_info(merged)  # (B, H, A), B dicts
            actions = actions_t.cpu().numpy()
            infer_ms = (time.perf_counter() - t0) * 1e3
            for row, i in enumerate(index):
                try:
                    checked = self._check_actions(actions[row])
                    results[i] = (checked, infos[row], infer_ms, (t0 - items[i][1]) * 1e3, len(batches))
                except (RuntimeError, FloatingPointError) as e:
                    results[i] = e
        return results

    # ------------------------------------------------------------------ lifecycle
    async def serve(self, stop: asyncio.Future | None = None) -> None:
        """Serve until `stop` resolves (or SIGTERM/SIGINT when run via `run`), then close cleanly."""
        self._loop = asyncio.get_running_loop()
        self._stop = stop if stop is not None else self._loop.create_future()
        batcher = None
        if self.max_batch > 1:
            self._batch_queue = asyncio.Queue()
            batcher = asyncio.create_task(self._batch_loop(), name="vlaforge-batcher")
        async with serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            max_queue=4,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]  # port 0 -> the one the OS picked
            self._bound.set()
            log.info(
                "serving %s on ws://%s:%d (health: %s)",
                self.metadata.get("recipe"),
                self.host,
                self.port,
                HEALTH_PATH,
            )
            await self._stop
            log.info("shutting down: closing connections")
        if batcher is not None:
            batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher
        log.info("server stopped; aggregate %s", self.stats.summary())

    def run(self) -> None:
        """Blocking entry point for the CLI: serve until SIGTERM or SIGINT."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = loop.create_future()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
            await self.serve(stop)

        try:
            asyncio.run(main())
        finally:
            self._executor.shutdown(wait=True)

    def stop(self) -> None:
        """Thread-safe: ask a running `serve` to close (used by `running_in_thread`)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))

    @contextlib.contextmanager
    def running_in_thread(self, timeout: float = 10.0) -> Iterator[PolicyServer]:
        """Run the server on a background thread (tests, notebooks, benchmarks); port 0 picks a free port."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as e:  # surface bind errors to the caller
                errors.append(e)
                self._bound.set()

        thread = threading.Thread(target=target, name="vlaforge-server", daemon=True)
        thread.start()
        if not self._bound.wait(timeout) or errors:
            raise RuntimeError(f"PolicyServer did not start on {self.host}:{self.port}: {errors[:1]}")
        try:
            yield self
        finally:
            self.stop()
            thread.join(timeout)
            stuck = thread.is_alive()
            # never block forever on an inference that does not return: report it instead
            self._executor.shutdown(wait=not stuck, cancel_futures=stuck)
            if stuck:
                raise RuntimeError(f"PolicyServer on port {self.port} did not stop within {timeout} s")
