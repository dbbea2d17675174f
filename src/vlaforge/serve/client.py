"""The robot-side client, re-exported from the torch-free `vlaforge_client` package, plus `RemotePolicy`.

`PolicyClient`, `ServerError` and `AuthenticationError` live in `vlaforge_client.client` so that a robot
computer can `pip install packages/vlaforge-client` without torch; `RemotePolicy` adapts a client to the
in-process `PolicyLike` interface used by evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge_client.client import AuthenticationError, PolicyClient, ServerError
from vlaforge_client.msgpack_numpy import observation_to_message

__all__ = ["AuthenticationError", "PolicyClient", "RemotePolicy", "ServerError"]


class RemotePolicy:
    """A `PolicyLike` backed by a server, so in-process evaluation code runs unchanged over the network.

    `predict` sends the whole observation window (explicit history), so the result does not depend on
    which observations the server happened to see before. `predict_rtc` does real-time chunking on the
    server (`ExecutorConfig(mode="rtc")` in evaluation), when the server's metadata says it can.
    """

    def __init__(self, client: PolicyClient) -> None:
        from vlaforge.types import PolicySpec

        m = client.metadata
        self.client = client
        self.spec = PolicySpec(
            cameras={k: (int(v[0]), int(v[1])) for k, v in m["cameras"].items()},
            state_dim=int(m["state_dim"]),
            action_dim=int(m["action_dim"]),
            chunk=int(m["chunk"]),
            history=int(m["history"]),
            fps=float(m["fps"]),
        )

    def predict(self, observations: Any, **_: Any) -> Any:
        from vlaforge.types import ActionChunk

        obs = observations if isinstance(observations, list | tuple) else [observations]
        reply = self.client.infer(list(obs))
        actions = np.asarray(reply["actions"], dtype=np.float32)  # (H, A)
        return ActionChunk(actions, control_hz=self.spec.fps, info=_reply_info(reply))

    def predict_rtc(self, observations: Any, *, prefix: Any, weights: Any, **_: Any) -> Any:
        """RTC over the wire: (prefix (H, A), weights (H,) from `rtc_weights`) -> the message's
        ``"rtc": {"prefix": prefix[:P], "delay": d}`` with P = #weights > 0 and d = #weights == 1."""
        from vlaforge.types import ActionChunk

        if not self.client.metadata.get("rtc"):
            raise TypeError(
                "the server's policy cannot do real-time chunking (metadata 'rtc' is false); "
                "serve a flow or diffusion policy, or use executor mode 'receding'"
            )
        w = np.asarray(weights, dtype=np.float32)  # (H,)
        overlap, delay = int((w > 0).sum()), int((w >= 1).sum())
        obs = observations if isinstance(observations, list | tuple) else [observations]
        message = observation_to_message(list(obs))
        message["rtc"] = {"prefix": np.asarray(prefix, np.float32)[: max(overlap, 1)], "delay": delay}
        reply = self.client.infer(message)
        actions = np.asarray(reply["actions"], dtype=np.float32)  # (H, A)
        return ActionChunk(actions, control_hz=self.spec.fps, info={**_reply_info(reply), "rtc": True})


def _reply_info(reply: dict[str, Any]) -> dict[str, Any]:
    """The `ActionChunk.info` of a reply: server timing and the chunk's own fields (``decode_failed``,
    ``decode_error``, ``subtask``), so evaluation counts decode failures over the wire as in process."""
    info = {"server_timing": reply.get("server_timing")}
    info.update({k: reply[k] for k in ("decode_failed", "decode_error", "subtask") if k in reply})
    return info
