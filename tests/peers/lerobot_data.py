"""The small two-camera dataset both dataset peer checks write and read (LeRobot 0.3.2's v2.1 in
``test_lerobot_datasets.py``, LeRobot 0.6.1's v3.0 in ``test_lerobot_datasets_v3.py``)."""

from __future__ import annotations

from vlaforge.data.synthetic import write_synthetic_dataset
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

CAMS = ("image", "wrist_image")
S, A, FPS = 8, 7, 10
TASKS = ["put the black bowl on the plate", "open the middle drawer of the cabinet"]
LENGTHS = (12, 9)


def lerobot_features() -> dict:
    """``LeRobotDataset.create(features=...)``: both cameras as 32x32 video, float32 state and action."""
    video = {"dtype": "video", "shape": (32, 32, 3), "names": ["height", "width", "channels"]}
    return {
        **{IMAGE_PREFIX + c: dict(video) for c in CAMS},
        STATE_KEY: {"dtype": "float32", "shape": (S,), "names": None},
        ACTION_KEY: {"dtype": "float32", "shape": (A,), "names": None},
    }


def synthetic(path, **kwargs):
    """vlaforge's writer: 3 episodes of 10 frames with these cameras, dimensions and tasks."""
    return write_synthetic_dataset(
        path,
        episodes=3,
        length=10,
        cameras=CAMS,
        state_dim=S,
        action_dim=A,
        fps=FPS,
        tasks=tuple(TASKS),
        **kwargs,
    )
