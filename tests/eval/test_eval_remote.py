"""Closed loop through the network: Meta-World evaluation via PolicyServer + RemotePolicy equals in-process."""

from __future__ import annotations

import numpy as np
import pytest

from tests.extras import require
from tests.policies.policy_fakes import TINY, _stats
from vlaforge.eval.rollout import evaluate

pytestmark = pytest.mark.slow


class MetaWorldShapedDataset:
    """Just what `make_policy` reads, shaped like Meta-World: 2 cameras, state 4, action 4, 80 Hz."""

    fps = 80.0

    def __init__(self, image: int = 32) -> None:
        g = np.random.default_rng(0)
        self.features = {
            **{
                f"observation.images.{c}": {"dtype": "video", "shape": [image, image, 3]}
                for c in ("corner", "gripper")
            },
            "observation.state": {"dtype": "float32", "shape": [4], "names": None},
            "action": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
        }
        self.stats = {
            "action": _stats(g.uniform(-1, 1, (256, 4)).astype(np.float32)),
            "observation.state": _stats(g.normal(0.5, 0.2, (256, 4)).astype(np.float32)),
        }

        class _Meta:
            tasks = ["reach the goal"]

        self.meta = _Meta()


def test_metaworld_eval_through_the_server_matches_in_process():
    require("metaworld", "sim")
    import torch

    from vlaforge.policies.recipes import make_policy
    from vlaforge.serve.client import PolicyClient, RemotePolicy
    from vlaforge.serve.server import PolicyServer

    torch.manual_seed(0)
    policy = make_policy("octo-tiny", MetaWorldShapedDataset(), head="l1", **TINY).eval()  # deterministic
    kwargs = dict(episodes=2, max_steps=30, videos_per_task=0, progress=False)
    local = evaluate(policy, ["reach-v3"], **kwargs)
    with PolicyServer(policy, "127.0.0.1", 0).running_in_thread() as server:
        with PolicyClient("127.0.0.1", server.port, connect_timeout=10) as client:
            remote = evaluate(RemotePolicy(client), ["reach-v3"], **kwargs)
    outcome = [(e.seed, e.success, e.length, len(e.latencies_s)) for e in local.episodes]
    assert outcome == [(e.seed, e.success, e.length, len(e.latencies_s)) for e in remote.episodes]
    assert [e.seed for e in local.episodes] == [0, 1] and all(0 < n <= 30 for _, _, n, _ in outcome)


def test_rtc_evaluation_runs_through_the_server():
    """ExecutorConfig(mode="rtc") behind the server: every chunk after the first is inpainted remotely."""
    require("metaworld", "sim")
    import torch

    from vlaforge.policies.recipes import make_policy
    from vlaforge.runtime.executor import ExecutorConfig
    from vlaforge.serve.client import PolicyClient, RemotePolicy
    from vlaforge.serve.server import PolicyServer

    torch.manual_seed(0)
    policy = make_policy("octo-tiny", MetaWorldShapedDataset(), head="flow", **TINY).eval()
    executor = ExecutorConfig(mode="rtc", execute=2, rtc_delay=1)
    with PolicyServer(policy, "127.0.0.1", 0).running_in_thread() as server:
        with PolicyClient("127.0.0.1", server.port, connect_timeout=10) as client:
            remote = RemotePolicy(client)
            calls = []
            original = remote.predict_rtc

            def counting(*args, **kw):
                calls.append(kw["weights"])
                return original(*args, **kw)

            remote.predict_rtc = counting
            report = evaluate(
                remote,
                ["reach-v3"],
                episodes=1,
                max_steps=20,
                videos_per_task=0,
                progress=False,
                executor=executor,
            )
    assert report.episodes[0].length == 20
    assert len(calls) >= 5 and all(float(w[0]) == 1.0 for w in calls)  # d = 1 action frozen each time
