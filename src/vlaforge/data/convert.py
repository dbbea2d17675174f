"""Convert a dataset between LeRobot v3.0 and v2.1, preserving its content.

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
        for e, ep in enumerate(meta.episodes):
            data = ds.episode(e)
            task_ids = np.unique(data["task_index"])
            if len(task_ids) != 1:
                raise DatasetError(
                    f"{src}: episode {e} has {len(task_ids)} tasks; conversion supports one task per episode"
                )
            frames = {k: data[k] for k in features if k not in copy_keys}
            videos = {
                k: VideoSegment(meta.video_file(ep, k), meta.video_start(ep, k), ep.length, copy_codec[k])
                for k in copy_keys
            }
            writer.add_encoded_episode(frames, data["task"], videos, ep.stats, subtasks=data.get("subtasks"))
        writer.finalize(stats=meta.stats or None)
    return dst
