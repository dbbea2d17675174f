"""A tiny in-memory dataset with the same item layout as `vlaforge.data.Dataset`, for policy tests."""

from __future__ import annotations

import numpy as np
import torch

CAMS = {"front": [16, 16], "wrist": [16, 16]}
TASKS = ["push the red block", "open the drawer"]


class TinyDataset(torch.utils.data.Dataset):
    """Task 0 -> action +0.5, task 1 -> action -0.5 (so language matters); images encode the task too."""

    fps = 10.0
    num_episodes = 2

    def __init__(
        self, n: int = 32, history: int = 2, chunk: int = 4, state_dim: int = 3, action_dim: int = 2
    ):
        g = np.random.default_rng(0)
        self.n, self.T, self.H, self.S, self.A = n, history, chunk, state_dim, action_dim
        self.state = g.normal(size=(n, history, state_dim)).astype(np.float32)
        self.task_idx = np.arange(n) % 2
        self.action = (0.5 - self.task_idx[:, None, None]) * np.ones((n, chunk, action_dim), np.float32)
        self.action += g.normal(scale=0.05, size=self.action.shape).astype(np.float32)
        self.features = {
            **{f"observation.images.{c}": {"dtype": "video", "shape": [*hw, 3]} for c, hw in CAMS.items()},
            "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
            "action": {"dtype": "float32", "shape": [action_dim], "names": ["x", "gripper"][:action_dim]},
        }
        flat_a = self.action.reshape(-1, action_dim)
        flat_s = self.state.reshape(-1, state_dim)
        self.stats = {k: _stats(v) for k, v in (("action", flat_a), ("observation.state", flat_s))}

        class _Meta:
            tasks = TASKS

        self.meta = _Meta()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        img = np.full((self.T, 16, 16, 3), 40 + 150 * self.task_idx[i], np.uint8)
        return {
            "observation.images.front": torch.from_numpy(img),
            "observation.images.wrist": torch.from_numpy(255 - img),
            "observation.state": torch.from_numpy(self.state[i]),
            "action": torch.from_numpy(self.action[i]),
            "action_is_pad": torch.zeros(self.H, dtype=torch.bool),
            "task": TASKS[self.task_idx[i]],
        }


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    q = np.quantile(x, [0.01, 0.99], axis=0)
    return {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0), "q01": q[0], "q99": q[1]}


TINY = {
    "encoder_image_size": [16, 16],
    "history": 2,
    "width": 32,
    "depth": 2,
    "heads": 2,
    "mlp_dim": 64,
    "stem_channels": [8, 16],
    "patch": 2,
    "text_max_len": 8,
}
