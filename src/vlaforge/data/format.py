"""The LeRobot dataset layout: versions, path templates, info.json schema and its validation.

Two on-disk versions are supported, both read and written:

v3.0 (native)                                      v2.1
  meta/info.json                                     meta/info.json
  meta/stats.json                                    meta/stats.json (optional in LeRobot)
  meta/tasks.parquet                                 meta/tasks.jsonl
  meta/episodes/chunk-000/file-000.parquet           meta/episodes.jsonl, meta/episodes_stats.jsonl
  data/chunk-000/file-000.parquet  (many episodes)   data/chunk-000/episode_000000.parquet
  videos/<key>/chunk-000/file-000.mp4 (many eps)     videos/chunk-000/<key>/episode_000000.mp4

Keys, templates and info.json fields match LeRobot's (`lerobot/datasets/utils.py`), so a dataset
written here opens with `lerobot.datasets.lerobot_dataset.LeRobotDataset(repo_id, root=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.errors import DatasetError
from vlaforge.types import FeatureSpec

V30 = "v3.0"
V21 = "v2.1"
SUPPORTED_VERSIONS = (V30, V21)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"

# v3.0
TASKS_PARQUET_PATH = "meta/tasks.parquet"
# optional: subtask_index -> text, LeRobot's DEFAULT_SUBTASKS_PATH (see SUBTASK_INDEX)
SUBTASKS_PARQUET_PATH = "meta/subtasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
V30_DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
V30_VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
V30_EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"

# v2.1
EPISODES_JSONL_PATH = "meta/episodes.jsonl"
EPISODES_STATS_JSONL_PATH = "meta/episodes_stats.jsonl"
TASKS_JSONL_PATH = "meta/tasks.jsonl"
SUBTASKS_JSONL_PATH = "meta/subtasks.jsonl"  # optional, the v2.1 spelling of subtasks.parquet
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

DEFAULT_CHUNK_SIZE = 1000  # max files per chunk directory
DEFAULT_DATA_FILE_SIZE_IN_MB = 100  # v3.0: start a new data parquet past this size
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500  # v3.0: start a new mp4 past this size

# Columns the writer adds to every frame (LeRobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, FeatureSpec] = {
    "timestamp": FeatureSpec("float32", (1,)),
    "frame_index": FeatureSpec("int64", (1,)),
    "episode_index": FeatureSpec("int64", (1,)),
    "index": FeatureSpec("int64", (1,)),
    "task_index": FeatureSpec("int64", (1,)),
}

# Optional per-frame subtask label (π0.5-style "what am I doing now" text), mirroring task_index: an int64
# column in the data files whose values index meta/subtasks.parquet. Only labelled datasets have it; LeRobot
# >= 0.4 reads it natively (`item["subtask"]`), older readers ignore the extra column.
SUBTASK_INDEX = "subtask_index"
SUBTASK_FEATURE = FeatureSpec("int64", (1,))

VISUAL_DTYPES = ("video", "image")
NUMERIC_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
READ_ONLY_DTYPES = ("string",)  # read from LeRobot datasets, not written by DatasetWriter
IMAGE_NAMES = ["height", "width", "channels"]

REQUIRED_INFO_KEYS = {
    V30: ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames"),
    V21: (
        "codebase_version",
        "fps",
        "features",
        "data_path",
        "total_episodes",
        "total_frames",
        "chunks_size",
    ),
}

VIDEO_CODECS = {"h264": "libx264", "av1": "libsvtav1"}  # info.json name -> encoder


def is_visual(spec: FeatureSpec) -> bool:
    return spec.dtype in VISUAL_DTYPES


def validate_feature_key(key: str) -> None:
    if not key or "/" in key:
        raise DatasetError(
            f"feature key {key!r} is invalid: keys must be non-empty and must not contain '/' "
            "(LeRobot flattens per-episode stats as 'stats/<key>/<stat>')"
        )


def validate_feature_spec(key: str, spec: FeatureSpec) -> None:
    """Raise DatasetError unless `spec` is a feature the writer and reader understand."""
    validate_feature_key(key)
    if not isinstance(spec, FeatureSpec):
        raise DatasetError(
            f"feature {key!r}: expected a vlaforge.types.FeatureSpec, got {type(spec).__name__}"
        )
    if spec.dtype not in VISUAL_DTYPES + NUMERIC_DTYPES:
        note = " (read from LeRobot datasets, but not written)" if spec.dtype in READ_ONLY_DTYPES else ""
        raise DatasetError(
            f"feature {key!r}: unsupported dtype {spec.dtype!r}{note}; expected one of {VISUAL_DTYPES + NUMERIC_DTYPES}"
        )
    if any(int(d) <= 0 for d in spec.shape) or len(spec.shape) == 0:
        raise DatasetError(f"feature {key!r}: shape {spec.shape} must be a non-empty tuple of positive sizes")
    if is_visual(spec):
        if len(spec.shape) != 3 or spec.shape[2] != 3:
            raise DatasetError(
                f"feature {key!r}: {spec.dtype} features have shape (H, W, 3), got {spec.shape}"
            )
        if spec.dtype == "video" and (spec.shape[0] % 2 or spec.shape[1] % 2):
            raise DatasetError(
                f"feature {key!r}: yuv420p video needs even height and width, got {spec.shape[:2]}; "
                "crop or resize the frames by one pixel"
            )


def spec_from_json(key: str, ft: dict[str, Any], where: Path | str) -> FeatureSpec:
    if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
        raise DatasetError(f"{where}: feature {key!r} must be an object with 'dtype' and 'shape', got {ft!r}")
    try:
        shape = tuple(int(d) for d in ft["shape"])
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: feature {key!r} has a non-integer shape {ft['shape']!r}") from e
    names = ft.get("names")
    if isinstance(names, dict):  # LeRobot allows {"motors": [...]}; keep the flat list
        names = [n for v in names.values() for n in (v if isinstance(v, list) else [v])]
    spec = FeatureSpec(str(ft["dtype"]), shape, names)
    if spec.dtype in VISUAL_DTYPES and len(shape) == 3 and shape[0] == 3 and shape[2] != 3:
        # Old LeRobot datasets store (C, H, W); everything here is channel-last.
        spec = FeatureSpec(spec.dtype, (shape[1], shape[2], shape[0]), IMAGE_NAMES)
    return spec


def feature_to_json(key: str, spec: FeatureSpec, video_info: dict[str, Any] | None = None) -> dict[str, Any]:
    d = spec.to_json()
    if is_visual(spec) and d.get("names") is None:
        d["names"] = list(IMAGE_NAMES)
    if video_info is not None:
        d["info"] = video_info
    return d


def validate_info(info: Any, where: Path | str) -> dict[str, Any]:
    """Check a parsed meta/info.json; return it with feature specs parsed under `_specs`.

    Raises DatasetError naming the file and the missing/invalid key.
    """
    if not isinstance(info, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(info).__name__}")
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(
            f"{where}: unknown codebase_version {version!r}; supported versions are {list(SUPPORTED_VERSIONS)} "
            "(convert older LeRobot datasets with LeRobot's own conversion scripts first)"
        )
    missing = [k for k in REQUIRED_INFO_KEYS[version] if k not in info]
    if missing:
        raise DatasetError(f"{where}: missing required key(s) {missing} for a {version} dataset")
    fps = info["fps"]
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
        raise DatasetError(f"{where}: 'fps' must be a positive number, got {fps!r}")
    if not isinstance(info["features"], dict) or not info["features"]:
        raise DatasetError(f"{where}: 'features' must be a non-empty object")
    specs = {k: spec_from_json(k, ft, where) for k, ft in info["features"].items()}
    absent = [k for k in DEFAULT_FEATURES if k not in specs]
    if absent:
        raise DatasetError(
            f"{where}: features {absent} are missing; every LeRobot dataset has {list(DEFAULT_FEATURES)}"
        )
    sub = specs.get(SUBTASK_INDEX)
    if sub is not None and (sub.dtype != SUBTASK_FEATURE.dtype or tuple(sub.shape) != SUBTASK_FEATURE.shape):
        raise DatasetError(
            f"{where}: feature {SUBTASK_INDEX!r} must be int64 of shape (1,) (an index into the subtask list), "
            f"got {sub.dtype} {tuple(sub.shape)}"
        )
    if any(s.dtype == "video" for s in specs.values()) and not info.get("video_path"):
        raise DatasetError(f"{where}: the dataset has video features but no 'video_path' template")
    for key in ("total_episodes", "total_frames"):
        if not isinstance(info[key], int) or info[key] < 0:
            raise DatasetError(f"{where}: {key!r} must be a non-negative integer, got {info[key]!r}")
    out = dict(info)
    out["_specs"] = specs
    return out


def make_info(
    *,
    version: str,
    fps: float,
    features: dict[str, FeatureSpec],
    robot_type: str,
    video_info: dict[str, dict[str, Any]],
    total_episodes: int,
    total_frames: int,
    total_tasks: int,
    chunks_size: int = DEFAULT_CHUNK_SIZE,
    data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
) -> dict[str, Any]:
    """Build meta/info.json for `version`, in LeRobot's field order."""
    has_video = any(s.dtype == "video" for s in features.values())
    feats = {k: feature_to_json(k, s, video_info.get(k)) for k, s in features.items()}
    info: dict[str, Any] = {"codebase_version": version, "robot_type": robot_type}
    info.update(total_episodes=total_episodes, total_frames=total_frames, total_tasks=total_tasks)
    if version == V21:
        n_video = sum(1 for s in features.values() if s.dtype == "video")
        info["total_videos"] = total_episodes * n_video
        info["total_chunks"] = max(1, -(-total_episodes // chunks_size))
        info["chunks_size"] = chunks_size
        info["fps"] = fps
        info["splits"] = {"train": f"0:{total_episodes}"}
        info["data_path"] = V21_DATA_PATH
        info["video_path"] = V21_VIDEO_PATH if has_video else None
    else:
        info["chunks_size"] = chunks_size
        info["data_files_size_in_mb"] = data_files_size_in_mb
        info["video_files_size_in_mb"] = video_files_size_in_mb
        info["fps"] = fps
        info["splits"] = {"train": f"0:{total_episodes}"}
        info["data_path"] = V30_DATA_PATH
        info["video_path"] = V30_VIDEO_PATH if has_video else None
    info["features"] = feats
    return info


def video_info_json(
    *, height: int, width: int, codec: str, fps: float, pix_fmt: str = "yuv420p"
) -> dict[str, Any]:
    """The `info` block LeRobot stores under each video feature."""
    return {
        "video.height": height,
        "video.width": width,
        "video.codec": codec,
        "video.pix_fmt": pix_fmt,
        "video.is_depth_map": False,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
    }


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e


def read_jsonl(path: Path) -> list[Any]:
    if not path.is_file():
        raise DatasetError(f"missing file {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{lineno}: not valid JSON ({e})") from e
    return rows


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_to_jsonable(obj), indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(_to_jsonable(row), ensure_ascii=False) + "\n")
