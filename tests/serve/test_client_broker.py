import subprocess
import sys
import time

import numpy as np
import pytest

from tests.serve.serve_fakes import make_obs, obs_message
from vlaforge.serve.broker import ActionChunkBroker, blend_overlap
from vlaforge.serve.client import PolicyClient
from vlaforge.serve.server import PolicyServer


def test_client_module_does_not_import_torch():
    code = "import sys, vlaforge_client; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_client_reconnects_after_server_restart(policy):
    srv = PolicyServer(policy, "127.0.0.1", 0)
    with srv.running_in_thread():
        port = srv.port
        client = PolicyClient("127.0.0.1", port, connect_timeout=10, backoff=0.05)
        first = client.infer(obs_message(make_obs(0)))["actions"]
    with PolicyServer(policy, "127.0.0.1", port).running_in_thread():
        again = client.infer(obs_message(make_obs(0)))["actions"]
        assert client.reconnects == 1
    np.testing.assert_allclose(first, again, atol=1e-6)
    client.close()


def test_client_gives_up_when_no_server():
    # connect_timeout bounds the retries: the call returns (pytest-timeout would end one that never does)
    with pytest.raises(ConnectionError, match="could not connect"):
        PolicyClient("127.0.0.1", 1, connect_timeout=0.3, backoff=0.05)


def test_client_times_out_on_a_server_that_never_answers():
    """A stuck server must raise TimeoutError within request_timeout, never block the robot loop."""
    import threading

    from websockets.sync.server import serve

    from vlaforge.serve.protocol import pack

    def handler(ws):
        ws.send(pack({"cameras": {}, "chunk": 1}))
        for _ in ws:  # read requests, never answer
            pass

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = PolicyClient("127.0.0.1", server.socket.getsockname()[1], request_timeout=0.3)
        with pytest.raises(TimeoutError, match="request_timeout=0.3"):  # raised, not blocked forever
            client.request({"control": "metadata"})
        assert client._ws is None  # the late reply can never be taken for the next one
        server.shutdown()


def test_blend_overlap_cross_fades_linearly():
    old = np.zeros((3, 1), np.float32)
    new = np.ones((5, 1), np.float32)
    out = blend_overlap(old, new)
    np.testing.assert_allclose(out[:, 0], [0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_array_equal(blend_overlap(old[:0], new), new)


def _clock_policy(delay: float, H: int = 8):
    """A 'perfect' planner: from the observation at tick t it predicts action t + i for tick t + i."""

    def infer(tick):
        time.sleep(delay)
        return {"actions": (tick + np.arange(H, dtype=np.float32))[:, None]}  # (H, 1)

    return infer


@pytest.mark.parametrize("blend", [True, False])
def test_broker_drops_stale_actions_and_never_repeats_a_tick(blend):
    """Whatever the network delay, consistent plans must execute action == tick at every tick."""
    broker = ActionChunkBroker(_clock_policy(0.02), refill_below=5, blend=blend)
    actions = []
    for t in range(40):
        actions.append(float(broker.act(t)[0]))
        time.sleep(0.005)
    broker.close()
    np.testing.assert_allclose(actions, np.arange(40))
    assert broker.chunks_received >= 5 and broker.stalls < 10  # refills overlap with execution


def test_broker_surfaces_request_failures_and_resets():
    calls = {"n": 0}

    def flaky(tick):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("network down")
        return np.full((4, 2), tick, np.float32)

    broker = ActionChunkBroker(flaky, refill_below=4)
    np.testing.assert_array_equal(broker.act(0), [0, 0])  # queue 3 < 4: a failing refill starts
    with pytest.raises(ConnectionError, match="network down"):
        for t in range(1, 4):
            broker.act(t)
            time.sleep(0.05)
    broker.reset()
    np.testing.assert_array_equal(broker.act(7), [7, 7])
    with pytest.raises(ValueError, match="refill_below"):
        ActionChunkBroker(flaky, refill_below=0)
    broker.close()


def test_broker_with_real_client_and_server(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        broker = ActionChunkBroker(client.infer, refill_below=2)
        obs = obs_message(make_obs(0))
        acts = np.stack([broker.act(obs) for _ in range(10)])
        broker.close()
    assert acts.shape == (10, 2) and np.all(np.isfinite(acts)) and broker.chunks_received >= 3
