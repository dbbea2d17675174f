"""`dataset_summary(root)`: a readable overview of a dataset, from its metadata only (fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.data.format import DEFAULT_FEATURES, is_visual
from vlaforge.data.meta import load_meta


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def _vec(values: np.ndarray | None, max_items: int = 6) -> str:
    if values is None:
        return "-"
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    text = " ".join(f"{v:.3g}" for v in flat[:max_items])
    return f"[{text}{' ...' if flat.size > max_items else ''}]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def dataset_summary(root: str | Path) -> str:
    """Version, fps, episodes, frames, tasks, features (dtype/shape/stats) and disk size of `root`."""
    meta = load_meta(root)
    root = Path(root)
    info = meta.info
    lengths = np.array([e.length for e in meta.episodes])
    lines = [f"dataset   {root}"]
    lines.append(f"version   {meta.version}    fps {meta.fps}    robot_type {info.get('robot_type')}")
    duration = meta.total_frames / float(meta.fps)
    lines.append(
        f"episodes  {len(meta.episodes)}    frames {meta.total_frames} ({duration:.1f} s)    "
        f"length min/mean/max {lengths.min()}/{lengths.mean():.1f}/{lengths.max()}    tasks {len(meta.tasks)}"
    )
    data, videos, metadir = _size(root / "data"), _size(root / "videos"), _size(root / "meta")
    lines.append(
        f"disk      {_mb(data + videos + metadir)} (data {_mb(data)}, videos {_mb(videos)}, meta {_mb(metadir)})"
    )
    lines.append("")
    rows = [["feature", "dtype", "shape", "storage", "mean", "std", "min", "max"]]
    for key, spec in meta.features.items():
        if key in DEFAULT_FEATURES and key not in ("timestamp",):
            continue
        stats = meta.stats.get(key, {})
        storage = ""
        if spec.dtype == "video":
            vinfo = info["features"][key].get("info") or info["features"][key].get("video_info") or {}
            storage = f"{vinfo.get('video.codec', '?')} {vinfo.get('video.pix_fmt', '')}".strip()
        elif is_visual(spec):
            storage = "png in parquet"
        else:
            storage = "parquet"
        shape = "x".join(map(str, spec.shape)) if is_visual(spec) else str(tuple(spec.shape))
        rows.append(
            [key, spec.dtype, shape, storage] + [_vec(stats.get(s)) for s in ("mean", "std", "min", "max")]
        )
    lines += _table(rows)
    quantile_rows = [["feature", "q01", "q50", "q99"]]
    for key in meta.features:
        stats = meta.stats.get(key, {})
        if key not in DEFAULT_FEATURES and "q01" in stats:
            quantile_rows.append([key] + [_vec(stats.get(q)) for q in ("q01", "q50", "q99")])
    if len(quantile_rows) > 1:
        lines += [""] + _table(quantile_rows)
    lines.append("")
    counts: dict[str, int] = {}
    for ep in meta.episodes:
        for t in ep.tasks:
            counts[t] = counts.get(t, 0) + 1
    lines.append("tasks")
    for i, task in enumerate(meta.tasks[:20]):
        lines.append(f"  {i:>3}  {task}  ({counts.get(task, 0)} episodes)")
    if len(meta.tasks) > 20:
        lines.append(f"  ... {len(meta.tasks) - 20} more")
    return "\n".join(lines)
