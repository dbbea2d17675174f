"""Real-time chunking over the wire, request batching, and the torch-free client package."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.policies.policy_fakes import TINY, TinyDataset
from tests.serve.serve_fakes import make_obs, obs_message
from vlaforge.runtime.rtc import predict_rtc, rtc_weights
from vlaforge.serve.client import PolicyClient, RemotePolicy, ServerError
from vlaforge.serve.server import PolicyServer
from vlaforge_client import ActionChunkBroker


@pytest.fixture(scope="module")
def flow_server():
    import torch

    from vlaforge.policies.recipes import make_policy

    torch.manual_seed(0)
    policy = make_policy("octo-tiny", TinyDataset(), head="flow", **TINY).eval()
    with PolicyServer(policy, "127.0.0.1", 0).running_in_thread() as srv:
        yield srv


def _rtc_message(seed: int, prefix: np.ndarray, delay: int) -> dict:
    return {**obs_message(make_obs(seed)), "rtc": {"prefix": prefix, "delay": delay}}


def test_metadata_says_which_policies_can_do_rtc(flow_server, server):
    with PolicyClient("127.0.0.1", flow_server.port) as c:
        assert c.metadata["rtc"] is True
    with PolicyClient("127.0.0.1", server.port) as c:  # the L1 head cannot inpaint
        assert c.metadata["rtc"] is False
        with pytest.raises(ServerError, match="cannot do real-time chunking"):
            c.infer(_rtc_message(0, np.zeros((3, 2), np.float32), 1))


def test_rtc_reply_keeps_the_frozen_prefix_and_follows_the_plan(flow_server):
    H, A = 4, 2
    plan = np.array([[0.5, -0.5], [0.4, -0.4], [0.3, -0.3]], np.float32)  # (P=3, A): the client's plan
    with PolicyClient("127.0.0.1", flow_server.port) as c:
        free = np.stack([c.infer(obs_message(make_obs(0)))["actions"] for _ in range(8)])  # (8, H, A)
        guided = np.stack([c.infer(_rtc_message(0, plan, 2))["actions"] for _ in range(8)])
    assert guided.shape == (8, H, A)
    np.testing.assert_array_equal(guided[:, :2], np.broadcast_to(plan[:2], (8, 2, A)))  # frozen: exact
    # the guided overlap step (i = 2) is pulled toward the plan; unguided samples are not
    err_guided = np.abs(guided[:, 2] - plan[2]).mean()
    err_free = np.abs(free[:, 2] - plan[2]).mean()
    assert err_guided < err_free


@pytest.mark.parametrize(
    "rtc, match",
    [
        ({"prefix": np.zeros((5, 2), np.float32), "delay": 1}, r"1 <= P <= 4"),
        ({"prefix": np.zeros((3, 3), np.float32), "delay": 1}, r"expected shape \(P, 2\)"),
        ({"prefix": np.zeros((3, 2), np.float32), "delay": 4}, r"'rtc.delay' must be an int in \[0, P=3\]"),
        ({"prefix": np.full((3, 2), np.nan, np.float32), "delay": 1}, "NaN"),
        ({"delay": 1}, "'rtc.prefix' must be a numeric array"),
        ([1, 2], "'rtc' must be a map"),
    ],
)
def test_bad_rtc_requests_get_an_error_naming_the_field(flow_server, rtc, match):
    with PolicyClient("127.0.0.1", flow_server.port) as c:
        with pytest.raises(ServerError, match=match):
            c.infer({**obs_message(make_obs(0)), "rtc": rtc})
        assert c.infer(obs_message(make_obs(0)))["actions"].shape == (4, 2)  # still serving


def test_remote_policy_predict_rtc_matches_in_process_frozen_part(flow_server):
    H, d, s = 4, 1, 2
    prefix = np.array([[0.2, 0.1], [0.3, 0.0], [0.3, 0.0], [0.3, 0.0]], np.float32)  # aligned, padded
    weights = rtc_weights(H, d, s)
    window = [make_obs(1), make_obs(2)]
    with PolicyClient("127.0.0.1", flow_server.port) as c:
        remote = RemotePolicy(c).predict_rtc(window, prefix=prefix, weights=weights).actions
    local = predict_rtc(flow_server.policy, window, prefix, weights).actions
    np.testing.assert_array_equal(remote[:d], prefix[:d])
    np.testing.assert_array_equal(local[:d], prefix[:d])
    assert remote.shape == local.shape == (H, 2)


def test_broker_sends_its_plan_for_rtc_and_executes_every_tick_once():
    """A perfect planner that honours the frozen prefix: the broker must send plan == ticks ahead."""
    H = 8
    seen = []

    def infer(msg):
        tick = int(msg["tick"])
        rtc = msg.get("rtc")
        if rtc is not None:
            P = len(rtc["prefix"])
            np.testing.assert_allclose(rtc["prefix"][:, 0], tick + np.arange(P))  # the plan from this tick
            assert 1 <= rtc["delay"] <= P
            seen.append(rtc["delay"])
        time.sleep(0.015)
        return {"actions": (tick + np.arange(H, dtype=np.float32))[:, None]}

    broker = ActionChunkBroker(infer, refill_below=5, rtc=True, rtc_delay=2)
    actions = []
    for t in range(40):
        actions.append(float(broker.act({"tick": t})[0]))
        time.sleep(0.005)
    broker.close()
    np.testing.assert_allclose(actions, np.arange(40))
    assert len(seen) >= 4 and broker.delay_estimate() >= 1


def test_batched_server_answers_concurrent_clients_like_single_requests(policy):
    n_clients, per_client = 6, 5
    with PolicyServer(policy, "127.0.0.1", 0, max_batch=8, batch_timeout_ms=20).running_in_thread() as srv:
        with PolicyClient("127.0.0.1", srv.port) as c:
            assert c.metadata["max_batch"] == 8
        expected = {i: policy.predict([make_obs(i)] * 2).actions for i in range(n_clients)}
        results: dict = {}
        barrier = threading.Barrier(n_clients)

        def run(i):
            with PolicyClient("127.0.0.1", srv.port) as c:
                out = []
                for _ in range(per_client):
                    barrier.wait()  # everybody sends at once
                    c.reset()
                    out.append(c.infer(obs_message(make_obs(i))))
                results[i] = out

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(results) == list(range(n_clients))
    sizes = [r["server_timing"]["batch_size"] for out in results.values() for r in out]
    assert max(sizes) > 1  # requests really shared forward passes
    for i, out in results.items():
        for r in out:
            np.testing.assert_allclose(r["actions"], expected[i], atol=1e-5)


def test_a_bad_window_fails_alone_inside_a_batch(policy):
    srv = PolicyServer(policy, "127.0.0.1", 0, max_batch=4)
    good = [make_obs(0)] * 2
    bad = [make_obs(1)] * 3  # the policy reads 2 observations
    out = srv._infer_batch([(good, 0.0, None), (bad, 0.0, None), (good, 0.0, None)])
    assert isinstance(out[1], ValueError) and "history" in str(out[1])
    np.testing.assert_allclose(out[0][0], out[2][0])
    assert out[0][4] == 2  # two windows shared the forward pass
    srv._executor.shutdown()


def test_server_rejects_bad_batch_settings(policy):
    with pytest.raises(ValueError, match="max_batch"):
        PolicyServer(policy, max_batch=0)
    with pytest.raises(ValueError, match="batch_timeout_ms"):
        PolicyServer(policy, max_batch=2, batch_timeout_ms=-1)


def test_client_package_works_where_torch_cannot_be_imported(server):
    """vlaforge_client on a robot computer: numpy + msgpack + websockets, torch absent."""
    code = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import numpy as np
from vlaforge_client import ActionChunkBroker, PolicyClient
c = PolicyClient("127.0.0.1", {server.port})
msg = {{"images": {{cam: np.zeros((16, 16, 3), np.uint8) for cam in ("front", "wrist")}},
       "state": np.zeros(3, np.float32), "instruction": "push the red block"}}
b = ActionChunkBroker(c.infer, refill_below=2)
acts = [b.act(msg) for _ in range(6)]
b.close(); c.close()
assert all(a.shape == (2,) for a in acts)
assert not any(m == "vlaforge" or m.startswith("vlaforge.") for m in sys.modules), "imported vlaforge"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


@pytest.mark.slow
def test_client_package_installs_alone_into_a_fresh_venv(tmp_path):
    """pip install packages/vlaforge-client into an empty venv: no torch, no vlaforge, and it imports."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    package = tmp_path / "vlaforge-client"  # a copy: pip's in-tree build/ stays out of the checkout
    shutil.copytree(
        root / "packages" / "vlaforge-client", package, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    venv = tmp_path / "venv"
    clean = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"
    }  # a checkout on the path is not installed
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(package)], check=True, timeout=600, env=clean)
    code = (
        "import importlib.util as u, vlaforge_client;"
        "assert u.find_spec('torch') is None and u.find_spec('vlaforge') is None;"
        "print(vlaforge_client.__version__)"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=clean
    )
    assert out.returncode == 0, out.stderr[-2000:]
