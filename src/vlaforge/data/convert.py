"""Convert a dataset between LeRobot v3.0 and v2.1, preserving its content; merge datasets.

Rows are copied value for value; statistics (global and per episode) are carried over; video is
re-muxed (packets copied, pixels bit-identical) whenever every episode of a camera starts on a
keyframe in a stream without frame reordering and all files share codec parameters, which is
always the case for datasets written by DatasetWriter. Otherwise that camera is decoded and
re-encoded with `codec` (a second lossy generation; `reencode=True` forces it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.data.dataset import Dataset
from vlaforge.data.errors import DatasetError
from vlaforge.data.format import DEFAULT_FEATURES, SUBTASK_INDEX, SUPPORTED_VERSIONS, VIDEO_CODECS
from vlaforge.data.meta import DatasetMeta, load_meta
from vlaforge.data.video import probe
from vlaforge.data.writer import DatasetWriter, VideoSegment


def copy_plan(meta: DatasetMeta, key: str) -> tuple[str | None, str]:
    """Can camera `key` be re-muxed without re-encoding? Returns (its codec, "") or (None, why not)."""
    if not all(key in ep.stats for ep in meta.episodes):
        return None, "per-episode statistics are missing"
    files: dict[Path, list[int]] = {}
    for ep in meta.episodes:
        files.setdefault(meta.video_file(ep, key), []).append(meta.video_start(ep, key))
    params = set()
    for path, starts in files.items():
        p = probe(path, meta.fps)
        if p.codec not in VIDEO_CODECS:
            return None, f"{path.name} is {p.codec}, not one of {sorted(VIDEO_CODECS)}"
        if p.reordered:
            return None, f"{path.name} reorders frames (B-frames)"
        keyframes = set(p.keyframes)
        if any(s not in keyframes for s in starts):
            return None, f"an episode in {path.name} does not start on a keyframe"
        params.add((p.codec, p.width, p.height, p.pix_fmt, p.extradata))
    if len(params) > 1:
        return None, "video files differ in codec parameters"
    return params.pop()[0], ""


def convert_dataset(
    src: str | Path,
    dst: str | Path,
    to: str = "v3.0",
    *,
    overwrite: bool = False,
    reencode: bool = False,
    codec: str | None = None,
    verbose: bool = False,
) -> Path:
    """Write the dataset at `src` to `dst` in layout `to` ("v3.0" or "v2.1"). Returns `dst`."""
    src, dst = Path(src), Path(dst)
    if to not in SUPPORTED_VERSIONS:
        raise DatasetError(f"--to must be one of {list(SUPPORTED_VERSIONS)}, got {to!r}")
    if src.resolve() == dst.resolve():
        raise DatasetError(f"source and destination are the same directory {src}; choose another destination")
    meta = load_meta(src)
    info = meta.info
    copy_codec: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for key in meta.video_keys:
        found, why = (None, "re-encoding was requested") if reencode else copy_plan(meta, key)
        if found is not None:
            copy_codec[key] = found
        else:
            reasons[key] = why
    copy_keys = list(copy_codec)
    src_codecs = {info["features"][k].get("info", {}).get("video.codec") for k in meta.video_keys}
    out_codec = codec or next((c for c in src_codecs if c in VIDEO_CODECS), "h264")
    if verbose:
        for key in meta.video_keys:
            print(
                f"{key}: "
                + ("re-mux (lossless)" if key in copy_keys else f"re-encode as {out_codec}: {reasons[key]}")
            )

    decode = [k for k in meta.camera_keys if k not in copy_keys]
    ds = Dataset(src, cameras=decode)
    # subtask_index is written by the writer itself from the per-frame subtask texts.
    features = {k: s for k, s in meta.features.items() if k not in DEFAULT_FEATURES and k != SUBTASK_INDEX}
    writer = DatasetWriter(
        dst,
        fps=info["fps"],
        features=features,
        robot_type=info.get("robot_type") or "unknown",
        version=to,
        codec=out_codec,
        overwrite=overwrite,
        chunks_size=int(info.get("chunks_size") or 1000),
        data_files_size_in_mb=info.get("data_files_size_in_mb", 100),
        video_files_size_in_mb=info.get("video_files_size_in_mb", 500),
        subtasks=meta.subtasks is not None,
    )
    with writer:
        _copy_episodes(writer, src, meta, ds, features, copy_codec)
        writer.finalize(stats=meta.stats or None)
    return dst


def _copy_episodes(
    writer: DatasetWriter,
    src: Path,
    meta: DatasetMeta,
    ds: Dataset,
    features: dict,
    copy_codec: dict[str, str],
    progress: object = None,
) -> None:
    """Append every episode of `src` to `writer`: video re-muxed for `copy_codec`'s cameras."""
    for e, ep in enumerate(meta.episodes):
        data = ds.episode(e)
        task_ids = np.unique(data["task_index"])
        if len(task_ids) != 1:
            raise DatasetError(
                f"{src}: episode {e} has {len(task_ids)} tasks; conversion supports one task per episode"
            )
        frames = {k: data[k] for k in features if k not in copy_codec}
        videos = {
            k: VideoSegment(meta.video_file(ep, k), meta.video_start(ep, k), ep.length, copy_codec[k])
            for k in copy_codec
        }
        writer.add_encoded_episode(frames, data["task"], videos, ep.stats, subtasks=data.get("subtasks"))
        if progress is not None:
            progress.update(1)  # type: ignore[attr-defined]


def merge_datasets(
    sources: list[str | Path],
    dst: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Concatenate datasets with the same features, fps and robot into one at `dst` (v3.0).

    Episodes keep their order (source by source); video is re-muxed without re-encoding wherever
    `convert_dataset` would; statistics are recomputed over the merged episodes. Datasets whose
    features differ are refused with the feature names and shapes.
    """
    if len(sources) < 2:
        raise DatasetError("merge needs at least two source datasets")
    dst = Path(dst)
    metas = [load_meta(Path(s)) for s in sources]
    first = metas[0]

    def layout(meta: DatasetMeta) -> dict[str, tuple]:
        return {
            k: (s.dtype, tuple(s.shape))
            for k, s in meta.features.items()
            if k not in DEFAULT_FEATURES and k != SUBTASK_INDEX
        }

    for src, meta in zip(sources[1:], metas[1:]):
        if layout(meta) != layout(first):
            raise DatasetError(
                f"cannot merge {src} into {sources[0]}: features differ ({layout(meta)} vs {layout(first)})"
            )
        if float(meta.fps) != float(first.fps) or meta.info.get("robot_type") != first.info.get("robot_type"):
            raise DatasetError(
                f"cannot merge {src}: fps/robot {meta.fps}/{meta.info.get('robot_type')} vs "
                f"{first.fps}/{first.info.get('robot_type')} of {sources[0]}"
            )
        if (meta.subtasks is None) != (first.subtasks is None):
            raise DatasetError(f"cannot merge {src}: subtask labels present in only some of the datasets")
    plans = []
    for meta in metas:
        copy_codec = {}
        for key in meta.video_keys:
            found, _ = copy_plan(meta, key)
            if found is not None:
                copy_codec[key] = found
        plans.append(copy_codec)
    codecs = {c for plan in plans for c in plan.values()}
    out_codec = next(iter(codecs)) if len(codecs) == 1 else "h264"
    if len(codecs) > 1:  # one codec per merged file: re-encode everything else
        plans = [{k: c for k, c in plan.items() if c == out_codec} for plan in plans]
    features = {k: s for k, s in first.features.items() if k not in DEFAULT_FEATURES and k != SUBTASK_INDEX}
    info = first.info
    writer = DatasetWriter(
        dst,
        fps=info["fps"],
        features=features,
        robot_type=info.get("robot_type") or "unknown",
        codec=out_codec,
        overwrite=overwrite,
        subtasks=first.subtasks is not None,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(m.episodes) for m in metas), unit="ep", desc="merge")
    try:
        with writer:
            for src, meta, copy_codec in zip(sources, metas, plans):
                ds = Dataset(Path(src), cameras=[k for k in meta.camera_keys if k not in copy_codec])
                _copy_episodes(writer, Path(src), meta, ds, features, copy_codec, bar)
            writer.finalize()
    finally:
        if bar is not None:
            bar.close()
    return dst
