"""The reader under older PyAV: recent PyAV's ``VideoReformatter.reformat`` takes ``threads``; PyAV 15 (the
version LeRobot 0.6.1 pins, tests/peers/test_lerobot_datasets_v3.py) has no such argument."""

from __future__ import annotations

import numpy as np
import pytest
from av.video import reformatter

from vlaforge.data import Dataset
from vlaforge.data.video import RGBConverter

CAMS = ("observation.images.corner", "observation.images.gripper")


class Pyav15Reformatter:
    """PyAV 15's ``VideoReformatter.reformat`` signature (no ``threads``) over the installed one."""

    calls = 0

    def __init__(self):
        self._real = _REAL()

    def reformat(
        self,
        frame,
        width=None,
        height=None,
        format=None,
        src_colorspace=None,
        dst_colorspace=None,
        interpolation=None,
    ):
        Pyav15Reformatter.calls += 1
        return self._real.reformat(
            frame,
            width=width,
            height=height,
            format=format,
            src_colorspace=src_colorspace,
            dst_colorspace=dst_colorspace,
            interpolation=interpolation,
        )


_REAL = reformatter.VideoReformatter


@pytest.mark.parametrize("accurate_color", [True, False])
def test_frames_decode_the_same_without_the_threads_argument(v30_root, monkeypatch, accurate_color):
    want = Dataset(v30_root, accurate_color=accurate_color)
    monkeypatch.setattr(reformatter, "VideoReformatter", Pyav15Reformatter)
    Pyav15Reformatter.calls = 0
    got = Dataset(v30_root, accurate_color=accurate_color)
    for i in (0, 1, len(got) - 1):
        for key in CAMS:
            np.testing.assert_array_equal(got[i][key].numpy(), want[i][key].numpy(), err_msg=f"{i} {key}")
    assert Pyav15Reformatter.calls > 0  # the stand-in did the conversions


def test_other_type_errors_are_not_swallowed(v30_root, monkeypatch):
    class Broken(Pyav15Reformatter):
        def reformat(self, frame, **kwargs):
            raise TypeError("expected av.video.frame.VideoFrame")

    monkeypatch.setattr(reformatter, "VideoReformatter", Broken)
    with pytest.raises(TypeError, match="VideoFrame"):
        Dataset(v30_root)[0]
    with pytest.raises(TypeError, match="VideoFrame"):
        RGBConverter(accurate_color=False)(None)
