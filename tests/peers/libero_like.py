"""A LIBERO-shaped stand-in dataset (openpi's LIBERO example layout: ``image`` + ``wrist_image`` at 224 px
after its resize-with-pad, 8-D state, 7-D action) for building tiny policies in the peer tests."""

from __future__ import annotations

import numpy as np

LIBERO_CAMERAS = {"image": [224, 224], "wrist_image": [224, 224]}
LIBERO_TASKS = ["put the black bowl on the plate", "open the middle drawer of the cabinet"]


class LiberoLike:
    """What a recipe reads from a dataset: ``features``, ``stats``, ``fps``, ``meta.tasks``."""

    fps = 20.0

    def __init__(self, state_dim: int = 8, action_dim: int = 7):
        g = np.random.default_rng(0)
        self.features = {
            **{
                f"observation.images.{c}": {"dtype": "video", "shape": [*hw, 3]}
                for c, hw in LIBERO_CAMERAS.items()
            },
            "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
            "action": {
                "dtype": "float32",
                "shape": [action_dim],
                "names": [f"a{i}" for i in range(action_dim - 1)] + ["gripper"],
            },
        }
        self.stats = {}
        for key, dim in (("observation.state", state_dim), ("action", action_dim)):
            x = g.normal(size=(256, dim)).astype(np.float32)
            q = np.quantile(x, [0.01, 0.99], axis=0)
            self.stats[key] = {
                "mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0), "q01": q[0], "q99": q[1]
            }  # fmt: skip

        class _Meta:
            tasks = LIBERO_TASKS

        self.meta = _Meta()
