"""A tiny real policy (deterministic L1 head) and observations matching it, for the serving tests."""

from __future__ import annotations

import numpy as np

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.types import Observation


def tiny_policy():
    import torch

    from vlaforge.policies.recipes import make_policy

    torch.manual_seed(0)
    return make_policy("octo-tiny", TinyDataset(), head="l1", **TINY).eval()


def make_obs(seed: int = 0, instruction: str = "push the red block") -> Observation:
    g = np.random.default_rng(seed)
    return Observation(
        images={cam: g.integers(0, 256, (16, 16, 3), dtype=np.uint8) for cam in ("front", "wrist")},
        state=g.normal(size=3).astype(np.float32),
        instruction=instruction,
    )


def obs_message(obs: Observation) -> dict:
    return {"images": dict(obs.images), "state": obs.state, "instruction": obs.instruction}
