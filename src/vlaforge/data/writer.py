"""DatasetWriter: episodes in, a finalized LeRobot dataset (v3.0 or v2.1) out.

    writer = DatasetWriter("data/pick", fps=80, features={
        "observation.images.corner": FeatureSpec("video", (128, 128, 3)),
        "observation.state": FeatureSpec("float32", (4,)),
        "action": FeatureSpec("float32", (4,)),
    })
    writer.add_episode({"observation.images.corner": frames, ...}, task="pick up the puck")  # (T, ...)
    writer.finalize()

With `subtasks=True` every episode also gets one subtask text per frame
(`add_episode(frames, task, subtasks=["reach the puck", ...])`), stored like the task: an int64
`subtask_index` column plus meta/subtasks.parquet (v2.1: meta/subtasks.jsonl).

Atomic: everything is written into a hidden temporary directory next to `root` and renamed
into place by `finalize()`. A crash or an exception leaves the previous dataset at `root`
untouched (used as a context manager, the temporary directory is removed on error).
Memory holds one episode at a time plus bounded statistics accumulators (see stats.py).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from vlaforge.data.errors import DatasetError
from vlaforge.data.format import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    INFO_PATH,
    SUBTASK_FEATURE,
    SUBTASK_INDEX,
    SUPPORTED_VERSIONS,
    V21,
    V21_DATA_PATH,
    V21_VIDEO_PATH,
    V30,
    V30_DATA_PATH,
    V30_VIDEO_PATH,
    VIDEO_CODECS,
    is_visual,
    make_info,
    validate_feature_spec,
    video_info_json,
)
from vlaforge.data.meta import EpisodeRecord, VideoRef, write_meta
from vlaforge.data.stats import DEFAULT_RESERVOIR_ROWS, aggregate_stats, compute_stats, make_accumulator
from vlaforge.data.tabular import build_table
from vlaforge.data.video import DEFAULT_GOP, VideoSink
from vlaforge.types import FeatureSpec


@dataclass(frozen=True)
class VideoSegment:
    """Frames [start, start + length) (positions) of an existing mp4, to be copied without re-encoding."""

    path: Path
    start: int
    length: int
    codec: str  # "h264" | "av1", recorded in info.json


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


class DatasetWriter:
    """Write episodes of `features` at `fps` into a LeRobot dataset at `root`.

    features: LeRobot keys -> FeatureSpec, e.g. "observation.images.<camera>": ("video", (H, W, 3)),
        "observation.state": ("float32", (S,)), "action": ("float32", (A,)). The writer adds
        timestamp, frame_index, episode_index, index and task_index itself.
    version: "v3.0" (many episodes per file) or "v2.1" (one file per episode).
    codec: "h264" (libx264) or "av1" (libsvtav1); yuv420p; a keyframe every `gop` frames and at
        every episode start.
    overwrite: replace an existing dataset at `root` on finalize (never a non-dataset directory).
    subtasks: every episode carries per-frame subtask texts (`add_episode(..., subtasks=[...])`),
        written as the `subtask_index` column and meta/subtasks.parquet.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: float,
        features: dict[str, FeatureSpec],
        robot_type: str = "unknown",
        version: str = V30,
        codec: str = "h264",
        overwrite: bool = False,
        gop: int = DEFAULT_GOP,
        crf: int | None = None,
        chunks_size: int = DEFAULT_CHUNK_SIZE,
        data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        reservoir_rows: int = DEFAULT_RESERVOIR_ROWS,
        subtasks: bool = False,
    ):
        if version not in SUPPORTED_VERSIONS:
            raise DatasetError(f"version must be one of {list(SUPPORTED_VERSIONS)}, got {version!r}")
        if codec not in VIDEO_CODECS:
            raise DatasetError(f"codec must be one of {sorted(VIDEO_CODECS)}, got {codec!r}")
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
            raise DatasetError(f"fps must be a positive number, got {fps!r}")
        if int(gop) < 1:
            raise DatasetError(f"gop (keyframe interval) must be >= 1, got {gop!r}")
        if chunks_size < 1 or data_files_size_in_mb <= 0 or video_files_size_in_mb <= 0:
            raise DatasetError(
                "chunks_size, data_files_size_in_mb and video_files_size_in_mb must be positive"
            )
        if not isinstance(features, dict) or not features:
            raise DatasetError("features must be a non-empty dict of key -> FeatureSpec")
        for key, spec in features.items():
            if key in DEFAULT_FEATURES:
                raise DatasetError(f"feature {key!r} is added by the writer; remove it from `features`")
            if key == SUBTASK_INDEX:
                raise DatasetError(
                    f"feature {key!r} is added by the writer; remove it from `features`, pass subtasks=True "
                    "and give each episode's texts with add_episode(..., subtasks=[...])"
                )
            validate_feature_spec(key, spec)
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise DatasetError(f"{self.root} already exists; pass overwrite=True to replace it on finalize()")
        if self.root.exists() and not (self.root / INFO_PATH).is_file() and any(self.root.iterdir()):
            raise DatasetError(
                f"{self.root} exists and is not a dataset (no {INFO_PATH}); refusing to replace it"
            )
        self.fps = int(fps) if float(fps).is_integer() else float(fps)  # LeRobot writes integer fps
        self.version = version
        self.codec = codec
        self.gop = int(gop)
        self.crf = crf
        self.robot_type = robot_type
        self.chunks_size = int(chunks_size)
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self.user_features = dict(features)
        self.has_subtasks = bool(subtasks)
        self.specs: dict[str, FeatureSpec] = {**self.user_features, **DEFAULT_FEATURES}
        if self.has_subtasks:
            self.specs[SUBTASK_INDEX] = SUBTASK_FEATURE
        self._dtypes = {k: s.dtype for k, s in self.specs.items()}
        self._acc = {k: make_accumulator(s.dtype, s.shape, reservoir_rows) for k, s in self.specs.items()}
        self._stats_from_episodes: set[str] = set()  # keys whose stats came with copied video segments

        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root.parent / f".{self.root.name}.writing-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        self._tasks: list[str] = []
        self._task_ids: dict[str, int] = {}
        self._subtasks: list[str] = []
        self._subtask_ids: dict[str, int] = {}
        self._episodes: list[EpisodeRecord] = []
        self._total = 0
        self._video_codec: dict[str, str] = {}
        # v3.0 file state
        self._data_file = (0, 0)
        self._data_writer: pq.ParquetWriter | None = None
        self._sinks: dict[str, VideoSink] = {}
        self._video_file: dict[str, tuple[int, int]] = {k: (0, 0) for k in self.video_keys}
        self._closed = False
        self._failed: BaseException | None = None  # an I/O error mid-episode leaves files inconsistent

    # ------------------------------------------------------------------------------------ public API

    @property
    def video_keys(self) -> list[str]:
        return [k for k, s in self.user_features.items() if s.dtype == "video"]

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def add_episode(
        self, frames: dict[str, np.ndarray], task: str, subtasks: Sequence[str] | None = None
    ) -> int:
        """Append one episode: every feature as an array with a leading time axis T. Returns its index.

        subtasks: one text per frame (T,), required exactly when the writer was made with subtasks=True.
        """
        return self._add(frames, task, {}, {}, subtasks)

    def add_encoded_episode(
        self,
        frames: dict[str, np.ndarray],
        task: str,
        videos: dict[str, VideoSegment],
        episode_stats: dict[str, dict[str, np.ndarray]],
        subtasks: Sequence[str] | None = None,
    ) -> int:
        """Like add_episode, but the given video features are copied from existing mp4 segments.

        Used by `convert_dataset` to move video between layouts without re-encoding. Per-episode
        statistics are taken from `episode_stats` where given (they cannot be recomputed for the
        copied videos; for the other features this keeps the source's numbers).
        """
        missing = [k for k in videos if k not in episode_stats]
        if missing:
            raise DatasetError(
                f"add_encoded_episode: per-episode statistics missing for copied video {missing}"
            )
        return self._add(frames, task, videos, episode_stats, subtasks)

    def finalize(self, stats: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
        """Write metadata and move the dataset into place; returns `root`.

        stats: optional global statistics that take precedence over the computed ones (conversion
        passes the source's stats.json so that nothing changes).
        """
        self._check_open()
        if not self._episodes:
            self.abort()
            raise DatasetError(f"no episodes were added to {self.root}; nothing to finalize")
        self._close_files()
        global_stats = {k: acc.result() for k, acc in self._acc.items() if acc.count > 0}
        if self._stats_from_episodes:
            merged = aggregate_stats(
                [{k: ep.stats[k] for k in self._stats_from_episodes} for ep in self._episodes]
            )
            global_stats.update(merged)
        if stats:
            global_stats.update({k: v for k, v in stats.items() if k in self.specs})
        first = self.user_features
        video_info = {
            k: video_info_json(
                height=first[k].shape[0], width=first[k].shape[1], codec=self._video_codec[k], fps=self.fps
            )
            for k in self.video_keys
        }
        info = make_info(
            version=self.version,
            fps=self.fps,
            features=self.specs,
            robot_type=self.robot_type,
            video_info=video_info,
            total_episodes=len(self._episodes),
            total_frames=self._total,
            total_tasks=len(self._tasks),
            chunks_size=self.chunks_size,
            data_files_size_in_mb=self.data_files_size_in_mb,
            video_files_size_in_mb=self.video_files_size_in_mb,
        )
        subtasks = list(self._subtasks) if self.has_subtasks else None
        write_meta(self._tmp, info, global_stats, self._tasks, self._episodes, subtasks)
        self._swap_into_place()
        self._closed = True
        return self.root

    def abort(self) -> None:
        """Discard everything written so far; `root` is left as it was."""
        if self._closed:
            return
        try:
            self._close_files()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.finalize()

    # ------------------------------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise DatasetError(f"the writer for {self.root} is already finalized or aborted")
        if self._failed is not None:
            raise DatasetError(
                f"writing an episode to {self.root} failed earlier ({self._failed!r}); the partial files cannot be "
                "finalized. Call abort() and record again"
            ) from self._failed

    def _validate(self, frames: dict[str, np.ndarray], skip: set[str]) -> dict[str, np.ndarray]:
        if not isinstance(frames, dict):
            raise DatasetError(f"add_episode expects a dict of feature -> array, got {type(frames).__name__}")
        expected = set(self.user_features) - skip
        missing, extra = sorted(expected - set(frames)), sorted(set(frames) - expected)
        if missing or extra:
            raise DatasetError(
                f"episode features do not match the dataset: missing {missing}, unexpected {extra}; "
                f"expected exactly {sorted(expected)}"
            )
        arrays = {key: np.asarray(frames[key]) for key in sorted(expected)}
        for key, arr in arrays.items():
            if arr.ndim == 0:
                raise DatasetError(f"{key!r}: expected an array with a leading time axis T, got a scalar")
        lengths = {key: arr.shape[0] for key, arr in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise DatasetError(f"all features of an episode need the same number of frames T, got {lengths}")
        out = {}
        for key, arr in arrays.items():
            spec = self.user_features[key]
            if tuple(arr.shape[1:]) != tuple(spec.shape):
                raise DatasetError(
                    f"{key!r}: expected shape (T, {', '.join(map(str, spec.shape))}), got {arr.shape}"
                )
            if is_visual(spec):
                if arr.dtype != np.uint8:
                    raise DatasetError(
                        f"{key!r}: images must be uint8 (T, H, W, 3) in 0..255, got {arr.dtype}"
                    )
            else:
                if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                    raise DatasetError(f"{key!r}: cannot store {arr.dtype} values as {spec.dtype}")
                arr = arr.astype(spec.dtype, copy=False)
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    bad = int(np.argwhere(~np.isfinite(arr.reshape(len(arr), -1)))[0, 0])
                    raise DatasetError(f"{key!r}: NaN or Inf at frame {bad}")
            out[key] = arr
        if any(n == 0 for n in lengths.values()):
            raise DatasetError("an episode needs at least one frame")
        return out

    def _task_index(self, task: str) -> int:
        if not isinstance(task, str) or not task.strip():
            raise DatasetError(f"task must be a non-empty string (the language instruction), got {task!r}")
        if task not in self._task_ids:
            self._task_ids[task] = len(self._tasks)
            self._tasks.append(task)
        return self._task_ids[task]

    def _check_subtasks(self, subtasks: Sequence[str] | None, length: int) -> None:
        """Raise DatasetError unless `subtasks` fits this writer: one non-empty text per frame, or None."""
        if not self.has_subtasks:
            if subtasks is not None:
                raise DatasetError(
                    "subtasks were given for an episode, but the writer was made without subtasks=True; "
                    "a dataset has subtask labels on every frame or on none"
                )
            return
        if subtasks is None or isinstance(subtasks, str):
            raise DatasetError(
                "this writer stores subtask labels (subtasks=True): pass add_episode(..., subtasks=[...]) "
                f"with one text per frame, got {type(subtasks).__name__}"
            )
        if len(subtasks) != length:
            raise DatasetError(f"subtasks: expected one text per frame ({length}), got {len(subtasks)}")
        for t, text in enumerate(subtasks):
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(f"subtasks[{t}] must be a non-empty string, got {text!r}")

    def _subtask_column(self, subtasks: Sequence[str]) -> np.ndarray:
        """(T,) int64 indices of checked per-frame texts; new texts join the list in first-seen order."""
        for text in subtasks:
            if text not in self._subtask_ids:
                self._subtask_ids[text] = len(self._subtasks)
                self._subtasks.append(text)
        return np.array([self._subtask_ids[text] for text in subtasks], np.int64)

    def _add(
        self,
        frames: dict[str, np.ndarray],
        task: str,
        videos: dict[str, VideoSegment],
        given_stats: dict[str, dict[str, np.ndarray]],
        subtasks: Sequence[str] | None = None,
    ) -> int:
        self._check_open()
        unknown = [k for k in videos if k not in self.video_keys]
        if unknown:
            raise DatasetError(
                f"video segments given for {unknown}, which are not video features {self.video_keys}"
            )
        columns = self._validate(frames, set(videos))
        lengths = {len(v) for v in columns.values()} | {s.length for s in videos.values()}
        if len(lengths) != 1:
            raise DatasetError(
                f"all features of an episode need the same length, got lengths {sorted(lengths)}"
            )
        (length,) = lengths
        ep_index = len(self._episodes)
        self._check_subtasks(subtasks, length)  # before the task or any text joins a list
        task_index = self._task_index(task)
        frame_index = np.arange(length, dtype=np.int64)
        columns.update(
            timestamp=(frame_index / self.fps).astype(np.float32),
            frame_index=frame_index,
            episode_index=np.full(length, ep_index, np.int64),
            index=np.arange(self._total, self._total + length, dtype=np.int64),
            task_index=np.full(length, task_index, np.int64),
        )
        if self.has_subtasks:
            assert subtasks is not None
            columns[SUBTASK_INDEX] = self._subtask_column(subtasks)
        ep_stats = compute_stats(columns, self._dtypes)
        for key, given in given_stats.items():  # conversion keeps the source's statistics
            if key in self.specs:
                ep_stats[key] = {s: np.asarray(v) for s, v in given.items()}
        self._stats_from_episodes.update(videos)
        try:
            data_chunk, data_file = self._write_rows(columns, ep_index)
            refs = {}
            for key in self.video_keys:
                refs[key] = self._write_video(key, ep_index, columns.get(key), videos.get(key), length)
        except BaseException as e:  # half an episode is on disk: refuse to go on
            self._failed = e
            raise
        for key, arr in columns.items():
            self._acc[key].update(arr if is_visual(self.specs[key]) else arr.reshape(length, -1))
        self._episodes.append(
            EpisodeRecord(
                episode_index=ep_index,
                length=length,
                tasks=[task],
                dataset_from_index=self._total,
                dataset_to_index=self._total + length,
                data_chunk_index=data_chunk,
                data_file_index=data_file,
                videos=refs,
                stats=ep_stats,
            )
        )
        self._total += length
        return ep_index

    def _write_rows(self, columns: dict[str, np.ndarray], ep_index: int) -> tuple[int, int]:
        table = build_table(columns, self.specs)
        if self.version == V21:
            chunk = ep_index // self.chunks_size
            path = self._tmp / V21_DATA_PATH.format(episode_chunk=chunk, episode_index=ep_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            return chunk, ep_index
        if self._data_writer is not None:
            size_mb = Path(self._data_writer.where).stat().st_size / 2**20
            if size_mb >= self.data_files_size_in_mb:
                self._data_writer.close()
                self._data_writer = None
                self._data_file = _next_file(*self._data_file, self.chunks_size)
        if self._data_writer is None:
            chunk, file = self._data_file
            path = self._tmp / V30_DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(str(path), table.schema)
        self._data_writer.write_table(table)
        return self._data_file

    def _open_sink(self, path: Path, key: str, copy: bool) -> VideoSink:
        h, w, _ = self.user_features[key].shape
        mode = "copy" if copy else "encode"
        return VideoSink(
            path, fps=self.fps, height=h, width=w, codec=self.codec, gop=self.gop, crf=self.crf, mode=mode
        )

    def _write_video(
        self, key: str, ep_index: int, frames: np.ndarray | None, segment: VideoSegment | None, length: int
    ) -> VideoRef:
        codec = segment.codec if segment is not None else self.codec
        if self._video_codec.setdefault(key, codec) != codec:
            raise DatasetError(
                f"{key!r}: cannot mix {self._video_codec[key]} and {codec} video in one dataset"
            )
        if self.version == V21:
            chunk = ep_index // self.chunks_size
            path = self._tmp / V21_VIDEO_PATH.format(
                episode_chunk=chunk, video_key=key, episode_index=ep_index
            )
            sink = self._open_sink(path, key, segment is not None)
            self._put(sink, frames, segment)
            sink.close()
            return VideoRef(chunk, ep_index, 0.0, length / self.fps)
        sink = self._sinks.get(key)
        if sink is not None and sink.size_mb() >= self.video_files_size_in_mb:
            sink.close()
            del self._sinks[key]
            sink = None
            self._video_file[key] = _next_file(*self._video_file[key], self.chunks_size)
        chunk, file = self._video_file[key]
        if sink is None:
            path = self._tmp / V30_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            sink = self._sinks[key] = self._open_sink(path, key, segment is not None)
        if (sink.mode == "copy") != (segment is not None):
            raise DatasetError(f"{key!r}: cannot mix copied and newly encoded episodes in one video file")
        start = self._put(sink, frames, segment)
        return VideoRef(chunk, file, start / self.fps, (start + length) / self.fps)

    def _put(self, sink: VideoSink, frames: np.ndarray | None, segment: VideoSegment | None) -> int:
        if segment is not None:
            return sink.copy_segment(segment.path, segment.start, segment.length, self.fps)
        assert frames is not None
        return sink.write_frames(frames)

    def _close_files(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()

    def _swap_into_place(self) -> None:
        old = None
        if self.root.exists():
            old = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.root, old)
        os.rename(self._tmp, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
