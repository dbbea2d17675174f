"""Dataset: random access to training samples of a LeRobot dataset (v3.0 or v2.1).

    ds = Dataset("data/pick", history=2, chunk=4)
    item = ds[123]
    item["observation.images.corner"]         # uint8 (T, H, W, 3)   ((H, W, 3) when history == 1)
    item["observation.state"]                 # float32 (T, S)       ((S,) when history == 1)
    item["action"]                            # float32 (H, A)       ((A,) when chunk == 1)
    item["action_is_pad"]                     # bool (H,) True where t+k ran past the episode end
    item["observation.state_is_pad"]          # bool (T,) True where t-k ran before the episode start
    item["task"], item["index"], item["episode_index"], item["frame_index"], item["task_index"],
    item["timestamp"]
    item["subtask"], item["subtask_index"]    # only in datasets with subtask labels (str at t, int64 ())

Windows: keys starting with "action" use the chunk window t..t+H-1, observation keys (images
and "observation.*") the history window t-T+1..t; other features are read at t only. Pad masks
are always shaped like their window (T,) or (H,), even when the value itself is squeezed.

Tabular columns are loaded once into numpy (a few MB even for large datasets); video frames are
decoded on demand (video.FrameReader), or read from a decoded-frame cache built once by
`cache_frames()` (uint8 .npy memmaps shared by all DataLoader workers through the page cache).
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.data.errors import DatasetError, DatasetIndexError
from vlaforge.data.format import DEFAULT_FEATURES, SUBTASK_INDEX, is_visual
from vlaforge.data.meta import DatasetMeta, EpisodeRecord, load_meta
from vlaforge.data.sampler import WindowSampler
from vlaforge.data.tabular import decode_png, from_arrow, read_parquet
from vlaforge.data.video import FrameReader
from vlaforge.types import IMAGE_PREFIX, FeatureSpec

VIDEO_BACKENDS = ("pyav",)
CACHE_FORMAT = 1


class Dataset(torch.utils.data.Dataset):
    """Training samples from the dataset at `root`.

    history: T, observation steps t-T+1..t.   chunk: H, action steps t..t+H-1.
    cameras: camera names ("corner" or "observation.images.corner") to load; None = all, [] = none.
    video_backend: "pyav" (the only one; torchvision/torchcodec are not dependencies).
    accurate_color: exact yuv->rgb rounding (see video.py); False is ~0.1 ms/frame faster but
        darkens frames by ~1 grey level, as plain swscale/`to_ndarray` decoding does.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        history: int = 1,
        chunk: int = 1,
        cameras: list[str] | None = None,
        video_backend: str = "pyav",
        accurate_color: bool = True,
    ):
        if not isinstance(history, int) or history < 1:
            raise DatasetError(f"history must be an integer >= 1 (observation steps), got {history!r}")
        if not isinstance(chunk, int) or chunk < 1:
            raise DatasetError(f"chunk must be an integer >= 1 (action steps), got {chunk!r}")
        if video_backend not in VIDEO_BACKENDS:
            raise DatasetError(f"video_backend must be one of {list(VIDEO_BACKENDS)}, got {video_backend!r}")
        self.root = Path(root)
        self.history, self.chunk = history, chunk
        self.meta: DatasetMeta = load_meta(self.root)
        self._cameras = self._resolve_cameras(cameras)
        self.sampler = WindowSampler(
            np.array([e.dataset_from_index for e in self.meta.episodes], np.int64),
            np.array([e.dataset_to_index for e in self.meta.episodes], np.int64),
        )
        self._obs_offsets = WindowSampler.history_offsets(history)
        self._act_offsets = WindowSampler.chunk_offsets(chunk)
        self._columns = self._load_columns()
        self._video_files: dict[str, list[Path]] = {}
        self._video_starts: dict[str, np.ndarray] = {}
        for key in self._cameras:
            if self.meta.features[key].dtype == "video":
                self._video_files[key] = [self.meta.video_file(e, key) for e in self.meta.episodes]
                self._video_starts[key] = np.array(
                    [self.meta.video_start(e, key) for e in self.meta.episodes]
                )
                for path in sorted(set(self._video_files[key])):
                    if not path.is_file():
                        raise DatasetError(f"missing video file {path} (feature {key!r})")
        self._reader = FrameReader(self.meta.fps, accurate_color=accurate_color)
        self._cache_paths: dict[str, Path] = {}
        self._cache: dict[str, np.ndarray] = {}

    def actions_only(self, chunk: int) -> Dataset:
        """This recording opened for its action windows alone: history 1, `chunk` actions per item and no
        camera, so no video is decoded (what fitting an action tokenizer, e.g. π0-FAST's, reads)."""
        return Dataset(self.root, history=1, chunk=chunk, cameras=[])

    # ------------------------------------------------------------------------------------ properties

    @property
    def fps(self) -> float:
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """LeRobot-style feature dicts: key -> {"dtype", "shape" (tuple, images (H, W, 3)), "names"[, "info"]}."""
        out = {}
        for key, spec in self.meta.features.items():
            d: dict[str, Any] = {"dtype": spec.dtype, "shape": tuple(spec.shape), "names": spec.names}
            extra = self.meta.info["features"][key].get("info")
            if extra is not None:
                d["info"] = dict(extra)
            out[key] = d
        return out

    @property
    def feature_specs(self) -> dict[str, FeatureSpec]:
        """The same features as typed `FeatureSpec`s (what DatasetWriter takes)."""
        return dict(self.meta.features)

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        return self.meta.stats

    @property
    def num_episodes(self) -> int:
        return len(self.meta.episodes)

    @property
    def has_subtasks(self) -> bool:
        """Whether frames carry subtask labels (items then have "subtask" and "subtask_index")."""
        return self.meta.subtasks is not None

    @property
    def num_frames(self) -> int:
        return self.meta.total_frames

    @property
    def camera_keys(self) -> list[str]:
        """The camera features this dataset object loads (all of them unless `cameras` narrowed it)."""
        return list(self._cameras)

    @property
    def version(self) -> str:
        return self.meta.version

    def __len__(self) -> int:
        return self.meta.total_frames

    def __repr__(self) -> str:
        return (
            f"Dataset({str(self.root)!r}, {self.version}, episodes={self.num_episodes}, frames={len(self)}, "
            f"fps={self.fps}, cameras={self._cameras}, history={self.history}, chunk={self.chunk})"
        )

    # -------------------------------------------------------------------------------------- loading

    def _resolve_cameras(self, cameras: list[str] | None) -> list[str]:
        available = self.meta.camera_keys
        if cameras is None:
            return available
        if isinstance(cameras, str):
            raise DatasetError(
                f"cameras must be a list of names, got the string {cameras!r}; wrap it in a list"
            )
        out = []
        for name in cameras:
            key = name if name in available else IMAGE_PREFIX + name
            if key not in available:
                short = [k.removeprefix(IMAGE_PREFIX) for k in available]
                raise DatasetError(
                    f"camera {name!r} does not exist in {self.root}; available cameras: {short}"
                )
            out.append(key)
        return out

    def _load_columns(self) -> dict[str, np.ndarray]:
        """Every non-video column of the selected features, concatenated in global index order."""
        specs = {
            k: s
            for k, s in self.meta.features.items()
            if s.dtype != "video" and (not is_visual(s) or k in self._cameras)
        }
        files: dict[Path, list[EpisodeRecord]] = {}
        for ep in self.meta.episodes:
            files.setdefault(self.meta.data_file(ep), []).append(ep)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in specs}
        fps = float(self.meta.fps)
        for path, eps in files.items():
            table = read_parquet(path, columns=list(specs))
            cols = {k: from_arrow(table.column(k), s, f"{path} column {k!r}") for k, s in specs.items()}
            expected_index = np.concatenate(
                [np.arange(e.dataset_from_index, e.dataset_to_index) for e in eps]
            )
            index = cols["index"].reshape(-1)
            if len(index) != len(expected_index) or not np.array_equal(index, expected_index):
                raise DatasetError(
                    f"{path}: rows do not match the episode metadata: expected {len(expected_index)} rows with index "
                    f"{expected_index[0]}..{expected_index[-1]}, found {len(index)} rows"
                    + (f" with index {index[0]}..{index[-1]}" if len(index) else "")
                )
            ep_ids = np.concatenate([np.full(e.length, e.episode_index) for e in eps])
            frame_ids = np.concatenate([np.arange(e.length) for e in eps])
            if not np.array_equal(cols["episode_index"].reshape(-1), ep_ids):
                raise DatasetError(f"{path}: episode_index column disagrees with the episode metadata")
            if not np.array_equal(cols["frame_index"].reshape(-1), frame_ids):
                raise DatasetError(f"{path}: frame_index column is not 0..length-1 within each episode")
            drift = np.abs(cols["timestamp"].reshape(-1).astype(np.float64) - frame_ids / fps)
            if drift.size and drift.max() > 0.25 / fps:
                row = int(np.argmax(drift))
                raise DatasetError(
                    f"{path}: timestamp at row {row} is {cols['timestamp'].reshape(-1)[row]:.5f}s, expected "
                    f"frame_index / fps = {frame_ids[row] / fps:.5f}s (frames must be evenly spaced at {fps} fps)"
                )
            for k in specs:
                parts[k].append(cols[k])
        out = {k: np.concatenate(v) for k, v in parts.items()}
        n_tasks = len(self.meta.tasks)
        task_index = out["task_index"].reshape(-1)
        if task_index.size and (task_index.min() < 0 or task_index.max() >= n_tasks):
            raise DatasetError(
                f"{self.root}: task_index values must be in 0..{n_tasks - 1}, found {task_index.max()}"
            )
        if self.meta.subtasks is not None:
            n_sub = len(self.meta.subtasks)
            sub = out[SUBTASK_INDEX].reshape(-1)
            if sub.size and (sub.min() < 0 or sub.max() >= n_sub):
                bad = int(sub.min()) if sub.min() < 0 else int(sub.max())
                raise DatasetError(
                    f"{self.root}: {SUBTASK_INDEX} values must be in 0..{n_sub - 1} (the subtask list), found {bad}"
                )
        return out

    # ------------------------------------------------------------------------------------- frames

    def _frames(self, key: str, ep_i: int, global_idx: np.ndarray) -> np.ndarray:
        """uint8 (K, H, W, 3) frames of camera `key` at global indices (all in episode ep_i)."""
        if key in self._cache_paths:
            if key not in self._cache:  # opened lazily: per process, never pickled
                self._cache[key] = np.load(self._cache_paths[key], mmap_mode="r")
            return np.ascontiguousarray(self._cache[key][global_idx])
        spec = self.meta.features[key]
        if spec.dtype == "image":
            col = self._columns[key]
            return np.stack([decode_png(col[g], f"{self.root} {key!r} frame {g}") for g in global_idx])
        positions = self._video_starts[key][ep_i] + (global_idx - self.meta.episodes[ep_i].dataset_from_index)
        frames = self._reader.read(self._video_files[key][ep_i], positions)  # (K, H, W, 3)
        if frames.shape[1:] != tuple(spec.shape):
            raise DatasetError(
                f"{self._video_files[key][ep_i]}: frames are {frames.shape[1:]}, but info.json declares {key!r} "
                f"as {tuple(spec.shape)}"
            )
        return frames

    # -------------------------------------------------------------------------------------- access

    def _check_index(self, i: Any) -> int:
        try:
            i = operator.index(i)
        except TypeError as e:
            raise DatasetIndexError(f"dataset index must be an integer, got {type(i).__name__}") from e
        if not 0 <= i < len(self):
            raise DatasetIndexError(f"frame index {i} out of range for {self.root} with {len(self)} frames")
        return i

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        ep_i = self.sampler.episode_of(i)
        obs_idx, obs_pad = self.sampler.window(i, self._obs_offsets)  # (T,), (T,)
        act_idx, act_pad = self.sampler.window(i, self._act_offsets)  # (H,), (H,)
        item: dict[str, Any] = {}
        for key in self._cameras:
            frames = self._frames(key, ep_i, obs_idx)  # (T, H, W, 3)
            item[key] = torch.from_numpy(frames if self.history > 1 else frames[0])
            item[f"{key}_is_pad"] = torch.from_numpy(obs_pad)
        for key, col in self._columns.items():
            if key in DEFAULT_FEATURES or key in self._cameras or key == SUBTASK_INDEX:
                continue
            if col.dtype == object:  # strings are read at t only
                item[key] = col[i, 0]
                continue
            if key.startswith("action"):
                idx, pad, squeeze = act_idx, act_pad, self.chunk == 1
            elif key.startswith("observation."):
                idx, pad, squeeze = obs_idx, obs_pad, self.history == 1
            else:
                item[key] = torch.from_numpy(np.array(col[i]))
                continue
            value = col[idx]  # (T|H, *shape)
            item[key] = torch.from_numpy(value[0] if squeeze else value)
            item[f"{key}_is_pad"] = torch.from_numpy(pad)
        task_index = int(self._columns["task_index"][i, 0])
        item["task"] = self.meta.tasks[task_index]
        item["task_index"] = torch.tensor(task_index)
        for key in ("index", "episode_index", "frame_index"):
            item[key] = torch.tensor(int(self._columns[key][i, 0]))
        item["timestamp"] = torch.tensor(float(self._columns["timestamp"][i, 0]), dtype=torch.float32)
        if self.meta.subtasks is not None:  # the subtask at t, like the task (default_collate: list[str])
            subtask_index = int(self._columns[SUBTASK_INDEX][i, 0])
            item["subtask"] = self.meta.subtasks[subtask_index]
            item["subtask_index"] = torch.tensor(subtask_index)
        return item

    def episode(self, e: int) -> dict[str, Any]:
        """Whole episode `e` as numpy arrays (L, ...) plus its task string; images uint8 (L, H, W, 3).

        Labelled datasets add "subtask_index" (L,) and "subtasks", the per-frame texts (list of L str).
        """
        try:
            e = operator.index(e)
        except TypeError as err:
            raise DatasetIndexError(f"episode index must be an integer, got {type(e).__name__}") from err
        if not 0 <= e < self.num_episodes:
            raise DatasetIndexError(
                f"episode {e} out of range for {self.root} with {self.num_episodes} episodes"
            )
        ep = self.meta.episodes[e]
        rows = np.arange(ep.dataset_from_index, ep.dataset_to_index)
        out: dict[str, Any] = {}
        for key, col in self._columns.items():
            if key in self._cameras:
                continue
            value = col[ep.dataset_from_index : ep.dataset_to_index]
            out[key] = value.reshape(-1) if key in DEFAULT_FEATURES or key == SUBTASK_INDEX else value
        for key in self._cameras:
            out[key] = self._frames(key, e, rows)
        out["task"] = self.meta.tasks[int(out["task_index"][0])]
        if self.meta.subtasks is not None:
            out["subtasks"] = [self.meta.subtasks[int(k)] for k in out[SUBTASK_INDEX]]
        return out

    def verify(self) -> int:
        """Decode the first and last frame of every episode of every selected camera.

        Catches truncated or mismatched video files up front instead of mid-training. Raises
        DatasetError naming the file; returns the number of frames checked.
        """
        checked = 0
        for ep_i, ep in enumerate(self.meta.episodes):
            ends = np.array(sorted({ep.dataset_from_index, ep.dataset_to_index - 1}))
            for key in self._cameras:
                checked += len(self._frames(key, ep_i, ends))
        return checked

    # -------------------------------------------------------------------------------- frame cache

    def cache_frames(self, directory: str | Path | None = None, *, progress: bool = False) -> Path:
        """Decode every selected camera once into uint8 (N, H, W, 3) .npy memmaps; read from them after.

        Training reads each frame many times; decoding it once trades disk (N*H*W*3 bytes per
        camera) for decode time. The cache is reused when its manifest matches the dataset
        (same videos by size and mtime) and rebuilt otherwise. Default: <root>/.cache/frames.
        progress: show a tqdm bar over episodes while decoding.
        """
        directory = Path(directory) if directory is not None else self.root / ".cache" / "frames"
        directory.mkdir(parents=True, exist_ok=True)
        self._cache_paths, self._cache = {}, {}  # build from the videos, not from an older cache
        manifest_path = directory / "manifest.json"
        fingerprint = self._cache_fingerprint()
        paths = {key: directory / f"{key}.npy" for key in self._cameras}
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        valid = set(manifest.get("keys", [])) if manifest.get("fingerprint") == fingerprint else set()
        for key, path in paths.items():
            shape = (len(self), *self.meta.features[key].shape)
            if key in valid and path.is_file() and np.load(path, mmap_mode="r").shape == shape:
                continue
            # Per process: two runs caching the same dataset at once must not truncate each other's file.
            tmp = path.with_name(f"{path.name}.{os.getpid()}.partial.npy")
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)  # (N, H, W, 3)
            episodes = enumerate(self.meta.episodes)
            if progress:
                from tqdm import tqdm

                episodes = tqdm(episodes, total=self.num_episodes, desc=f"caching {key}", unit="ep")
            for ep_i, ep in episodes:
                rows = np.arange(ep.dataset_from_index, ep.dataset_to_index)
                array[ep.dataset_from_index : ep.dataset_to_index] = self._frames(key, ep_i, rows)
            array.flush()
            del array
            tmp.replace(path)
            valid.add(key)
            manifest_tmp = manifest_path.with_name(f"{manifest_path.name}.{os.getpid()}.tmp")
            manifest_tmp.write_text(json.dumps({"fingerprint": fingerprint, "keys": sorted(valid)}, indent=2))
            manifest_tmp.replace(manifest_path)
        self._cache_paths = paths
        self._cache = {}
        return directory

    def cached_frames(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """After `cache_frames`: (camera key -> its uint8 (N, H, W, 3) memmap, what those frames depend on);
        None without a frame cache. Caches derived from the frames (a frozen encoder's tokens,
        `train/feature_cache.py`) key themselves on the second."""
        if not self._cache_paths:
            return None
        arrays = {key: np.load(path, mmap_mode="r") for key, path in self._cache_paths.items()}
        return arrays, self._cache_fingerprint()

    def _cache_fingerprint(self) -> dict[str, Any]:
        files = sorted({self.meta.video_file(e, k) for k in self.meta.video_keys for e in self.meta.episodes})
        return {
            "format": CACHE_FORMAT,
            "accurate_color": self._reader.accurate_color,  # the two conversions differ by ~1 grey level
            "total_frames": len(self),
            "files": {str(p.relative_to(self.root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
            "data": {
                str(p.relative_to(self.root)): [p.stat().st_size, p.stat().st_mtime_ns]
                for p in sorted({self.meta.data_file(e) for e in self.meta.episodes})
            },
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}  # a memmap would pickle its whole content; workers reopen it
        return state
