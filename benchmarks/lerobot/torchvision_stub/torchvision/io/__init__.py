"""`torchvision.io.VideoReader` with the PyAV backend: what LeRobot's pyav decoding path calls.

LeRobot 0.3.2 (`lerobot/datasets/video_utils.py: decode_video_frames_torchvision`) does, per sample
and camera: ``set_video_backend("pyav")``, ``VideoReader(path, "video")``, ``seek(first_ts,
keyframes_only=True)``, iterates frames (``{"data": uint8 (3, H, W), "pts": seconds}``) until the last
wanted timestamp, then ``reader.container.close()``. The calls below are the ones torchvision's
pyav backend makes for those operations, so the decoding work is the same as with the real package.
"""

from __future__ import annotations

import io as _io
from collections.abc import Iterator
from typing import Any

import av
import torch


class VideoReader:
    """Frame-by-frame reader of one stream of a container (torchvision's fine-grained video API, pyav only).

    src: a file path (or bytes). stream: "video" or "video:<id>" ("audio" streams are decoded too).
    """

    def __init__(self, src: str | bytes = "", stream: str = "video", num_threads: int = 0) -> None:
        from torchvision import get_video_backend

        self.backend = get_video_backend()
        if self.backend != "pyav":
            raise RuntimeError(
                f"torchvision stub: VideoReader supports the 'pyav' backend only, not {self.backend!r}"
            )
        if isinstance(src, bytes):
            src = _io.BytesIO(src)
        elif not isinstance(src, str) or src == "":
            raise TypeError(f"VideoReader: src must be a non-empty path or bytes, got {src!r}")
        del num_threads  # the pyav backend of torchvision ignores it too
        self.container = av.open(src, metadata_errors="ignore")
        kind, _, index = stream.partition(":")
        self.pyav_stream = {kind: int(index) if index else 0}
        self._frames = self.container.decode(**self.pyav_stream)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        """The next decoded frame: {"data": uint8 tensor (3, H, W) for video, "pts": seconds}."""
        try:
            frame = next(self._frames)
        except av.error.EOFError as e:
            raise StopIteration from e
        pts = float(frame.pts * frame.time_base)
        if "video" in self.pyav_stream:
            data = torch.tensor(frame.to_rgb().to_ndarray()).permute(2, 0, 1)  # (3, H, W) uint8
        else:
            data = torch.tensor(frame.to_ndarray()).permute(1, 0)  # (samples, channels)
        if data.numel() == 0:
            raise StopIteration
        return {"data": data, "pts": pts}

    def seek(self, time_s: float, keyframes_only: bool = False) -> VideoReader:
        """Seek to the keyframe at or before `time_s` (PyAV cannot seek exactly; torchvision warns about
        ``keyframes_only=False`` and does the same keyframe seek)."""
        stream = self.container.streams.get(**self.pyav_stream)[0]
        offset = int(round(max(time_s, 0.0) / stream.time_base))
        del keyframes_only
        self.container.seek(offset, backward=True, any_frame=False, stream=stream)
        self._frames = self.container.decode(**self.pyav_stream)
        return self

    def get_metadata(self) -> dict[str, Any]:
        """{"video": {"fps": [...], "duration": [...]}} per stream type, as torchvision's pyav backend."""
        out: dict[str, Any] = {}
        for s in self.container.streams:
            rate_key = "fps" if s.type == "video" else "framerate"
            entry = out.setdefault(s.type, {rate_key: [], "duration": []})
            rate = s.average_rate if s.average_rate is not None else s.sample_rate
            entry["duration"].append(float(s.duration * s.time_base))
            entry[rate_key].append(float(rate))
        return out


def decode_image(*_args: Any, **_kwargs: Any) -> torch.Tensor:
    """Not provided. LeRobot >= 0.5 imports it at the top of ``lerobot/transforms/transforms.py`` (reached
    through ``lerobot.configs``); only its JPEG augmentation calls it, which nothing here enables."""
    raise NotImplementedError(
        "torchvision stub: io.decode_image is not provided (LeRobot's JPEG augmentation)"
    )


def encode_jpeg(*_args: Any, **_kwargs: Any) -> torch.Tensor:
    """Not provided; imported beside ``decode_image`` by LeRobot >= 0.5, called only by the same augmentation."""
    raise NotImplementedError(
        "torchvision stub: io.encode_jpeg is not provided (LeRobot's JPEG augmentation)"
    )


__all__ = ["VideoReader", "decode_image", "encode_jpeg"]
