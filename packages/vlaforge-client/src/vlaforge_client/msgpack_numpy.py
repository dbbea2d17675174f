"""The wire encoding: msgpack messages with numpy arrays, as openpi clients speak it.

An array travels as a msgpack map ``{"__ndarray__": True, "data": <bytes>, "dtype": "<f4", "shape": [H, A]}``
(openpi's ``msgpack_numpy`` layout; openpi writes the keys as msgpack *bin* strings, so both bin and str keys
are read, and arrays are written with bin keys so that an unmodified openpi client decodes them). A numpy
scalar travels as ``{"__npgeneric__": True, "data": <number>, "dtype": "<f8"}``.

Unlike pickle-based servers, decoding never builds arbitrary objects: only a whitelist of numeric dtypes is
accepted, the declared shape must match the byte length exactly, and every size is bounded before any
memory is allocated (message bytes, strings, containers, array dimensions). Every failure is a
`ProtocolError` whose message names the offending key, so the server can answer it and keep serving.

This module needs only numpy and msgpack (no torch): the server (`vlaforge.serve.protocol`) uses it too.
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
