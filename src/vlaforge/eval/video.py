"""Rollout videos: cameras side by side, the instruction on top, SUCCESS / FAIL below.

Text is rendered once per video with matplotlib's Agg canvas into small banner images (no font
files or extra dependencies), then stacked with every frame; a thin bar under the cameras shows
the episode's progress. Encoded as H.264 (libx264, yuv420p) through PyAV so that browsers and
GitHub play the files.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from vlaforge.eval.results import EpisodeResult

SUCCESS_RGB = (30, 140, 60)
FAIL_RGB = (170, 40, 40)
BANNER_RGB = (25, 25, 25)
PROGRESS_RGB = (230, 180, 40)
FONT_PX = 14  # text height in pixels


def render_banner(
    text: str,
    width: int,
    *,
    background: tuple[int, int, int] = BANNER_RGB,
    color: tuple[int, int, int] = (255, 255, 255),
    font_px: int = FONT_PX,
    bold: bool = False,
) -> np.ndarray:
    """Render `text` (wrapped to `width`) into a uint8 (h, width, 3) image, h fitted to the lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chars_per_line = max(8, int(width / (0.62 * font_px)))
    lines = textwrap.wrap(text, chars_per_line) or [""]
    line_px = int(round(font_px * 1.35))
    height = line_px * len(lines) + font_px // 2
    height += height % 2
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.patch.set_facecolor(np.array(background) / 255.0)
    canvas = FigureCanvasAgg(fig)
    fig.text(
        0.5,
        0.5,
        "\n".join(lines),
        ha="center",
        va="center",
        color=np.array(color) / 255.0,
        fontsize=font_px * 72.0 / dpi,
        fontweight="bold" if bold else "normal",
        family="DejaVu Sans",
        linespacing=1.2,
    )
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # (h', w', 3), h'/w' may be off by one from rounding
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = background
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def compose_cameras(images: dict[str, np.ndarray], cameras: Sequence[str], scale: int = 1) -> np.ndarray:
    """Cameras side by side (same height required), upscaled by an integer factor: (Hi*s, sum Wi*s, 3)."""
    missing = [c for c in cameras if c not in images]
    if missing:
        raise KeyError(f"compose_cameras: frame has no camera {missing} (have {sorted(images)})")
    tiles = [np.asarray(images[c], dtype=np.uint8) for c in cameras]
    heights = {t.shape[0] for t in tiles}
    if len(heights) != 1:
        raise ValueError(f"compose_cameras: cameras {list(cameras)} have different heights {sorted(heights)}")
    row = np.concatenate(tiles, axis=1)  # (Hi, sum Wi, 3)
    if scale > 1:
        row = row.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour upscale
    return row


def episode_frames(
    result: EpisodeResult, cameras: Sequence[str] | None = None, scale: int = 2
) -> list[np.ndarray]:
    """The annotated frames of one recorded episode, each uint8 (H, W, 3) with even H and W."""
    if not result.frames:
        raise ValueError(
            f"episode {result.task} seed {result.seed} has no frames; rollout(record_video=True)"
        )
    cams = list(cameras) if cameras else sorted(result.frames[0])
    first = compose_cameras(result.frames[0], cams, scale)
    width = first.shape[1] + first.shape[1] % 2
    top = render_banner(result.instruction, width)
    status = "SUCCESS" if result.success else "FAIL"
    bottom = render_banner(
        f"{status}   {result.task}  seed {result.seed}  {result.length} steps",
        width,
        background=SUCCESS_RGB if result.success else FAIL_RGB,
        bold=True,
    )
    bar_h = 4
    n = len(result.frames)
    frames = []
    for i, images in enumerate(result.frames):
        row = compose_cameras(images, cams, scale)  # (h, w, 3)
        if row.shape[1] != width:
            row = np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)))
        bar = np.zeros((bar_h, width, 3), dtype=np.uint8)
        bar[:, : int(round(width * (i + 1) / n))] = PROGRESS_RGB
        frame = np.concatenate([top, row, bar, bottom], axis=0)  # (H, W, 3)
        if frame.shape[0] % 2:
            frame = np.pad(frame, ((0, 1), (0, 0), (0, 0)))
        frames.append(frame)
    return frames


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float, crf: int = 23) -> Path:
    """Encode uint8 RGB frames (all (H, W, 3), H and W even) as H.264 / yuv420p."""
    import av

    if not frames:
        raise ValueError(f"write_mp4: no frames for {path}")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"write_mp4: yuv420p needs even frame sizes, got {h}x{w}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            if img.shape != (h, w, 3):
                raise ValueError(f"write_mp4: frame of shape {img.shape}, expected {(h, w, 3)}")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_episode_video(
    result: EpisodeResult, path: str | Path, cameras: Sequence[str] | None = None, scale: int = 2
) -> Path:
    """Annotate and encode one recorded episode; returns the path written."""
    return write_mp4(episode_frames(result, cameras, scale), path, fps=result.fps)
