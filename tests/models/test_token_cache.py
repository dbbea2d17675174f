"""Cached tokens of a frozen image tower (models/vision/token_cache.py): equal to the live tower's, built
once per distinct frame, resumed after a kill, rebuilt when damaged or stale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlaforge.models.vision import Lite0ImageEncoder
from vlaforge.models.vision import token_cache as tc


def _random_tower(seed: int, **kw) -> Lite0ImageEncoder:
    """Random weights scaled so that the tokens are O(1) (PyTorch's default init fades to ~1e-9)."""
    torch.manual_seed(seed)
    enc = Lite0ImageEncoder(64, weights=False, **kw)  # 4 tokens x 320
    with torch.no_grad():
        for m in enc.net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
    return enc


@pytest.fixture(scope="module")
def tower() -> Lite0ImageEncoder:
    return _random_tower(0)


def _cameras(seed: int = 0, n: int = 10) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    front = g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    front[1] = front[0]  # a repeated frame (a still start) is encoded once
    return {"front": front, "wrist": g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)}


def _build(tower, cameras, tmp_path, **fp):
    return tc.build_token_cache(tower._encode, cameras, tmp_path / "c", {**tower.cache_fingerprint(), **fp})


def test_cached_tokens_equal_the_live_tower(tower, tmp_path):
    cameras = _cameras()
    digests, tokens = _build(tower, cameras, tmp_path)
    assert tokens.shape == (19, 4, 320) and digests.shape == (19, 16)  # 20 frames, one repeated
    cache = tc.TokenCache()
    cache.add(digests, tokens)
    frames = torch.from_numpy(np.concatenate([cameras["wrist"][3:7], cameras["front"][:3]]))
    with torch.no_grad():
        live = tower._encode(frames)
        tower.token_cache = cache
        try:
            cached = tower(frames)
        finally:
            tower.token_cache = None
    assert cache.hits == 7 and cache.misses == 0
    assert cached.dtype == torch.float32 and cached.shape == live.shape
    torch.testing.assert_close(cached, live, atol=1e-4, rtol=1e-4)  # batch composition: rounding only
    assert (cached[0] - cached[1]).abs().max() > 0.1  # different frames, different tokens


def test_unknown_frames_are_encoded_live(tower, tmp_path):
    cache = tc.TokenCache()
    cache.add(*_build(tower, _cameras(), tmp_path))
    known = torch.from_numpy(_cameras()["front"][2:4])
    unknown = torch.from_numpy(_cameras(seed=7)["front"][:2])
    frames = torch.cat([unknown[:1], known[:1], unknown[1:], known[1:]])
    with torch.no_grad():
        live = tower._encode(frames)
        tower.token_cache = cache
        try:
            out = tower(frames)
            floats = tower(frames.movedim(-1, 1).float() / 255)  # augmented frames: never looked up
        finally:
            tower.token_cache = None
    assert (cache.hits, cache.misses) == (2, 2)
    torch.testing.assert_close(out, live, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(floats, live, atol=1e-4, rtol=1e-4)
    assert (cache.hits, cache.misses) == (2, 2)
    tower.token_cache = cache
    try:
        with torch.no_grad():
            one = tower(known[0])  # a single (H, W, 3) frame: one lookup
    finally:
        tower.token_cache = None
    assert one.shape == (1, 4, 320) and (cache.hits, cache.misses) == (3, 2)


def test_a_trainable_tower_ignores_a_cache(tmp_path):
    trainable = _random_tower(0, frozen=False)
    cache = tc.TokenCache()
    cache.add(*_build(trainable, _cameras(), tmp_path))
    trainable.token_cache = cache
    trainable(torch.from_numpy(_cameras()["front"][:2]))
    assert cache.hits == cache.misses == 0


def test_a_killed_build_resumes_to_the_same_bytes(tower, tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "BUILD_BATCH", 4)
    monkeypatch.setattr(tc, "PROGRESS_EVERY", 1)
    cameras = _cameras(n=12)
    _, whole = tc.build_token_cache(tower._encode, cameras, tmp_path / "whole", {"k": 1})

    calls = []

    def dies_after_three(x):
        calls.append(len(x))
        if len(calls) == 4:  # the probe + 2 batches done, killed in the third
            raise KeyboardInterrupt
        return tower._encode(x)

    with pytest.raises(KeyboardInterrupt):
        tc.build_token_cache(dies_after_three, cameras, tmp_path / "killed", {"k": 1})
    assert not (tmp_path / "killed" / "manifest.json").exists()
    assert json.loads((tmp_path / "killed" / "partial.json").read_text())["done"] == 8

    resumed_calls = []

    def counting(x):
        resumed_calls.append(len(x))
        return tower._encode(x)

    _, resumed = tc.build_token_cache(counting, cameras, tmp_path / "killed", {"k": 1})
    assert sum(resumed_calls) == 1 + len(whole) - 8  # the probe, then only what was left
    np.testing.assert_array_equal(resumed, whole)
    assert not (tmp_path / "killed" / "partial.json").exists()


def test_a_damaged_or_stale_cache_is_rebuilt(tower, tmp_path):
    cameras = _cameras()
    _, first = _build(tower, cameras, tmp_path)
    first = np.array(first)
    again_calls = []

    def counting(x):
        again_calls.append(len(x))
        return tower._encode(x)

    fp = tower.cache_fingerprint()
    tc.build_token_cache(counting, cameras, tmp_path / "c", fp)
    assert again_calls == []  # complete and matching: read, not encoded again

    path = tmp_path / "c" / "tokens.npy"
    path.write_bytes(path.read_bytes()[:-1000])  # truncated
    with pytest.warns(UserWarning, match=r"token cache .*rebuilding it"):
        _, rebuilt = tc.build_token_cache(counting, cameras, tmp_path / "c", fp)
    np.testing.assert_array_equal(rebuilt, first)

    (tmp_path / "c" / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        tc.build_token_cache(tower._encode, cameras, tmp_path / "c", fp)

    with pytest.warns(
        UserWarning, match="other frames or another encoder"
    ):  # the frames' fingerprint changed
        _, other = tc.build_token_cache(tower._encode, _cameras(seed=3), tmp_path / "c", {**fp, "frames": 2})
    assert not np.array_equal(np.asarray(other[:5]), first[:5])


def test_the_fingerprint_follows_the_weights(tower):
    other = _random_tower(1)
    assert tower.cache_fingerprint() == tower.cache_fingerprint()
    assert tower.cache_fingerprint()["weights_sha256"] != other.cache_fingerprint()["weights_sha256"]
    assert Lite0ImageEncoder(32, weights=False).cache_fingerprint()["image_size"] == 32
