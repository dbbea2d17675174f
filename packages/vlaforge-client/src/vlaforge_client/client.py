"""PolicyClient: the robot side of the wire. Needs only numpy, msgpack and websockets (no torch).

    client = PolicyClient("gpu-box", 8000, api_key="secret")
    print(client.metadata["cameras"], client.metadata["chunk"])
    reply = client.infer({"images": {"front": rgb}, "state": state, "instruction": "open the drawer"})
    actions = reply["actions"]  # (H, A) float32

The client waits for the server at start-up and reconnects with exponential backoff when the connection
drops (a restarted server, a flaky network), retrying the request once after reconnecting. An error
reply from the server raises `ServerError` (the connection stays usable); a rejected API key raises
`AuthenticationError` at once instead of retrying forever.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from vlaforge_client.msgpack_numpy import DEFAULT_MAX_MESSAGE_BYTES, observation_to_message, pack, unpack

log = logging.getLogger("vlaforge.client")


class ServerError(RuntimeError):
    """The server answered with an error reply (bad observation, inference failure)."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class AuthenticationError(ConnectionError):
    """The server rejected the API key (HTTP 401)."""


class PolicyClient:
    """A synchronous client for `PolicyServer` (and for openpi-style servers speaking the same format).

    connect_timeout: how long to keep trying to reach the server, in seconds (at start and on reconnect).
    request_timeout: how long to wait for one reply, in seconds (None waits forever); a server that
        accepted the request but never answers raises `TimeoutError` instead of blocking the robot.
    backoff: first retry delay in seconds; doubles up to max_backoff.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = 8000,
        api_key: str | None = None,
        *,
        connect_timeout: float = 30.0,
        request_timeout: float | None = 60.0,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.uri = host if host.startswith(("ws://", "wss://")) else f"ws://{host}"
        if port is not None and not host.startswith(("ws://", "wss://")):
            self.uri += f":{port}"
        self._headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self.connect_timeout, self.backoff, self.max_backoff = connect_timeout, backoff, max_backoff
        self.request_timeout = request_timeout
        self.max_message_bytes = max_message_bytes
        self._ws: ClientConnection | None = None
        self.metadata: dict[str, Any] = {}
        self.reconnects = 0
        self._connect()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        delay = self.backoff
        while True:
            try:
                ws = connect(
                    self.uri,
                    additional_headers=self._headers,
                    compression=None,
                    max_size=self.max_message_bytes,
                    open_timeout=max(1.0, min(10.0, self.connect_timeout)),
                    proxy=None,
                )
                break
            except InvalidStatus as e:
                if e.response.status_code == 401:
                    raise AuthenticationError(f"{self.uri} rejected the API key (401)") from None
                err: Exception = e
            except (OSError, TimeoutError) as e:
                err = e
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"could not connect to {self.uri} within {self.connect_timeout} s: {err}"
                )
            log.info("waiting for server at %s (%s); retry in %.2f s", self.uri, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        self._ws = ws
        self.metadata = unpack(self._recv("the metadata message"), max_bytes=self.max_message_bytes)

    def _recv(self, what: str) -> bytes:
        assert self._ws is not None
        try:
            return self._ws.recv(timeout=self.request_timeout)
        except TimeoutError:
            self.close()  # a late reply must not be read as the answer to the next request
            raise TimeoutError(
                f"{self.uri} sent no reply ({what}) within request_timeout={self.request_timeout} s"
            ) from None

    def _roundtrip(self, payload: bytes) -> Any:
        assert self._ws is not None
        self._ws.send(payload)
        return unpack(self._recv("a reply"), max_bytes=self.max_message_bytes)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and return the reply; reconnects once if the connection dropped."""
        payload = pack(message)
        if self._ws is None:  # closed after a timeout: connect again first
            self._connect()
            self.reconnects += 1
        try:
            reply = self._roundtrip(payload)
        except TimeoutError:
            raise  # the server is alive but slow or stuck: retrying would double the wait
        except (ConnectionClosed, OSError) as e:
            log.warning("connection to %s lost (%s); reconnecting", self.uri, e)
            self.close()
            self._connect()
            self.reconnects += 1
            reply = self._roundtrip(payload)  # note: the server-side history restarted with the connection
        if isinstance(reply, dict) and "error" in reply:
            raise ServerError(str(reply["error"]), str(reply.get("kind", "")))
        return reply

    # ------------------------------------------------------------------ API
    def infer(self, obs: Any) -> dict[str, Any]:
        """Observation dict (or `Observation`, or a list of them = explicit history) -> reply dict.

        reply["actions"] is float32 (H, A); reply["server_timing"] / ["policy_timing"] are in ms;
        reply["decode_failed"] is True when the chunk is a token-decoding fallback (reason in
        reply["decode_error"]); reply["subtask"] is π0.5's decoded subtask, when it predicts one.
        """
        message = obs if isinstance(obs, dict) else observation_to_message(obs)
        t0 = time.perf_counter()
        reply = self.request(message)
        reply.setdefault("client_timing", {})["roundtrip_ms"] = (time.perf_counter() - t0) * 1e3
        return reply

    def reset(self) -> None:
        """Start a new episode: the server forgets this connection's observation history."""
        self.request({"control": "reset"})

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # closing a broken socket is best effort
                pass
            self._ws = None

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
