"""Video on disk with PyAV: streaming encoder, random-access frame reader, lossless re-muxing.

Frames of a file are addressed by *position* p = round(time * fps): v2.1 files hold one
episode (p = frame_index), v3.0 files hold many episodes back to back (p = round(from_timestamp
* fps) + frame_index). The encoder forces a keyframe at every episode start, so each episode's
segment decodes on its own and can be cut out or concatenated by copying packets.

Why the reader is fast (measured on 128x128 h264 in benchmarks/bench_loading.py):
* containers stay open per process (LRU), reopened after fork, so DataLoader workers never
  share FFmpeg state and never pay the open cost twice;
* a read seeks to the keyframe at or before the first wanted frame and decodes forward once
  for all wanted frames (a history window is one pass); a short GOP bounds that walk;
* a read that continues just after the previous one keeps decoding without seeking;
* one reusable single-threaded `VideoReformatter` converts yuv420p -> rgb24;
  `frame.to_ndarray(format=...)` builds a new swscale context per call (~0.4 ms at 128x128,
  more than decoding the frame), and swscale's default threading costs another ~0.1 ms.

Colour accuracy: swscale's default yuv->rgb path truncates instead of rounding and replicates
chroma, which darkens every channel by ~1.2 grey levels (MAE 1.4 on smooth 128x128 frames before
any compression). ACCURATE_RND | FULL_CHR_H_INT removes the bias (MAE 0.35) for ~0.1 ms per
128x128 frame; it is the default (`accurate_color=True`). Encoding (rgb->yuv) is already exact.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.errors import DatasetError
from vlaforge.data.format import VIDEO_CODECS

DEFAULT_GOP = 4  # keyframe interval: measured sweet spot of size vs random access (docs/dataset_format.md)
DEFAULT_CRF = {"h264": 23, "av1": 30}
_CONTINUE_WITHIN = 16  # keep decoding instead of seeking when the next wanted frame is this close


def _av():
    import av

    return av


def _interpolation(accurate_color: bool):
    if not accurate_color:
        return None
    from av.video.reformatter import Interpolation

    return Interpolation.AREA | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


class RGBConverter:
    """yuv -> uint8 (H, W, 3) with one reused, single-threaded swscale context."""

    def __init__(self, accurate_color: bool = True):
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()
        self._interpolation = _interpolation(accurate_color)
        # Recent PyAV (18 here) asks swscale for automatic threading unless told `threads=1`; older PyAV (15, which
        # LeRobot 0.6.1 pins) has no `threads` argument and leaves swscale at its single-threaded default.
        self._threads: dict[str, int] = {"threads": 1}

    def __call__(self, frame: Any) -> np.ndarray:
        try:
            out = self._reformatter.reformat(
                frame, format="rgb24", interpolation=self._interpolation, **self._threads
            )
        except TypeError as e:
            if not self._threads or "threads" not in str(e):
                raise
            self._threads = {}  # an older PyAV: no `threads` argument
            out = self._reformatter.reformat(frame, format="rgb24", interpolation=self._interpolation)
        return out.to_ndarray()


def encoder_options(codec: str, crf: int | None, preset: str | None) -> dict[str, str]:
    if codec == "h264":
        # bf=0: no frame reordering, so packet order == display order (cheap seeks, exact remux).
        return {
            "crf": str(crf if crf is not None else DEFAULT_CRF["h264"]),
            "preset": preset or "veryfast",
            "bf": "0",
        }
    if codec == "av1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only; SVT-AV1 prints a banner per encoder otherwise
        return {"crf": str(crf if crf is not None else DEFAULT_CRF["av1"]), "preset": preset or "10"}
    raise DatasetError(f"unknown video codec {codec!r}; expected one of {sorted(VIDEO_CODECS)}")


class VideoSink:
    """One mp4 file being written: frames are encoded, or packets copied from other files.

    mode "encode": `write_frames` encodes uint8 (T, H, W, 3) frames with `codec`.
    mode "copy":   `copy_segment` appends packets of an existing file's segment unchanged
                   (the stream is created from the first segment's stream parameters).
    """

    def __init__(
        self,
        path: Path,
        *,
        fps: float,
        height: int,
        width: int,
        codec: str = "h264",
        gop: int = DEFAULT_GOP,
        crf: int | None = None,
        preset: str | None = None,
        mode: str = "encode",
    ):
        av = _av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.height, self.width = height, width
        self.mode = mode
        self.frames_written = 0
        self.bytes_written = 0  # muxed packet bytes; the file on disk lags behind (buffered)
        self._fps_frac = Fraction(fps).limit_denominator(1001)
        self._container = av.open(str(self.path), "w", format="mp4")
        self._stream = None
        if mode == "encode":
            stream = self._container.add_stream(VIDEO_CODECS[codec], rate=self._fps_frac)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / self._fps_frac
            stream.codec_context.gop_size = gop
            stream.codec_context.thread_count = 1
            stream.options = encoder_options(codec, crf, preset)
            self._stream = stream
        elif mode != "copy":
            raise ValueError(f"VideoSink mode must be 'encode' or 'copy', got {mode!r}")

    def write_frames(self, frames: np.ndarray) -> int:
        """Append frames (T, H, W, 3) uint8; the first becomes a keyframe. Returns its position."""
        av = _av()
        start = self.frames_written
        with keep_thread_scheduling():
            for t, img in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                vf.pts = start + t
                if t == 0:
                    vf.pict_type = av.video.frame.PictureType.I  # episode starts on a keyframe
                self._mux(self._stream.encode(vf))
        self.frames_written += len(frames)
        return start

    def copy_segment(self, src: Path, start: int, length: int, fps: float) -> int:
        """Append positions [start, start + length) of `src` by copying packets. Returns the new start."""
        new_start = self.frames_written
        with open_input(src) as container:
            in_stream = container.streams.video[0]
            if self._stream is None:
                self._stream = self._container.add_stream_from_template(in_stream, opaque=True)
            copied = 0
            out_tb = 1 / self._fps_frac
            if start > 0 and in_stream.time_base:
                # Jump to the keyframe at or before the segment (episodes start on keyframes) instead of
                # demuxing every earlier packet: copying the episodes of one file one by one stays linear.
                target = (start - 0.5) / fps  # seconds, half a frame early against rounding
                container.seek(max(0, int(target / in_stream.time_base)), stream=in_stream, backward=True)
            for packet in container.demux(in_stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pos = round(float(packet.pts * in_stream.time_base) * fps)
                if pos < start:
                    continue
                if pos >= start + length:
                    break
                if copied == 0 and not packet.is_keyframe:
                    raise DatasetError(
                        f"{src}: segment at frame {start} does not start on a keyframe; re-encode"
                    )
                packet.pts = packet.dts = new_start + (pos - start)
                packet.time_base = out_tb
                packet.stream = self._stream
                self._mux([packet])
                copied += 1
        if copied != length:
            raise DatasetError(f"{src}: expected {length} frames from position {start}, found {copied}")
        self.frames_written += length
        return new_start

    def _mux(self, packets: Any) -> None:
        for packet in packets:
            self.bytes_written += packet.size
            self._container.mux(packet)

    def size_mb(self) -> float:
        return self.bytes_written / 2**20

    def close(self) -> None:
        if self._container is None:
            return
        with keep_thread_scheduling():
            if self.mode == "encode" and self._stream is not None:
                self._mux(self._stream.encode())
            self._container.close()
        self._container = None


@contextlib.contextmanager
def keep_thread_scheduling() -> Iterator[None]:
    """Give the calling thread back the scheduling policy it had before the block.

    SVT-AV1 (FFmpeg's libsvtav1, our AV1 encoder), run as root, switches the thread that opens the
    encoder to SCHED_FIFO at priority 99, and every thread that thread creates afterwards inherits it
    (torch's OpenMP workers, servers, evaluation workers). On a small machine real-time threads that
    spin-wait starve the ordinary threads they wait for, and the process livelocks. Without root the
    switch fails and nothing changes.
    """
    if not hasattr(os, "sched_getscheduler"):  # not Linux
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


class open_input:
    """Context manager around `av.open` that turns FFmpeg errors into DatasetError naming the file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._container = None

    def __enter__(self):
        self._container = _open_video(self.path)
        return self._container

    def __exit__(self, *exc: Any) -> None:
        self._container.close()


def _open_video(path: Path):
    av = _av()
    if not path.is_file():
        raise DatasetError(f"missing video file {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise DatasetError(f"cannot open video {path} (truncated or not an mp4?): {e}") from e
    if not container.streams.video:
        container.close()
        raise DatasetError(f"video file {path} has no video stream")
    return container


@dataclass
class _OpenVideo:
    container: Any
    stream: Any
    decoder: Iterator[Any] | None = None  # live decode generator after the last read
    last_pos: int = -(10**9)  # position of the last decoded frame


class FrameReader:
    """Decodes requested frames of mp4 files, keeping containers open per process.

    Safe to copy into DataLoader workers: state is dropped when the process id changes and
    when the reader is pickled.
    """

    def __init__(self, fps: float, max_open: int = 32, accurate_color: bool = True):
        self.fps = fps
        self.max_open = max_open
        self.accurate_color = accurate_color
        self._open: OrderedDict[Path, _OpenVideo] = OrderedDict()
        self._pid = os.getpid()
        self._to_rgb: RGBConverter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"fps": self.fps, "max_open": self.max_open, "accurate_color": self.accurate_color}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def close(self) -> None:
        for v in self._open.values():
            v.container.close()
        self._open.clear()

    def _get(self, path: Path) -> _OpenVideo:
        if os.getpid() != self._pid:  # forked: the parent's FFmpeg state is not ours to use
            self._open = OrderedDict()
            self._pid = os.getpid()
            self._to_rgb = None
        v = self._open.get(path)
        if v is None:
            container = _open_video(path)
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # frames are tiny; threads only add latency here
            v = _OpenVideo(container, stream)
            self._open[path] = v
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].container.close()
        else:
            self._open.move_to_end(path)
        return v

    def read(self, path: Path, positions: np.ndarray) -> np.ndarray:
        """Frames at sorted positions of `path` -> uint8 (K, H, W, 3)."""
        positions = np.asarray(positions, dtype=np.int64)
        wanted = sorted(set(positions.tolist()))
        v = self._get(path)
        got: dict[int, np.ndarray] = {}
        try:
            if not (v.decoder is not None and v.last_pos < wanted[0] <= v.last_pos + _CONTINUE_WITHIN):
                self._seek(v, wanted[0])
            self._decode_into(v, wanted, got)
            if wanted[0] not in got:
                # the seek landed after the frame (a file with a bad index): decode from the start
                self._seek(v, 0, exact=True)
                self._decode_into(v, wanted, got)
        except _av().FFmpegError as e:
            v.decoder = None
            raise DatasetError(f"failed to decode {path} near frame position {wanted[0]}: {e}") from e
        missing = [p for p in wanted if p not in got]
        if missing:
            v.decoder = None
            raise DatasetError(
                f"video {path} has no frame at position(s) {missing[:5]} (time {missing[0] / self.fps:.4f}s); "
                "the file is shorter than the episode metadata says (truncated?)"
            )
        return np.stack([got[p] for p in positions.tolist()])  # (K, H, W, 3)

    def _seek(self, v: _OpenVideo, position: int, exact: bool = False) -> None:
        tb = v.stream.time_base
        target = 0 if exact else int(Fraction(position) / Fraction(self.fps).limit_denominator(1001) / tb)
        v.container.seek(target, stream=v.stream, backward=True, any_frame=False)
        v.decoder = v.container.decode(v.stream)
        v.last_pos = -(10**9)

    def _decode_into(self, v: _OpenVideo, wanted: list[int], got: dict[int, np.ndarray]) -> None:
        last = wanted[-1]
        need = set(wanted) - set(got)
        for frame in v.decoder:
            pos = round(frame.time * self.fps) if frame.pts is not None else v.last_pos + 1
            v.last_pos = pos
            if pos in need:
                if self._to_rgb is None:
                    self._to_rgb = RGBConverter(self.accurate_color)
                got[pos] = self._to_rgb(frame)
                need.discard(pos)
            if pos >= last or not need:
                return
        v.decoder = None  # end of file


def decode_all(path: Path, accurate_color: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in seconds, rgb24 frame) for every frame of `path`, in order."""
    to_rgb = RGBConverter(accurate_color)
    with open_input(path) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                yield frame.time, to_rgb(frame)
        except _av().FFmpegError as e:
            raise DatasetError(f"failed to decode {path}: {e}") from e


@dataclass(frozen=True)
class VideoProbe:
    codec: str
    width: int
    height: int
    pix_fmt: str
    extradata: bytes
    frames: int
    keyframes: tuple[int, ...]  # positions of keyframes
    reordered: bool  # True when packets are not in display order (B-frames)


def probe(path: Path, fps: float) -> VideoProbe:
    """Read packet headers only (no decoding): codec parameters and keyframe positions."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        keyframes, last, reordered, n = [], -1, False, 0
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pos = round(float(packet.pts * stream.time_base) * fps)
                reordered |= pos < last
                last = max(last, pos)
                if packet.is_keyframe:
                    keyframes.append(pos)
                n += 1
        except _av().FFmpegError as e:
            raise DatasetError(f"failed to read packets of {path}: {e}") from e
        name = {"libdav1d": "av1", "libaom-av1": "av1"}.get(ctx.name, ctx.name)
        return VideoProbe(
            name,
            ctx.width,
            ctx.height,
            str(ctx.format.name if ctx.format else ""),
            bytes(ctx.extradata or b""),
            n,
            tuple(keyframes),
            reordered,
        )
