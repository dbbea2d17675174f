"""What a recipe reads from a dataset, alike for every family: the embodiment (cameras with their
frame sizes, state/action sizes, fps), the gripper-like action dimensions, the task texts.

A dataset here is anything with `features`, `fps` and `meta.tasks` (a `vlaforge.data.Dataset`, a
mixture, or a stand-in such as the bench's); the policies never import the dataset classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

_SECONDARY_CAMERA_WORDS = ("wrist", "gripper", "hand", "eye_in_hand")


def main_camera(cameras: list[str]) -> str:
    """The third-person camera OpenVLA / RT-2 read: the first (sorted) name that is not a wrist camera."""
    names = sorted(cameras)
    if not names:
        raise ValueError("the dataset has no camera")
    for n in names:
        if not any(w in n.lower() for w in _SECONDARY_CAMERA_WORDS):
            return n
    return names[0]


def dataset_embodiment(
    dataset: Any, camera_names: Sequence[str] | None, *, cameras: str = "all"
) -> dict[str, Any]:
    """The embodiment config fields (``cameras`` -> [h, w], ``state_dim``, ``action_dim``, ``fps``) of a
    dataset. camera_names: the cameras to read (default: every camera for ``cameras="all"``, the
    `main_camera` for ``"main"``); a name the dataset lacks is an error naming what it has."""
    feats = dataset.features
    for key in (STATE_KEY, ACTION_KEY):
        if key not in feats:
            raise ValueError(f"dataset has no '{key}' feature (features: {sorted(feats)})")
    cams = {
        k[len(IMAGE_PREFIX) :]: [int(feats[k]["shape"][0]), int(feats[k]["shape"][1])]
        for k in feats
        if k.startswith(IMAGE_PREFIX)
    }
    chosen = list(camera_names or (list(cams) if cameras == "all" else [main_camera(list(cams))]))
    unknown = [c for c in chosen if c not in cams]
    if unknown or not chosen:
        raise ValueError(f"cameras {unknown or chosen} are not in the dataset (it has {sorted(cams)})")
    return {
        "cameras": {c: cams[c] for c in chosen},
        "state_dim": int(feats[STATE_KEY]["shape"][0]),
        "action_dim": int(feats[ACTION_KEY]["shape"][0]),
        "fps": float(dataset.fps),
    }


def gripper_dims(features: dict[str, dict[str, Any]]) -> list[int]:
    """Action dimensions named like a gripper (left unnormalized, as Octo and OpenVLA do)."""
    action_names = features[ACTION_KEY].get("names") or []
    if isinstance(action_names, dict):  # LeRobot sometimes nests names: {"motors": [...]}
        action_names = next(iter(action_names.values()), [])
    return [i for i, n in enumerate(action_names) if "gripper" in str(n).lower()]


def task_texts(dataset: Any) -> list[str]:
    tasks = dataset.meta.tasks
    if isinstance(tasks, dict):
        return [str(t) for t in (tasks.values() if all(isinstance(k, int) for k in tasks) else tasks.keys())]
    return [str(t) for t in tasks]
