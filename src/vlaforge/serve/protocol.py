"""The wire protocol, server side: metadata, control messages and observation parsing.

The encoding itself (msgpack maps with numpy arrays, bounded and pickle-free decoding) lives in the
torch-free client package, `vlaforge_client.msgpack_numpy`, and is re-exported here. Every
failure is a `ProtocolError` whose message names the offending key, so the server can answer it
and keep serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vlaforge_client.msgpack_numpy import (
    ALLOWED_DTYPES,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_CONTAINER_LEN,
    MAX_NDIM,
    MAX_STR_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    observation_to_message,
    pack,
    unpack,
)

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_CONTAINER_LEN",
    "MAX_NDIM",
    "MAX_STR_BYTES",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "control_of",
    "error_message",
    "metadata_message",
    "observation_to_message",
    "pack",
    "parse_observation",
    "parse_rtc",
    "unpack",
]


def error_message(text: str, kind: str = "protocol") -> dict[str, Any]:
    """The reply to a request that could not be served; the connection stays open."""
    return {"error": text, "kind": kind}


def control_of(message: Any) -> str | None:
    """`{"control": "reset"}` and friends -> "reset"; None for an observation."""
    if isinstance(message, dict) and isinstance(message.get("control"), str):
        return message["control"]
    return None


# ----------------------------------------------------------------------------- observations
def metadata_message(spec: Any, *, recipe: str | None = None, **extra: Any) -> dict[str, Any]:
    """The map sent on connect: everything a client needs to build valid observations."""
    return {
        "protocol": PROTOCOL_VERSION,
        "recipe": recipe,
        "cameras": {name: [int(h), int(w)] for name, (h, w) in spec.cameras.items()},
        "image_format": "uint8 [height, width, 3] RGB",
        "state_dim": int(spec.state_dim),
        "action_dim": int(spec.action_dim),
        "chunk": int(spec.chunk),
        "history": int(spec.history),
        "fps": float(spec.fps),
        **extra,
    }


def _str_keys(d: Mapping, where: str) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(k, bytes):
            k = k.decode("utf-8", errors="replace")
        if not isinstance(k, str):
            raise ProtocolError(f"{where}: keys must be strings, got {type(k).__name__} {k!r:.40}")
        out[k] = v
    return out


def _split_flat_keys(msg: dict[str, Any], cameras: Any) -> tuple[dict[str, Any], Any, Any]:
    """Accept LeRobot ('observation.images.front', 'observation.state', 'task') and openpi-style
    ('observation/front', 'observation/state', 'prompt') flat keys besides our nested layout."""
    images: dict[str, Any] = {}
    state = instruction = None
    for key, value in msg.items():
        k = key.replace("/", ".")
        if k.startswith("observation.images."):
            images[k[len("observation.images.") :]] = value
        elif k == "observation.state":
            state = value
        elif k.startswith("observation.") and k[len("observation.") :] in cameras:
            images[k[len("observation.") :]] = value
    for key in ("instruction", "task", "prompt"):
        if isinstance(msg.get(key), str):
            instruction = msg[key]
            break
    return images, state, instruction


def parse_observation(message: Any, spec: Any) -> tuple[list[Any], bool]:
    """Check an observation message against the policy's spec and build Observations.

    Returns (observations oldest first, explicit_history). A single step has state (S,) and images
    (h, w, 3); a message may instead carry the whole history: state (T, S), images (T, h, w, 3).
    Images in channel-first (3, h, w) layout are transposed. Raises ProtocolError naming the key.
    """
    from vlaforge.types import Observation  # numpy-only module; imported here to keep this file standalone

    if not isinstance(message, dict):
        raise ProtocolError(f"an observation must be a msgpack map, got {type(message).__name__}")
    msg = _str_keys(message, "observation")
    cams = spec.cameras
    images = msg.get("images")
    state = msg.get("state")
    instruction = msg.get("instruction", msg.get("prompt", msg.get("task")))
    if images is None and state is None:
        images, state, instruction = _split_flat_keys(msg, cams)
    if not isinstance(images, dict):
        raise ProtocolError(f"'images' must be a map camera -> uint8 array, got {type(images).__name__}")
    images = _str_keys(images, "images")
    if not isinstance(instruction, str):
        raise ProtocolError(
            "missing 'instruction' (str); LeRobot-style 'task' and openpi-style 'prompt' are accepted too"
        )
    if state is None:
        raise ProtocolError(f"missing 'state': float32 array of shape ({spec.state_dim},)")
    if not isinstance(state, np.ndarray) or state.dtype.kind not in "fiu":
        raise ProtocolError(
            f"'state' must be a numeric array of shape ({spec.state_dim},), got {type(state).__name__}"
        )
    S = spec.state_dim
    if state.shape == (S,):
        steps = 1
    elif state.ndim == 2 and state.shape[1] == S and 1 <= state.shape[0] <= spec.history:
        steps = state.shape[0]
    else:
        raise ProtocolError(
            f"'state': expected shape ({S},) or (T, {S}) with T <= history={spec.history}, got {list(state.shape)}"
        )
    explicit = state.ndim == 2  # the client sent the whole history itself
    state = state.astype(np.float32).reshape(steps, S)  # (T, S)
    if not np.all(np.isfinite(state)):
        raise ProtocolError("'state' contains NaN or Inf")

    per_step: list[dict[str, np.ndarray]] = [{} for _ in range(steps)]
    unknown = sorted(set(images) - set(cams))
    if unknown:
        raise ProtocolError(f"unknown camera(s) {unknown}; the policy's cameras are {sorted(cams)}")
    for cam, (h, w) in cams.items():
        if cam not in images:
            raise ProtocolError(f"missing camera '{cam}': uint8 array of shape ({h}, {w}, 3)")
        img = images[cam]
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            got = img.dtype if isinstance(img, np.ndarray) else type(img).__name__
            raise ProtocolError(f"camera '{cam}': expected a uint8 array of shape ({h}, {w}, 3), got {got}")
        if img.ndim >= 3 and img.shape[-3:] == (3, h, w) and (h, w) != (3, 3):
            img = np.moveaxis(img, -3, -1)  # (..., 3, h, w) -> (..., h, w, 3)
        want = (h, w, 3) if not explicit else (steps, h, w, 3)
        if img.shape != want:
            raise ProtocolError(f"camera '{cam}': expected shape {list(want)}, got {list(img.shape)}")
        img = np.ascontiguousarray(img).reshape(steps, h, w, 3)  # (T, h, w, 3)
        for t in range(steps):
            per_step[t][cam] = img[t]
    obs = [Observation(images=per_step[t], state=state[t], instruction=instruction) for t in range(steps)]
    return obs, explicit


def parse_rtc(message: dict[str, Any], spec: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The optional real-time-chunking request of an observation message -> (prefix (H, A), weights (H,)).

    ``"rtc": {"prefix": (P, A) float array, "delay": d}``: prefix[i] is the action the robot will
    execute (or already executed) at the new chunk's tick i according to its current plan, for the P
    ticks the plan still covers (1 <= P <= H); the first d of them (0 <= d <= P) are due before the reply
    can arrive and are frozen, the rest of the overlap is guided with decaying weights, and ticks P..H-1
    are free (`vlaforge.runtime.rtc.rtc_weights(H, d, H - P)`). Returns None when the key is absent.
    """
    from vlaforge.runtime.rtc import aligned_prefix, rtc_weights

    raw = message.get("rtc", message.get(b"rtc"))
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError(
            f"'rtc' must be a map {{'prefix': (P, A) array, 'delay': int}}, got {type(raw).__name__}"
        )
    raw = _str_keys(raw, "rtc")
    prefix, delay = raw.get("prefix"), raw.get("delay")
    H, A = int(spec.chunk), int(spec.action_dim)
    if not isinstance(prefix, np.ndarray) or prefix.dtype.kind not in "fiu":
        raise ProtocolError(f"'rtc.prefix' must be a numeric array of shape (P, {A}) with 1 <= P <= {H}")
    if prefix.ndim != 2 or prefix.shape[1] != A or not 1 <= prefix.shape[0] <= H:
        raise ProtocolError(
            f"'rtc.prefix': expected shape (P, {A}) with 1 <= P <= {H}, got {list(prefix.shape)}"
        )
    prefix = prefix.astype(np.float32)
    if not np.all(np.isfinite(prefix)):
        raise ProtocolError("'rtc.prefix' contains NaN or Inf")
    P = prefix.shape[0]
    if isinstance(delay, bool) or not isinstance(delay, int | np.integer) or not 0 <= delay <= P:
        raise ProtocolError(
            f"'rtc.delay' must be an int in [0, P={P}] (ticks until the reply arrives), got {delay!r:.40}"
        )
    return aligned_prefix(prefix, 0, H), rtc_weights(H, int(delay), H - P)
