"""Tokens of a frozen image encoder, computed once per dataset frame and looked up by the frame's pixels.

A frozen encoder (`Lite0ImageEncoder(frozen=True)`: no gradient, eval-mode batch norm) is a fixed
function of the frame, so training needs its tokens only once per distinct frame, not once per sample
and epoch. `build_token_cache` encodes every distinct frame of a dataset's cameras once, in dataset
order and in fixed batches (the same run gives the same bytes), into ``tokens.npy`` (U, N, C) float32
and ``digests.npy`` (U, 16) on disk; `TokenCache` maps a frame's digest (BLAKE2b-128 of its uint8 pixels)
to its row. The encoder consults the cache for uint8 frames and encodes only the frames it lacks
(augmented frames, evaluation frames, zero frames of a missing camera).

The cached tokens equal the live encoder's up to float rounding: a convolution's result may depend on
the batch it ran in (~2e-5 of tokens that reach ~11 for Lite0 at 128 px, measured batch 1 vs 64).

Build safety: a build writes into ``tokens.partial.npy`` and records its progress every few batches, so
a killed build resumes where it stopped (with the same batches, hence the same bytes); an exclusive
file lock makes concurrent builders (DDP ranks, two runs on one dataset) wait for one another; a
cache whose manifest, shapes or sizes do not match is rebuilt with one warning line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE_VERSION = 1
DIGEST_BYTES = 16
BUILD_BATCH = 64  # frames per encoder call while building (fixed: the bytes depend on the batches)
PROGRESS_EVERY = 16  # batches between progress records of a build


def frame_digest(frame: np.ndarray) -> bytes:
    """BLAKE2b-128 of one uint8 (H, W, 3) frame's pixels and shape."""
    frame = np.ascontiguousarray(frame)
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    h.update(np.asarray(frame.shape, np.int64).tobytes())
    h.update(frame.data)
    return h.digest()


class TokenCache:
    """digest -> the encoder's tokens (N, C) of that frame; the union of one or more built stores.

    ``hits`` / ``misses`` count looked-up frames (the training summary reports them).
    """

    def __init__(self) -> None:
        self._index: dict[bytes, tuple[int, int]] = {}  # digest -> (store, row)
        self._stores: list[np.ndarray] = []
        self.hits = 0
        self.misses = 0
        self.token_shape: tuple[int, int] | None = None

    def add(self, digests: np.ndarray, tokens: np.ndarray) -> None:
        """digests (U, 16) uint8, tokens (U, N, C) float32 (a memmap is read lazily)."""
        if digests.ndim != 2 or digests.shape[1] != DIGEST_BYTES or len(digests) != len(tokens):
            raise ValueError(f"digests {digests.shape} do not match tokens {tokens.shape}")
        shape = tuple(tokens.shape[1:])
        if self.token_shape is not None and shape != self.token_shape:
            raise ValueError(f"tokens of shape {shape} cannot join a cache of {self.token_shape}")
        self.token_shape = shape  # type: ignore[assignment]
        store = len(self._stores)
        self._stores.append(tokens)
        for row, d in enumerate(digests):
            self._index.setdefault(d.tobytes(), (store, row))

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, frames: np.ndarray) -> tuple[list[int], np.ndarray | None]:
        """uint8 (B, H, W, 3) -> (rows of `frames` found, their tokens (K, N, C) float32 or None)."""
        found, parts = [], []
        for i, frame in enumerate(frames):
            where = self._index.get(frame_digest(frame))
            if where is not None:
                found.append(i)
                parts.append(where)
        self.hits += len(found)
        self.misses += len(frames) - len(found)
        if not found:
            return [], None
        out = np.empty((len(found), *self.token_shape), np.float32)  # type: ignore[misc]
        for k, (store, row) in enumerate(parts):
            out[k] = self._stores[store][row]
        return found, out


def encode_with_cache(
    cache: TokenCache, frames: torch.Tensor | np.ndarray, encode: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Tokens (B, N, C) of uint8 frames (B, H, W, 3) or one (H, W, 3): cached rows from `cache`, the rest
    from `encode` (on its device)."""
    x = torch.as_tensor(frames)
    if x.dim() == 3:
        x = x[None]
    found, cached = cache.lookup(x.detach().cpu().numpy())
    if len(found) == len(x):
        return torch.from_numpy(cached)
    if not found:
        return encode(x)
    have = set(found)
    missing = [i for i in range(len(x)) if i not in have]
    live = encode(x[missing])  # (M, N, C)
    out = live.new_empty((len(x), *live.shape[1:]))
    out[missing] = live
    out[found] = torch.from_numpy(cached).to(device=live.device, dtype=live.dtype)
    return out


def build_token_cache(
    encode: Callable[[torch.Tensor], torch.Tensor],
    cameras: Mapping[str, np.ndarray],
    directory: str | Path,
    fingerprint: Mapping[str, Any],
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode every distinct frame of `cameras` (name -> uint8 (T, H, W, 3), e.g. memmaps) once into
    `directory`, or reuse what a build with the same `fingerprint` left there. -> (digests, tokens memmap)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # as it reads back from the manifest (tuples become lists), so saved and current compare with ==
    fingerprint = json.loads(
        json.dumps({"version": CACHE_VERSION, **fingerprint, "cameras": sorted(cameras)})
    )
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = _load_complete(directory, fingerprint)
        if done is not None:
            return done
        return _build(encode, cameras, directory, fingerprint, progress)


def _load_complete(directory: Path, fingerprint: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return None
    problem = None
    try:
        saved = json.loads(manifest.read_text())
        if saved.get("fingerprint") != fingerprint:
            problem = "it was built for other frames or another encoder"
        else:
            digests = np.load(directory / "digests.npy")
            tokens = np.load(directory / "tokens.npy", mmap_mode="r")
            if digests.shape != (saved["unique"], DIGEST_BYTES) or tokens.shape[0] != saved["unique"]:
                problem = (
                    f"digests {digests.shape} / tokens {tokens.shape} do not hold {saved['unique']} frames"
                )
            elif tokens.dtype != np.float32 or list(tokens.shape[1:]) != saved["token_shape"]:
                problem = (
                    f"tokens are {tokens.dtype} {tokens.shape}, the manifest says {saved['token_shape']}"
                )
            else:
                return digests, tokens
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        problem = f"unreadable ({type(e).__name__}: {e})"
    warnings.warn(f"vlaforge token cache {directory}: {problem}; rebuilding it", stacklevel=3)
    manifest.unlink()
    return None


def _build(
    encode: Callable[[torch.Tensor], torch.Tensor],
    cameras: Mapping[str, np.ndarray],
    directory: Path,
    fingerprint: dict[str, Any],
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    # Distinct frames in dataset order (cameras sorted by name): duplicates (a still start) cost nothing.
    seen: dict[bytes, tuple[str, int]] = {}
    for name in sorted(cameras):
        for t, frame in enumerate(cameras[name]):
            seen.setdefault(frame_digest(frame), (name, t))
    order = list(seen.values())
    digests = np.frombuffer(b"".join(seen), np.uint8).reshape(len(seen), DIGEST_BYTES)
    with torch.no_grad():
        probe = encode(torch.from_numpy(np.array(cameras[order[0][0]][order[0][1]][None])))
    token_shape = list(probe.shape[1:])
    shape = (len(order), *token_shape)

    partial, state_path = directory / "tokens.partial.npy", directory / "partial.json"
    start = 0
    if partial.is_file() and state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
            tokens = np.load(partial, mmap_mode="r+")
            if state.get("fingerprint") == fingerprint and tokens.shape == shape:
                start = int(state["done"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            start = 0
    if start == 0:
        tokens = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    batches = range(start, len(order), BUILD_BATCH)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"caching tokens ({len(order)} distinct frames)", unit="batch",
                       initial=start // BUILD_BATCH, total=-(-len(order) // BUILD_BATCH))  # fmt: skip
    for k, lo in enumerate(batches):
        rows = order[lo : lo + BUILD_BATCH]
        frames = np.stack([cameras[name][t] for name, t in rows])  # (b, H, W, 3)
        with torch.no_grad():
            tokens[lo : lo + len(rows)] = encode(torch.from_numpy(frames)).float().cpu().numpy()
        if (k + 1) % PROGRESS_EVERY == 0:
            tokens.flush()
            _write_json(state_path, {"fingerprint": fingerprint, "done": lo + len(rows)})
    tokens.flush()
    del tokens
    np.save(directory / "digests.npy", digests)
    partial.replace(directory / "tokens.npy")
    state_path.unlink(missing_ok=True)
    _write_json(directory / "manifest.json",
                {"fingerprint": fingerprint, "unique": len(order), "token_shape": token_shape})  # fmt: skip
    return digests, np.load(directory / "tokens.npy", mmap_mode="r")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def encoder_fingerprint(module: torch.nn.Module, **settings: Any) -> dict[str, Any]:
    """What a cache of `module`'s tokens depends on: its class, weights (SHA-256), settings, torch's version."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"encoder": type(module).__name__, "weights_sha256": h.hexdigest(), **settings,
            "torch": torch.__version__}  # fmt: skip
