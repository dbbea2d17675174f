"""Dataset metadata (info, stats, tasks, episodes) read from and written to either version's layout.

In memory both versions look the same: a list of `EpisodeRecord`s that say where each episode's
rows and video frames live. Only `load_meta` and `write_meta` know the difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.data.errors import DatasetError
from vlaforge.data.format import (
    EPISODES_DIR,
    EPISODES_JSONL_PATH,
    EPISODES_STATS_JSONL_PATH,
    INFO_PATH,
    STATS_PATH,
    SUBTASK_INDEX,
    SUBTASKS_JSONL_PATH,
    SUBTASKS_PARQUET_PATH,
    TASKS_JSONL_PATH,
    TASKS_PARQUET_PATH,
    V21,
    V30,
    V30_EPISODES_PATH,
    is_visual,
    read_json,
    read_jsonl,
    validate_info,
    write_json,
    write_jsonl,
)
from vlaforge.data.stats import aggregate_stats, stats_from_json, stats_to_json
from vlaforge.data.tabular import read_parquet
from vlaforge.types import FeatureSpec


@dataclass
class VideoRef:
    """Where one episode's frames of one camera live (v2.1: file_index is the episode index)."""

    chunk_index: int
    file_index: int
    from_timestamp: float
    to_timestamp: float


@dataclass
class EpisodeRecord:
    episode_index: int
    length: int
    tasks: list[str]
    dataset_from_index: int  # first global frame index (inclusive)
    dataset_to_index: int  # one past the last
    data_chunk_index: int
    data_file_index: int
    videos: dict[str, VideoRef] = field(default_factory=dict)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class DatasetMeta:
    root: Path
    info: dict[str, Any]
    features: dict[str, FeatureSpec]
    stats: dict[str, dict[str, np.ndarray]]
    tasks: list[str]
    episodes: list[EpisodeRecord]
    # Subtask texts by subtask_index when the dataset has per-frame subtask labels, else None.
    subtasks: list[str] | None = None

    @property
    def version(self) -> str:
        return self.info["codebase_version"]

    @property
    def fps(self) -> float:
        return self.info["fps"]

    @property
    def total_frames(self) -> int:
        return self.episodes[-1].dataset_to_index if self.episodes else 0

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, s in self.features.items() if is_visual(s)]

    @property
    def video_keys(self) -> list[str]:
        return [k for k, s in self.features.items() if s.dtype == "video"]

    def data_file(self, ep: EpisodeRecord) -> Path:
        tpl = self.info["data_path"]
        if self.version == V21:
            rel = tpl.format(episode_chunk=ep.data_chunk_index, episode_index=ep.episode_index)
        else:
            rel = tpl.format(chunk_index=ep.data_chunk_index, file_index=ep.data_file_index)
        return self.root / rel

    def video_file(self, ep: EpisodeRecord, key: str) -> Path:
        ref = ep.videos[key]
        tpl = self.info["video_path"]
        if self.version == V21:
            rel = tpl.format(episode_chunk=ref.chunk_index, video_key=key, episode_index=ep.episode_index)
        else:
            rel = tpl.format(video_key=key, chunk_index=ref.chunk_index, file_index=ref.file_index)
        return self.root / rel

    def video_start(self, ep: EpisodeRecord, key: str) -> int:
        """Position (frame number in the file) of the episode's first frame."""
        return round(ep.videos[key].from_timestamp * self.fps)


# ---------------------------------------------------------------------------------------------- load


def load_meta(root: Path | str) -> DatasetMeta:
    """Read and cross-check the metadata of a v3.0 or v2.1 dataset; DatasetError names any bad file."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    info_path = root / INFO_PATH
    checked = validate_info(read_json(info_path), info_path)
    specs: dict[str, FeatureSpec] = checked.pop("_specs")
    info = checked
    if info["codebase_version"] == V30:
        tasks = _load_tasks_parquet(root / TASKS_PARQUET_PATH)
        episodes = _load_episodes_v30(root, specs)
    else:
        tasks = _load_tasks_jsonl(root / TASKS_JSONL_PATH)
        episodes = _load_episodes_v21(root, info, specs)
    _check_episodes(root, info, episodes, tasks)
    subtasks = load_subtasks(root, info["codebase_version"]) if SUBTASK_INDEX in specs else None
    stats_path = root / STATS_PATH
    if stats_path.exists():
        stats = stats_from_json(read_json(stats_path), str(stats_path))
    elif episodes and all(ep.stats for ep in episodes):
        stats = aggregate_stats([ep.stats for ep in episodes])
    else:
        stats = {}
    return DatasetMeta(root, info, specs, stats, tasks, episodes, subtasks)


def subtasks_path(root: Path, version: str) -> Path:
    """Where the subtask list of a `version` dataset lives (parquet in v3.0, jsonl in v2.1)."""
    return root / (SUBTASKS_PARQUET_PATH if version == V30 else SUBTASKS_JSONL_PATH)


def load_subtasks(root: Path, version: str) -> list[str]:
    """The subtask texts by subtask_index; DatasetError when the data has the column but the list is missing."""
    path = subtasks_path(root, version)
    if not path.is_file():
        raise DatasetError(
            f"{root}: the data has a {SUBTASK_INDEX!r} column but {path.relative_to(root)} is missing; "
            f"restore it, or relabel with `vlaforge dataset add-subtasks {root} --overwrite`"
        )
    if version == V30:
        return _load_index_parquet(path, "subtask")
    rows = read_jsonl(path)
    try:
        return _tasks_by_index(path, [r[SUBTASK_INDEX] for r in rows], [str(r["subtask"]) for r in rows])
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{path}: every line needs {SUBTASK_INDEX!r} and 'subtask' ({e})") from e


def _load_tasks_parquet(path: Path) -> list[str]:
    return _load_index_parquet(path, "task")


def _load_index_parquet(path: Path, name: str) -> list[str]:
    """tasks.parquet / subtasks.parquet: text column (or pandas index) `name`, integer column `<name>_index`."""
    table = read_parquet(path)
    names = table.column_names
    text_col = name if name in names else "__index_level_0__" if "__index_level_0__" in names else None
    if text_col is None or f"{name}_index" not in names:
        raise DatasetError(f"{path}: expected columns {name!r} and '{name}_index', found {names}")
    return _tasks_by_index(
        path, table.column(f"{name}_index").to_pylist(), [str(t) for t in table.column(text_col).to_pylist()]
    )


def _load_tasks_jsonl(path: Path) -> list[str]:
    rows = read_jsonl(path)
    try:
        return _tasks_by_index(path, [r["task_index"] for r in rows], [r["task"] for r in rows])
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{path}: every line needs 'task_index' and 'task' ({e})") from e


def _tasks_by_index(path: Path, indices: list[Any], texts: list[str]) -> list[str]:
    order = sorted(range(len(indices)), key=lambda i: indices[i])
    if [indices[i] for i in order] != list(range(len(indices))):
        raise DatasetError(f"{path}: task_index values must be 0..{len(indices) - 1}, got {sorted(indices)}")
    return [texts[i] for i in order]


def _split_stats_columns(row: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    stats: dict[str, dict[str, np.ndarray]] = {}
    for name, value in row.items():
        if not name.startswith("stats/") or value is None:
            continue
        feature, stat = name[len("stats/") :].rsplit("/", 1)
        stats.setdefault(feature, {})[stat] = np.asarray(
            value, dtype=np.int64 if stat == "count" else np.float64
        )
    return stats


def _load_episodes_v30(root: Path, specs: dict[str, FeatureSpec]) -> list[EpisodeRecord]:
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"missing episode metadata: no {EPISODES_DIR}/chunk-*/file-*.parquet under {root}")
    tables = [read_parquet(f) for f in files]
    table = pa.concat_tables(tables, promote_options="default")
    required = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
    required += ["dataset_from_index", "dataset_to_index"]
    video_keys = [k for k, s in specs.items() if s.dtype == "video"]
    for key in video_keys:
        required += [
            f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
        ]
    absent = [c for c in required if c not in table.column_names]
    if absent:
        raise DatasetError(f"{root / EPISODES_DIR}: episode metadata lacks column(s) {absent}")
    episodes = []
    for row in table.to_pylist():
        videos = {
            key: VideoRef(
                int(row[f"videos/{key}/chunk_index"]),
                int(row[f"videos/{key}/file_index"]),
                float(row[f"videos/{key}/from_timestamp"]),
                float(row[f"videos/{key}/to_timestamp"]),
            )
            for key in video_keys
        }
        episodes.append(
            EpisodeRecord(
                episode_index=int(row["episode_index"]),
                length=int(row["length"]),
                tasks=[str(t) for t in (row["tasks"] or [])],
                dataset_from_index=int(row["dataset_from_index"]),
                dataset_to_index=int(row["dataset_to_index"]),
                data_chunk_index=int(row["data/chunk_index"]),
                data_file_index=int(row["data/file_index"]),
                videos=videos,
                stats=_split_stats_columns(row),
            )
        )
    return sorted(episodes, key=lambda e: e.episode_index)


def _load_episodes_v21(
    root: Path, info: dict[str, Any], specs: dict[str, FeatureSpec]
) -> list[EpisodeRecord]:
    path = root / EPISODES_JSONL_PATH
    rows = read_jsonl(path)
    stats_path = root / EPISODES_STATS_JSONL_PATH
    ep_stats: dict[int, dict] = {}
    if stats_path.exists():
        for r in read_jsonl(stats_path):
            if "episode_index" not in r or "stats" not in r:
                raise DatasetError(f"{stats_path}: every line needs 'episode_index' and 'stats'")
            ep_stats[int(r["episode_index"])] = stats_from_json(r["stats"], str(stats_path))
    chunks_size = int(info["chunks_size"])
    fps = float(info["fps"])
    video_keys = [k for k, s in specs.items() if s.dtype == "video"]
    episodes, start = [], 0
    try:
        rows = sorted(rows, key=lambda r: int(r["episode_index"]))
        for r in rows:
            idx, length = int(r["episode_index"]), int(r["length"])
            chunk = idx // chunks_size
            episodes.append(
                EpisodeRecord(
                    episode_index=idx,
                    length=length,
                    tasks=[str(t) for t in r.get("tasks", [])],
                    dataset_from_index=start,
                    dataset_to_index=start + length,
                    data_chunk_index=chunk,
                    data_file_index=idx,
                    videos={k: VideoRef(chunk, idx, 0.0, length / fps) for k in video_keys},
                    stats=ep_stats.get(idx, {}),
                )
            )
            start += length
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: every line needs integer 'episode_index' and 'length' ({e})") from e
    return episodes


def _check_episodes(
    root: Path, info: dict[str, Any], episodes: list[EpisodeRecord], tasks: list[str]
) -> None:
    where = root / (EPISODES_DIR if info["codebase_version"] == V30 else EPISODES_JSONL_PATH)
    ids = [e.episode_index for e in episodes]
    if ids != list(range(len(episodes))):
        raise DatasetError(
            f"{where}: episode_index values must be 0..{len(episodes) - 1} without gaps, got {ids[:10]}..."
        )
    if len(episodes) != info["total_episodes"]:
        raise DatasetError(
            f"{root / INFO_PATH}: total_episodes is {info['total_episodes']} but {where} lists {len(episodes)} episodes"
        )
    start = 0
    for e in episodes:
        if e.length <= 0 or e.dataset_from_index != start or e.dataset_to_index != start + e.length:
            raise DatasetError(
                f"{where}: episode {e.episode_index} spans [{e.dataset_from_index}, {e.dataset_to_index}) with length "
                f"{e.length}; expected [{start}, {start + e.length})"
            )
        unknown = [t for t in e.tasks if t not in tasks]
        if unknown:
            raise DatasetError(
                f"{where}: episode {e.episode_index} names task(s) {unknown} that are not in the task list"
            )
        start += e.length
    if start != info["total_frames"]:
        raise DatasetError(
            f"{root / INFO_PATH}: total_frames is {info['total_frames']} but the episodes hold {start}"
        )


# --------------------------------------------------------------------------------------------- write


def _tasks_table(tasks: list[str], name: str = "task") -> pa.Table:
    """tasks.parquet as LeRobot writes it with pandas: column task_index, index named 'task'.

    name="subtask" gives subtasks.parquet in the same layout (column subtask_index, index 'subtask').
    """
    index = f"{name}_index"
    table = pa.table({index: pa.array(range(len(tasks)), pa.int64()), name: pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": [name],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": index,
                "field_name": index,
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": name,
                "field_name": name,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def episode_row_v30(ep: EpisodeRecord, video_keys: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "episode_index": ep.episode_index,
        "tasks": list(ep.tasks),
        "length": ep.length,
        "data/chunk_index": ep.data_chunk_index,
        "data/file_index": ep.data_file_index,
        "dataset_from_index": ep.dataset_from_index,
        "dataset_to_index": ep.dataset_to_index,
    }
    for key in video_keys:
        ref = ep.videos[key]
        row[f"videos/{key}/chunk_index"] = ref.chunk_index
        row[f"videos/{key}/file_index"] = ref.file_index
        row[f"videos/{key}/from_timestamp"] = float(ref.from_timestamp)
        row[f"videos/{key}/to_timestamp"] = float(ref.to_timestamp)
    for key, d in ep.stats.items():
        for stat, value in d.items():
            row[f"stats/{key}/{stat}"] = np.asarray(value).tolist()
    row["meta/episodes/chunk_index"] = 0
    row["meta/episodes/file_index"] = 0
    return row


def write_meta(
    root: Path,
    info: dict[str, Any],
    stats: dict[str, dict[str, np.ndarray]],
    tasks: list[str],
    episodes: list[EpisodeRecord],
    subtasks: list[str] | None = None,
) -> None:
    """Write meta/ for info["codebase_version"]; the data and video files are written by the caller.

    subtasks: the subtask texts by subtask_index, for datasets with a subtask_index column.
    """
    version = info["codebase_version"]
    write_json(root / INFO_PATH, info)
    if subtasks is not None:
        write_subtasks(root, version, subtasks)
    write_json(root / STATS_PATH, stats_to_json(stats))
    video_keys = [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
    if version == V30:
        pq.write_table(_tasks_table(tasks), root / TASKS_PARQUET_PATH)
        path = root / V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([episode_row_v30(ep, video_keys) for ep in episodes]), path)
    else:
        write_jsonl(root / TASKS_JSONL_PATH, [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
        write_jsonl(
            root / EPISODES_JSONL_PATH,
            [
                {"episode_index": ep.episode_index, "tasks": list(ep.tasks), "length": ep.length}
                for ep in episodes
            ],
        )
        write_jsonl(
            root / EPISODES_STATS_JSONL_PATH,
            [{"episode_index": ep.episode_index, "stats": stats_to_json(ep.stats)} for ep in episodes],
        )


def write_subtasks(root: Path, version: str, subtasks: list[str]) -> None:
    """meta/subtasks.parquet (v3.0, same layout as tasks.parquet) or meta/subtasks.jsonl (v2.1)."""
    path = subtasks_path(root, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    if version == V30:
        pq.write_table(_tasks_table(subtasks, "subtask"), path)
    else:
        write_jsonl(path, [{SUBTASK_INDEX: i, "subtask": t} for i, t in enumerate(subtasks)])
