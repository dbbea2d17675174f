"""FAST action tokenizer: DCT, quantization bound, BPE fit / save / load, failed decodes, compression."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlaforge.policies.pi0.fast_tokenizer import FastDecodeError, FastTokenizer, dct, idct

H, A = 16, 3
# Robot-unit statistics with different ranges and offsets per dimension, so normalization matters.
Q01 = np.array([-0.2, 1.0, -5.0])
Q99 = np.array([0.2, 3.0, 5.0])


def smooth_chunks(n: int, seed: int, horizon: int = H, dims: int = A) -> np.ndarray:
    """(n, H, A) smooth trajectories in normalized units: a few low-frequency sinusoids + a ramp."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, horizon)[None, :, None]  # (1, H, 1)
    amp = rng.uniform(-0.4, 0.4, (n, 1, dims, 3))
    freq = rng.uniform(0.2, 1.5, (n, 1, dims, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, dims, 3))
    waves = (amp * np.sin(2 * np.pi * freq * t[..., None] + phase)).sum(-1)  # (n, H, A)
    ramp = rng.uniform(-0.3, 0.3, (n, 1, dims)) * t
    return np.clip(waves + ramp, -1.0, 1.0)


def to_robot(x: np.ndarray) -> np.ndarray:
    """Normalized [-1, 1] -> robot units under Q01 / Q99."""
    return (x + 1.0) / 2.0 * (Q99 - Q01) + Q01


@pytest.fixture(scope="module")
def fitted() -> FastTokenizer:
    chunks = to_robot(smooth_chunks(300, seed=0))
    return FastTokenizer.fit(chunks, vocab_size=400, scale=10.0, stats={"q01": Q01, "q99": Q99})


def test_dct_is_orthonormal_dct2() -> None:
    x = np.random.default_rng(1).normal(size=(5, H, A))  # (N, H, A)
    k, t = np.arange(H)[:, None], np.arange(H)[None, :]
    basis = np.sqrt(2.0 / H) * np.cos(np.pi * (2 * t + 1) * k / (2 * H))  # (H, H) DCT-II rows
    basis[0] /= np.sqrt(2.0)
    np.testing.assert_allclose(basis @ basis.T, np.eye(H), atol=1e-12)
    np.testing.assert_allclose(dct(x), np.einsum("kt,nta->nka", basis, x), atol=1e-10)  # along time, per dim
    np.testing.assert_allclose(idct(dct(x)), x, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(dct(x), axis=1), np.linalg.norm(x, axis=1), rtol=1e-10)


@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_round_trip_error_is_bounded_by_the_scale(scale: float) -> None:
    train = to_robot(smooth_chunks(300, seed=0))
    tok = FastTokenizer.fit(train, vocab_size=400, scale=scale, stats={"q01": Q01, "q99": Q99})
    held_out = smooth_chunks(50, seed=7)  # (N, H, A) normalized
    dec = tok.decode_batch(tok.encode_batch(to_robot(held_out)))
    assert dec.valid.all() and tok.failed_count == 0
    err = np.abs(dec.normalized - held_out)  # (N, H, A)
    # Each coefficient is off by <= 0.5 / scale; the DCT is orthonormal, so every dimension's error has
    # an L2 norm (over time) of at most 0.5 · sqrt(H) / scale, which bounds each value's error too.
    per_dim_l2 = np.sqrt((err**2).sum(axis=1))  # (N, A)
    assert per_dim_l2.max() <= 0.5 * math.sqrt(H) / scale + 1e-6
    assert err.mean() <= 0.5 / scale  # rounding errors mostly cancel: far below the worst case
    # In robot units the same error is scaled by each dimension's half range (q99 - q01) / 2.
    robot_err = np.abs(dec.actions - to_robot(held_out)).max(axis=(0, 1))  # (A,)
    assert (robot_err <= 0.5 * math.sqrt(H) / scale * (Q99 - Q01) / 2 + 1e-5).all()


def test_smooth_chunks_compress(fitted: FastTokenizer) -> None:
    ids = fitted.encode_batch(to_robot(smooth_chunks(50, seed=3)))
    lengths = np.array([len(i) for i in ids])
    assert lengths.max() < H * A  # 256-bin tokenization needs H·A tokens for every chunk
    assert lengths.mean() <= H * A / 3


def test_coefficients_are_flattened_lowest_frequency_first(fitted: FastTokenizer) -> None:
    chunk = to_robot(smooth_chunks(1, seed=4))[0]  # (H, A)
    q = fitted.quantize(fitted.normalize(chunk))  # (H, A)
    text = fitted.bpe.decode(fitted.encode(chunk))
    coefficients = np.array([ord(c) for c in text]) + fitted.min_token  # (H·A,)
    np.testing.assert_array_equal(coefficients[:A], q[0])  # the DC term of every dimension first
    np.testing.assert_array_equal(coefficients[A : 2 * A], q[1])
    np.testing.assert_array_equal(coefficients.reshape(H, A), q)


def test_fit_is_deterministic_and_save_load_gives_identical_ids(fitted: FastTokenizer, tmp_path) -> None:
    chunks = to_robot(smooth_chunks(300, seed=0))
    again = FastTokenizer.fit(chunks, vocab_size=400, scale=10.0, stats={"q01": Q01, "q99": Q99})
    assert again.bpe.to_str() == fitted.bpe.to_str()

    fitted.save(tmp_path / "fast")
    assert sorted(p.name for p in (tmp_path / "fast").iterdir()) == ["fast_config.json", "tokenizer.json"]
    loaded = FastTokenizer.load(tmp_path / "fast")
    test = to_robot(smooth_chunks(20, seed=5))
    assert loaded.encode_batch(test) == fitted.encode_batch(test)
    assert (loaded.horizon, loaded.action_dim, loaded.scale, loaded.min_token) == (
        fitted.horizon,
        fitted.action_dim,
        fitted.scale,
        fitted.min_token,
    )
    np.testing.assert_array_equal(
        loaded.decode(fitted.encode(test[0])).actions, fitted.decode(fitted.encode(test[0])).actions
    )


def test_corrupted_ids_decode_to_zeros_and_are_counted(fitted: FastTokenizer) -> None:
    fitted.failed_count = 0
    ids = fitted.encode(to_robot(smooth_chunks(1, seed=6))[0])
    assert len(ids) >= 2
    corrupted = {
        "dropped token": ids[:-1],
        "extra token": ids + ids[-1:],
        "id outside the vocabulary": ids[:-1] + [fitted.vocab_size + 5],
        "empty": [],
    }
    for name, bad in corrupted.items():
        out = fitted.decode(bad)
        assert not out.valid and out.error, name
        np.testing.assert_array_equal(out.normalized, np.zeros((H, A)))
        # zeros in normalized units are the q01/q99 midpoint in robot units
        np.testing.assert_allclose(out.actions, np.broadcast_to((Q01 + Q99) / 2, (H, A)), atol=1e-6)
        with pytest.raises(FastDecodeError):
            fitted.decode(bad, strict=True)
    assert fitted.failed_count == len(corrupted)
    batch = fitted.decode_batch([ids, ids[:-1]])
    assert batch.valid.tolist() == [True, False] and batch.actions.shape == (2, H, A)
    assert batch.errors[0] is None and "coefficients" in batch.errors[1]


def test_mask_leaves_dimensions_unnormalized_but_clipped() -> None:
    chunks = smooth_chunks(100, seed=8)
    chunks[..., 0] = chunks[..., 0] * 3.0 + 4.0  # robot units around 4
    mask = [True, False, False]
    stats = {"q01": [1.0, -9.0, -9.0], "q99": [7.0, 9.0, 9.0]}  # ignored for the masked-out dims
    tok = FastTokenizer.fit(chunks, vocab_size=300, stats=stats, mask=mask)
    norm = tok.normalize(chunks)
    np.testing.assert_allclose(norm[..., 0], np.clip((chunks[..., 0] - 4.0) / 3.0, -1, 1), atol=1e-6)
    np.testing.assert_array_equal(norm[..., 1:], chunks[..., 1:])
    big = chunks[0].copy()
    big[:, 1] = 5.0  # outside [-1, 1] on an unnormalized dimension: clipped, as the 256-bin tokenizer does
    assert (tok.normalize(big)[:, 1] == 1.0).all()
    out = tok.decode(tok.encode(chunks[0]))
    assert out.valid and np.abs(out.actions[:, 1:] - chunks[0][:, 1:]).max() <= 0.5 * math.sqrt(H) / 10


def test_coefficients_below_the_fitted_range_are_clipped_and_counted() -> None:
    positive = np.abs(smooth_chunks(100, seed=9))  # normalized input, no statistics
    tok = FastTokenizer.fit(positive, vocab_size=300)
    assert tok.clipped_count == 0
    out = tok.decode(tok.encode(-np.ones((H, A))))  # DC coefficient -40: below anything seen in fitting
    assert tok.clipped_count > 0 and out.valid


def test_bad_input_is_rejected(fitted: FastTokenizer) -> None:
    with pytest.raises(ValueError, match=r"H=16 steps and A=3"):
        fitted.encode(np.zeros((H + 1, A)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.encode(np.full((H, A), np.nan))
    with pytest.raises(ValueError, match="q01"):
        FastTokenizer.fit(smooth_chunks(4, seed=0), stats={"q99": Q99})
    with pytest.raises(ValueError, match="256"):
        FastTokenizer.fit(smooth_chunks(4, seed=0), vocab_size=100)
    with pytest.raises(ValueError, match=r"\(N, H, A\)"):
        FastTokenizer.fit(np.zeros((H, A)))
