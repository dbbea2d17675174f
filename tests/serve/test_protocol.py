import pickle

import msgpack
import numpy as np
import pytest

from tests.serve.serve_fakes import make_obs, obs_message
from vlaforge.serve.protocol import (
    ProtocolError,
    metadata_message,
    observation_to_message,
    pack,
    parse_observation,
    unpack,
)
from vlaforge.types import PolicySpec

SPEC = PolicySpec(
    cameras={"front": (16, 16), "wrist": (16, 16)}, state_dim=3, action_dim=2, chunk=4, history=2
)


def _array_map(data: bytes, dtype: str, shape: list) -> bytes:
    return msgpack.packb({"x": {"__ndarray__": True, "data": data, "dtype": dtype, "shape": shape}})


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64", "float16", "float32", "float64", "bool", ">f4"])
def test_array_round_trip_is_exact(dtype):
    a = (np.random.default_rng(0).normal(size=(3, 4, 5)) * 50).astype(dtype)
    msg = {"a": a, "nested": [{"b": a[0]}], "s": "hi", "n": np.float32(1.5)}
    out = unpack(pack(msg))
    assert out["a"].dtype == a.dtype.newbyteorder("=") and out["a"].shape == a.shape
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["nested"][0]["b"], a[0])
    assert out["n"] == np.float32(1.5) and out["s"] == "hi"
    out["a"][...] = 0  # decoded arrays are writable copies


def test_openpi_encoded_arrays_decode_and_ours_use_openpi_layout():
    """openpi's msgpack_numpy writes bin keys (b'__ndarray__') and dtype.str; we read and write that."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    openpi = msgpack.packb(
        {"a": {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": a.shape}}
    )
    np.testing.assert_array_equal(unpack(openpi)["a"], a)
    raw = msgpack.unpackb(pack({"a": a}), strict_map_key=False)["a"]
    assert raw[b"__ndarray__"] is True and raw[b"dtype"] == "<f4" and raw[b"shape"] == [2, 3]


def test_rejects_pickle_object_dtypes_and_extensions():
    with pytest.raises(ProtocolError, match="msgpack"):
        unpack(pickle.dumps({"a": np.zeros(3)}))
    for dtype in ("O", "|O", "V8", "<U4", "S3", "c16", "M8[s]"):
        with pytest.raises(ProtocolError, match="dtype"):
            unpack(_array_map(b"\0" * 16, dtype, [1]))
    with pytest.raises(ProtocolError, match="cannot send"):
        pack({"a": np.array([object()])})
    with pytest.raises(ProtocolError, match="ext"):
        unpack(msgpack.packb(msgpack.ExtType(5, b"xx")))


def test_rejects_shape_mismatch_and_huge_shapes_before_allocating():
    with pytest.raises(ProtocolError, match="needs 16 bytes, data has 12"):
        unpack(_array_map(b"\0" * 12, "<f4", [4]))
    with pytest.raises(ProtocolError, match="limit"):
        unpack(_array_map(b"\0" * 4, "<f4", [10**9, 10**9, 10**9]))
    with pytest.raises(ProtocolError, match="non-negative"):
        unpack(_array_map(b"", "<f4", [-1]))
    with pytest.raises(ProtocolError, match="at most"):
        unpack(_array_map(b"\0", "|u1", [1] * 20))


def test_rejects_oversized_text_and_truncated_messages():
    big = pack({"a": np.zeros(2000, np.uint8)})
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        unpack(big, max_bytes=1000)
    with pytest.raises(ProtocolError, match="not a valid msgpack"):
        unpack(big[:-10])
    with pytest.raises(ProtocolError, match="binary"):
        unpack("a text frame")


def test_parse_our_layout_and_metadata():
    obs = make_obs(1)
    (parsed,), explicit = parse_observation(unpack(pack(obs_message(obs))), SPEC)
    assert not explicit and parsed.instruction == obs.instruction
    np.testing.assert_array_equal(parsed.images["front"], obs.images["front"])
    meta = metadata_message(SPEC, recipe="octo-tiny")
    assert (
        meta["cameras"] == {"front": [16, 16], "wrist": [16, 16]}
        and meta["chunk"] == 4
        and meta["history"] == 2
    )


def test_parse_lerobot_and_openpi_flat_keys_and_channel_first():
    obs = make_obs(2)
    lerobot = {f"observation.images.{c}": im for c, im in obs.images.items()}
    lerobot |= {"observation.state": obs.state.astype(np.float64), "task": obs.instruction}
    openpi = {
        "observation/front": obs.images["front"].transpose(2, 0, 1),
        "observation/wrist": obs.images["wrist"],
    }
    openpi |= {"observation/state": obs.state, "prompt": obs.instruction}
    for msg in (lerobot, openpi):
        (parsed,), _ = parse_observation(unpack(pack(msg)), SPEC)
        np.testing.assert_array_equal(parsed.images["front"], obs.images["front"])
        np.testing.assert_allclose(parsed.state, obs.state)
        assert parsed.state.dtype == np.float32 and parsed.instruction == obs.instruction


def test_parse_explicit_history():
    obs = [make_obs(3), make_obs(4)]
    parsed, explicit = parse_observation(unpack(pack(observation_to_message(obs))), SPEC)
    assert explicit and len(parsed) == 2
    np.testing.assert_array_equal(parsed[0].images["wrist"], obs[0].images["wrist"])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m["images"].pop("wrist"), "missing camera 'wrist'"),
        (lambda m: m["images"].update(side=np.zeros((16, 16, 3), np.uint8)), "unknown camera"),
        (
            lambda m: m["images"].update(front=np.zeros((16, 16, 3), np.float32)),
            "camera 'front': expected a uint8",
        ),
        (
            lambda m: m["images"].update(front=np.zeros((8, 16, 3), np.uint8)),
            r"camera 'front': expected shape \[16, 16, 3\]",
        ),
        (lambda m: m.update(state=np.zeros(5, np.float32)), "'state': expected shape"),
        (lambda m: m.update(state=np.array([1.0, np.nan, 0.0])), "NaN"),
        (lambda m: m.update(state=np.zeros((3, 3), np.float32)), "T <= history=2"),
        (lambda m: m.pop("instruction"), "missing 'instruction'"),
        (lambda m: m.pop("state"), "missing 'state'"),
        (lambda m: m.update(images=[1, 2]), "'images' must be a map"),
    ],
)
def test_parse_errors_name_the_key(change, match):
    msg = obs_message(make_obs(5))
    msg["images"] = dict(msg["images"])
    change(msg)
    with pytest.raises(ProtocolError, match=match):
        parse_observation(unpack(pack(msg)), SPEC)
