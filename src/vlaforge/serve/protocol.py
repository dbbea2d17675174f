"""The wire protocol: msgpack messages with numpy arrays, as openpi clients speak it.

An array travels as a msgpack map ``{"__ndarray__": True, "data": <bytes>, "dtype": "<f4", "shape": [H, A]}``
(openpi's ``msgpack_numpy`` layout; openpi writes the keys as msgpack *bin* strings, so both bin and str keys
are read, and arrays are written with bin keys so that an unmodified openpi client decodes them). A numpy
scalar travels as ``{"__npgeneric__": True, "data": <number>, "dtype": "<f8"}``.

Unlike pickle-based servers, decoding never builds arbitrary objects: only a whitelist of numeric dtypes is
accepted, the declared shape must match the byte length exactly, and every size is bounded before any
memory is allocated (message bytes, strings, containers, array dimensions). Every failure is a
`ProtocolError` whose message names the offending key, so the server can answer it and keep serving.

This module needs only numpy and msgpack (no torch): it is shared by the server and the light client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = "vlaforge-msgpack/1"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # 16 MiB: a few 224x224 cameras x history fit many times over
MAX_NDIM = 8
MAX_CONTAINER_LEN = 10_000  # elements of one msgpack list / entries of one map
MAX_STR_BYTES = 64 * 1024  # an instruction is a sentence, not a book

# numpy dtype names that may cross the wire; everything else (object, void/structured, strings,
# complex, datetimes) is refused.
ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
    + ["float16", "float32", "float64"]
)

_ND, _NG = "__ndarray__", "__npgeneric__"
_ND_B, _NG_B = _ND.encode(), _NG.encode()


class ProtocolError(ValueError):
    """A message that cannot be decoded or does not follow the protocol; the text names the key."""


# ----------------------------------------------------------------------------- arrays
def _encode(obj: Any) -> Any:
    """msgpack `default` hook: numpy arrays and scalars -> tagged maps (openpi layout, bin keys)."""
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.name not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"cannot send numpy dtype {obj.dtype} (allowed: {sorted(ALLOWED_DTYPES)}); convert it first"
            )
        if isinstance(obj, np.generic):
            return {_NG_B: True, b"data": obj.item(), b"dtype": obj.dtype.str}
        arr = np.ascontiguousarray(obj)
        return {_ND_B: True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    raise TypeError(
        f"cannot serialise {type(obj).__name__} (send dicts, lists, str, numbers and numpy arrays)"
    )


def _field(obj: Mapping, name: str) -> Any:
    """Read a field written either with a str key (ours) or a bin key (openpi)."""
    if name in obj:
        return obj[name]
    return obj.get(name.encode())


def _parse_dtype(raw: Any, where: str) -> np.dtype:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if not isinstance(raw, str) or len(raw) > 16:
        raise ProtocolError(
            f"{where}: 'dtype' must be a short string like '<f4' or 'float32', got {raw!r:.40}"
        )
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError):
        raise ProtocolError(f"{where}: unknown dtype {raw!r}") from None
    if dtype.name not in ALLOWED_DTYPES:
        raise ProtocolError(f"{where}: dtype {raw!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    return dtype


def _decode_array(obj: Mapping, max_array_bytes: int) -> np.ndarray:
    where = "array"
    data, shape = _field(obj, "data"), _field(obj, "shape")
    dtype = _parse_dtype(_field(obj, "dtype"), where)
    if not isinstance(data, bytes):
        raise ProtocolError(f"{where}: 'data' must be msgpack bin bytes, got {type(data).__name__}")
    if not isinstance(shape, list | tuple) or len(shape) > MAX_NDIM:
        raise ProtocolError(f"{where}: 'shape' must be a list of at most {MAX_NDIM} ints, got {shape!r:.60}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: 'shape' entries must be non-negative ints, got {shape!r:.60}")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a huge declared shape cannot overflow
    if nbytes > max_array_bytes:
        raise ProtocolError(f"{where}: declared shape {shape} needs {nbytes} bytes (limit {max_array_bytes})")
    if nbytes != len(data):
        raise ProtocolError(
            f"{where}: declared shape {list(shape)} x {dtype.name} needs {nbytes} bytes, data has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def _decode_scalar(obj: Mapping) -> np.generic:
    dtype = _parse_dtype(_field(obj, "dtype"), "scalar")
    value = _field(obj, "data")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"scalar: 'data' must be a number, got {type(value).__name__}")
    try:
        return dtype.type(value)
    except (OverflowError, ValueError):
        raise ProtocolError(f"scalar: {value!r} does not fit dtype {dtype.name}") from None


# ----------------------------------------------------------------------------- messages
def pack(obj: Any) -> bytes:
    """Serialise a message (dicts, lists, str, numbers, numpy arrays) to msgpack bytes."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpack(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """Decode one message; raises ProtocolError for anything malformed, oversized or not allowed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(
            f"expected a binary msgpack frame, got {type(data).__name__} (send bytes, not text)"
        )
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes")

    def hook(obj: dict) -> Any:
        if _field(obj, _ND) is True:
            return _decode_array(obj, max_bytes)
        if _field(obj, _NG) is True:
            return _decode_scalar(obj)
        return obj

    def no_ext(code: int, _data: bytes) -> Any:
        raise ProtocolError(f"msgpack extension type {code} is not allowed")

    try:
        return msgpack.unpackb(
            data,
            object_hook=hook,
            ext_hook=no_ext,
            raw=False,
            strict_map_key=False,  # openpi's array tags are bin keys
            max_bin_len=max_bytes,
            max_str_len=MAX_STR_BYTES,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("message is nested too deeply") from None
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError(f"not a valid msgpack message: {type(e).__name__}: {e}"[:300]) from None


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


def observation_to_message(obs: Any) -> dict[str, Any]:
    """An `Observation` (or a list of them, oldest first = explicit history) -> our message layout."""
    if isinstance(obs, list | tuple):
        if not obs:
            raise ValueError("observation_to_message: empty observation list")
        return {
            "images": {cam: np.stack([o.images[cam] for o in obs]) for cam in obs[-1].images},  # (T, h, w, 3)
            "state": np.stack([np.asarray(o.state, np.float32) for o in obs]),  # (T, S)
            "instruction": obs[-1].instruction,
        }
    return {
        "images": dict(obs.images),
        "state": np.asarray(obs.state, np.float32),
        "instruction": obs.instruction,
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
