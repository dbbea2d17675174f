"""Malformed and adversarial messages for the server fuzz test (tests/serve) and benchmark (benchmarks/).

`adversarial_messages(n, seed)` yields (label, frame) pairs: random bytes, truncated msgpack, wrong dtypes
and shapes, huge declared shapes, NaNs, missing keys, wrong types, deep nesting, extension types, text
frames and (when `oversize_bytes` is given) frames above the server's limit. `drive(port, ...)` sends
them over one connection (reconnecting after the server closes it) and checks every answer.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from vlaforge.serve.protocol import pack, unpack


def _nd(data: bytes, dtype: Any, shape: Any) -> dict:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def _valid(g: np.random.Generator) -> dict[str, Any]:
    return {
        "images": {c: g.integers(0, 256, (16, 16, 3), dtype=np.uint8) for c in ("front", "wrist")},
        "state": g.normal(size=3).astype(np.float32),
        "instruction": "push the red block",
    }


def _mutations(g: np.random.Generator) -> list[tuple[str, Any]]:
    v = _valid(g)
    img = v["images"]["front"]
    huge = [int(x) for x in g.integers(1 << 20, 1 << 40, size=3)]
    return [
        ("random_bytes", os.urandom(int(g.integers(1, 2000)))),
        ("truncated", pack(v)[: int(g.integers(1, len(pack(v)) - 1))]),
        ("bitflip", _bitflip(pack(v), g)),
        ("text_frame", "{'state': [1, 2, 3]}"),
        ("not_a_map", pack([1, 2, 3])),
        ("scalar", pack(int(g.integers(-(2**31), 2**31)))),
        ("empty_map", pack({})),
        ("missing_state", pack({k: x for k, x in v.items() if k != "state"})),
        ("missing_images", pack({k: x for k, x in v.items() if k != "images"})),
        ("missing_instruction", pack({k: x for k, x in v.items() if k != "instruction"})),
        ("missing_camera", pack(v | {"images": {"front": img}})),
        ("extra_camera", pack(v | {"images": v["images"] | {"side": img}})),
        ("float_image", pack(v | {"images": {"front": img.astype(np.float32), "wrist": img}})),
        ("image_shape", pack(v | {"images": {"front": img[:8], "wrist": img}})),
        ("image_4d", pack(v | {"images": {"front": img[None].repeat(5, 0), "wrist": img}})),
        ("state_shape", pack(v | {"state": np.zeros(int(g.integers(4, 50)), np.float32)})),
        ("state_nan", pack(v | {"state": np.array([np.nan, 0, 0], np.float32)})),
        ("state_inf", pack(v | {"state": np.array([0, -np.inf, 0], np.float64)})),
        ("state_bool", pack(v | {"state": np.array([True, False, True])})),
        ("state_list", pack(v | {"state": [0.1, 0.2, 0.3]})),
        ("instruction_int", pack(v | {"instruction": 7})),
        ("object_dtype", msgpack.packb({"state": _nd(b"\0" * 24, "|O", [3])})),
        ("string_dtype", msgpack.packb({"state": _nd(b"\0" * 12, "<U1", [3])})),
        ("void_dtype", msgpack.packb({"state": _nd(b"\0" * 12, "V4", [3])})),
        ("bad_dtype_str", msgpack.packb({"state": _nd(b"\0" * 12, "float128x", [3])})),
        ("dtype_not_str", msgpack.packb({"state": _nd(b"\0" * 12, 5, [3])})),
        ("huge_shape", msgpack.packb({"state": _nd(b"\0" * 12, "<f4", huge)})),
        ("negative_shape", msgpack.packb({"state": _nd(b"\0" * 12, "<f4", [-3])})),
        ("shape_mismatch", msgpack.packb({"state": _nd(b"\0" * 11, "<f4", [3])})),
        ("shape_not_list", msgpack.packb({"state": _nd(b"\0" * 12, "<f4", "3")})),
        ("data_not_bytes", msgpack.packb({"state": _nd("abc", "<f4", [3])})),
        ("many_dims", msgpack.packb({"state": _nd(b"\0" * 4, "<f4", [1] * 40)})),
        ("deep_nesting", b"\x91" * 5000 + b"\xc0"),
        ("ext_type", msgpack.packb({"state": msgpack.ExtType(42, os.urandom(16))})),
        ("long_string", pack(v | {"instruction": "x" * 200_000})),
        ("wide_map", msgpack.packb({str(i): i for i in range(20_000)})),
        ("bad_control", pack({"control": "shutdown"})),
        ("bin_keys", msgpack.packb({b"\xff\xfe": 1, b"images": 2})),
        ("int_keys", msgpack.packb({1: 2, 3: 4}, strict_types=False)),
    ]


def _bitflip(data: bytes, g: np.random.Generator) -> bytes:
    b = bytearray(data)
    for i in g.integers(0, len(b), size=int(g.integers(1, 8))):
        b[i] ^= 1 << int(g.integers(0, 8))
    return bytes(b)


def adversarial_messages(
    n: int, seed: int = 0, oversize_bytes: int | None = None
) -> Iterator[tuple[str, Any]]:
    g = np.random.default_rng(seed)
    for i in range(n):
        if oversize_bytes is not None and i % 100 == 99:
            yield "oversized", os.urandom(oversize_bytes + 1)
            continue
        muts = _mutations(g)
        yield muts[int(g.integers(len(muts)))]


def drive(port: int, n: int, seed: int = 0, oversize_bytes: int | None = None) -> dict[str, Any]:
    """Send n adversarial frames; each must get an error reply (or actions) or a clean close."""
    url = f"ws://127.0.0.1:{port}"
    outcome: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    bad: list[str] = []

    def open_ws():
        ws = connect(url, proxy=None, compression=None, max_size=None)
        unpack(ws.recv())  # metadata
        return ws

    ws = open_ws()
    for label, frame in adversarial_messages(n, seed, oversize_bytes):
        labels[label] += 1
        try:
            ws.send(frame)
            reply = unpack(ws.recv(timeout=30))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            outcome[f"closed_{code}"] += 1
            if code not in (1009,):  # only an oversized frame may close the connection
                bad.append(f"{label}: closed with {code}")
            ws = open_ws()
            continue
        if isinstance(reply, dict) and "error" in reply:
            outcome["error_reply"] += 1
        elif isinstance(reply, dict) and "actions" in reply:
            outcome["served"] += 1  # a mutation that happens to be valid (e.g. a harmless bit flip)
        else:
            bad.append(f"{label}: unexpected reply {reply!r:.80}")
    g = np.random.default_rng(seed + 1)
    ws.send(pack(_valid(g)))
    final = unpack(ws.recv(timeout=30))
    ws.close()
    return {"outcome": dict(outcome), "labels": dict(labels), "bad": bad, "final_ok": "actions" in final}
