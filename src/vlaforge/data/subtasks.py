"""Subtask labels on disk (π0.5): store per-frame "what am I doing now" texts in an existing dataset.

A dataset with labels stores them like its tasks: an int64 `subtask_index` column in the data files and
meta/subtasks.parquet (written by `DatasetWriter(subtasks=True)`, or afterwards by `write_subtask_labels`),
and its samples carry `item["subtask"]` (str), which `default_collate` turns into `batch["subtask"]`, a
list of B strings. Where the texts come from is not the dataset's business: Meta-World's expert phases
(reach -> grasp -> act) are derived in `vlaforge.envs.subtasks` (`vlaforge dataset add-subtasks`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.errors import DatasetError


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror `src` at `dst` with hard links (copies where the file system cannot link)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def _fresh(path: Path) -> Path:
    """Unlink `path` before rewriting it: in the linked tree it shares its content with the original."""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_table(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, _fresh(path))


def _with_column(table: Any, name: str, values: Any) -> Any:
    """`table` with column `name` set to `values` (replaced if present, else appended last)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def _hf_features_metadata(table: Any, name: str) -> Any:
    """Keep the Hugging Face `datasets` schema metadata (LeRobot-written files) in step with a new column."""
    meta = table.schema.metadata or {}
    if b"huggingface" not in meta:
        return table
    hf = json.loads(meta[b"huggingface"])
    hf.setdefault("info", {}).setdefault("features", {})[name] = {"dtype": "int64", "_type": "Value"}
    return table.replace_schema_metadata({**meta, b"huggingface": json.dumps(hf).encode()})


def write_subtask_labels(root: str | Path, labels: Sequence[Sequence[str]]) -> Path:
    """Store per-frame subtask texts (one list per episode) in the dataset at `root`, atomically.

    The texts get indices in first-seen order (as `DatasetWriter` numbers them). Existing labels are
    replaced. Returns `root`.
    """
    import pyarrow as pa

    from vlaforge.data.dataset import Dataset
    from vlaforge.data.format import (
        EPISODES_DIR,
        EPISODES_STATS_JSONL_PATH,
        INFO_PATH,
        STATS_PATH,
        SUBTASK_FEATURE,
        SUBTASK_INDEX,
        V30,
        read_json,
        read_jsonl,
        write_json,
        write_jsonl,
    )
    from vlaforge.data.meta import load_meta, write_subtasks
    from vlaforge.data.stats import compute_stats, stats_to_json
    from vlaforge.data.tabular import read_parquet

    root = Path(root)
    meta = load_meta(root)
    if len(labels) != len(meta.episodes):
        raise DatasetError(
            f"{root}: got subtask labels for {len(labels)} episodes, the dataset has {len(meta.episodes)}"
        )
    vocab: dict[str, int] = {}
    ids = np.empty(meta.total_frames, np.int64)  # (N,) by global frame index
    for ep, texts in zip(meta.episodes, labels, strict=True):
        if len(texts) != ep.length:
            raise DatasetError(
                f"episode {ep.episode_index}: {len(texts)} subtask texts for {ep.length} frames"
            )
        for t, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(
                    f"episode {ep.episode_index} frame {t}: subtask must be a non-empty string"
                )
            ids[ep.dataset_from_index + t] = vocab.setdefault(text, len(vocab))
    dtypes = {SUBTASK_INDEX: SUBTASK_FEATURE.dtype}

    tmp = root.parent / f".{root.name}.subtasks-{uuid.uuid4().hex[:8]}"
    _link_tree(root, tmp)
    try:
        # data files: every row gets the index of its frame's text (rows are matched by their global index)
        for path in sorted({meta.data_file(ep) for ep in meta.episodes}):
            table = read_parquet(path)
            index = table.column("index").to_numpy()
            if len(index) and (index.min() < 0 or index.max() >= len(ids)):
                raise DatasetError(f"{path}: 'index' values outside 0..{len(ids) - 1}")
            table = _with_column(table, SUBTASK_INDEX, pa.array(ids[index], pa.int64()))
            _write_table(_hf_features_metadata(table, SUBTASK_INDEX), tmp / path.relative_to(root))
        write_subtasks(tmp, meta.version, list(vocab))

        info = read_json(root / INFO_PATH)
        info["features"][SUBTASK_INDEX] = SUBTASK_FEATURE.to_json()
        write_json(_fresh(tmp / INFO_PATH), info)
        if (root / STATS_PATH).is_file():
            stats = read_json(root / STATS_PATH)
            stats.update(stats_to_json(compute_stats({SUBTASK_INDEX: ids[:, None]}, dtypes)))
            write_json(_fresh(tmp / STATS_PATH), stats)

        # per-episode statistics, as the writer keeps them
        ep_stats = {
            ep.episode_index: compute_stats(
                {SUBTASK_INDEX: ids[ep.dataset_from_index : ep.dataset_to_index, None]}, dtypes
            )
            for ep in meta.episodes
        }
        if meta.version == V30:
            for path in sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet")):
                table = read_parquet(path)
                rows = [ep_stats[int(e)][SUBTASK_INDEX] for e in table.column("episode_index").to_pylist()]
                for stat in rows[0] if rows else ():
                    values = pa.array([np.asarray(r[stat]).tolist() for r in rows])
                    table = _with_column(table, f"stats/{SUBTASK_INDEX}/{stat}", values)
                _write_table(table, tmp / path.relative_to(root))
        elif (root / EPISODES_STATS_JSONL_PATH).is_file():
            lines = read_jsonl(root / EPISODES_STATS_JSONL_PATH)
            for line in lines:
                line["stats"].update(stats_to_json(ep_stats[int(line["episode_index"])]))
            write_jsonl(_fresh(tmp / EPISODES_STATS_JSONL_PATH), lines)

        check = Dataset(tmp, cameras=[])  # the labelled copy must load before it replaces the original
        if check.meta.subtasks != list(vocab):
            raise DatasetError(f"{tmp}: the written subtask list does not read back")
        _swap(root, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _swap(root: Path, new: Path) -> None:
    """Put `new` at `root` (two renames, as DatasetWriter finalizes); the old tree is removed after."""
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(root, old)
    try:
        os.rename(new, root)
    except BaseException:
        os.rename(old, root)
        raise
    shutil.rmtree(old, ignore_errors=True)
