import http.client
import threading

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.serve.serve_fakes import make_obs, obs_message
from vlaforge.runtime.safety import SafetyLimits
from vlaforge.serve.client import AuthenticationError, PolicyClient, RemotePolicy, ServerError
from vlaforge.serve.protocol import pack, unpack
from vlaforge.serve.server import PolicyServer


def _healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz")
    status = conn.getresponse().status
    conn.close()
    return status


def _raw(port: int, **kw):
    ws = connect(f"ws://127.0.0.1:{port}", proxy=None, compression=None, **kw)
    return ws, unpack(ws.recv())


def test_healthz_and_metadata_on_connect(server):
    assert _healthz(server.port) == 200
    ws, meta = _raw(server.port)
    ws.close()
    assert meta["recipe"] == "octo-tiny" and meta["cameras"] == {"front": [16, 16], "wrist": [16, 16]}
    assert (meta["state_dim"], meta["action_dim"], meta["chunk"], meta["history"]) == (3, 2, 4, 2)
    assert meta["fps"] == 10.0


def test_actions_equal_in_process_predict_with_server_side_history(server, policy):
    o0, o1, o2 = make_obs(0), make_obs(1), make_obs(2)
    with PolicyClient("127.0.0.1", server.port) as client:
        r0 = client.infer(obs_message(o0))
        r1 = client.infer(obs_message(o1))
        r2 = client.infer(obs_message(o2))
        assert r0["actions"].shape == (4, 2) and r0["actions"].dtype == np.float32
        np.testing.assert_allclose(r0["actions"], policy.predict([o0]).actions, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r1["actions"], policy.predict([o0, o1]).actions, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r2["actions"], policy.predict([o1, o2]).actions, rtol=1e-6, atol=1e-6)
        assert {"infer_ms", "total_ms", "decode_ms", "prev_total_ms"} <= set(r2["server_timing"])
        assert r2["policy_timing"]["infer_ms"] > 0
        client.reset()  # new episode: the history restarts from o2 alone
        np.testing.assert_allclose(
            client.infer(obs_message(o2))["actions"], policy.predict([o2]).actions, atol=1e-6
        )
        # explicit history through RemotePolicy is independent of what the server saw before
        remote = RemotePolicy(client)
        assert remote.spec == policy.spec
        np.testing.assert_allclose(
            remote.predict([o0, o2]).actions, policy.predict([o0, o2]).actions, atol=1e-6
        )


def test_malformed_messages_get_error_replies_and_the_connection_stays_usable(server, policy):
    ws, _ = _raw(server.port)
    bad_state = obs_message(make_obs(0)) | {"state": np.zeros(7, np.float32)}
    for frame, kind, text in [
        (b"\xc1garbage", "protocol", "not a valid msgpack"),
        ("text frame", "protocol", "binary"),
        (
            pack({"images": {}, "state": np.zeros(3, np.float32), "instruction": "x"}),
            "protocol",
            "missing camera",
        ),
        (pack(bad_state), "protocol", "'state': expected shape (3,)"),
        (pack({"control": "fly"}), "protocol", "unknown control"),
    ]:
        ws.send(frame)
        reply = unpack(ws.recv())
        assert reply["kind"] == kind and text in reply["error"], reply
    obs = make_obs(9)
    ws.send(pack(obs_message(obs)))
    np.testing.assert_allclose(unpack(ws.recv())["actions"], policy.predict([obs]).actions, atol=1e-6)
    ws.close()
    with PolicyClient("127.0.0.1", server.port) as client, pytest.raises(ServerError, match="missing camera"):
        client.infer({"images": {}, "state": np.zeros(3, np.float32), "instruction": "x"})


def test_oversized_frame_closes_cleanly_and_server_keeps_serving(policy):
    with PolicyServer(policy, "127.0.0.1", 0, max_message_bytes=4096).running_in_thread() as srv:
        ws, meta = _raw(srv.port, max_size=None)
        assert meta["max_message_bytes"] == 4096
        ws.send(pack({"blob": np.zeros(10_000, np.uint8)}))
        with pytest.raises(Exception):  # noqa: B017 - websockets closes the connection with 1009
            ws.recv()
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
        with PolicyClient("127.0.0.1", srv.port) as client:
            assert client.infer(obs_message(make_obs(0)))["actions"].shape == (4, 2)


def test_api_key_required_and_compared(policy):
    with PolicyServer(policy, "127.0.0.1", 0, api_key="s3cret").running_in_thread() as srv:
        assert _healthz(srv.port) == 200  # probes need no key
        for headers in (None, {"Authorization": "Api-Key wrong"}, {"Authorization": "Bearer s3cret"}):
            with pytest.raises(InvalidStatus) as e:
                connect(f"ws://127.0.0.1:{srv.port}", proxy=None, additional_headers=headers)
            assert e.value.response.status_code == 401
        with pytest.raises(AuthenticationError):
            PolicyClient("127.0.0.1", srv.port, api_key="wrong")
        with PolicyClient("127.0.0.1", srv.port, api_key="s3cret") as client:
            assert client.infer(obs_message(make_obs(0)))["actions"].shape == (4, 2)


class _BlockedPolicy:
    """A policy whose forward pass runs until the test releases it."""

    def __init__(self, policy):
        self.spec, self.inner = policy.spec, policy
        self.entered, self.release = threading.Event(), threading.Event()

    def predict(self, observations):
        self.entered.set()
        assert self.release.wait(60), "the test never released the forward pass"
        return self.inner.predict(observations)


def test_inference_does_not_block_health_checks_or_error_replies(policy):
    """While a forward pass is running (and cannot finish), health checks and error replies are answered:
    an ordering check, not a timing one."""
    blocked = _BlockedPolicy(policy)
    with PolicyServer(blocked, "127.0.0.1", 0).running_in_thread() as srv:
        slow = threading.Thread(
            target=lambda: PolicyClient("127.0.0.1", srv.port).infer(obs_message(make_obs(0)))
        )
        slow.start()
        assert blocked.entered.wait(60)  # the forward pass is now running
        assert _healthz(srv.port) == 200
        ws, _ = _raw(srv.port)
        ws.send(b"\xc1")
        assert "error" in unpack(ws.recv())
        ws.close()
        assert slow.is_alive() and not blocked.release.is_set()  # answered while inference was still busy
        blocked.release.set()
        slow.join(60)
        assert not slow.is_alive()


def test_safety_filter_in_reply(policy):
    limits = SafetyLimits(action_low=[-0.1, -0.1], action_high=[0.1, 0.1])
    with PolicyServer(policy, "127.0.0.1", 0, safety=limits).running_in_thread() as srv:
        with PolicyClient("127.0.0.1", srv.port) as client:
            assert client.metadata["safety"] is True
            obs = make_obs(0)
            reply = client.infer(obs_message(obs))
            raw = policy.predict([obs]).actions
            np.testing.assert_allclose(reply["actions"], np.clip(raw, -0.1, 0.1), atol=1e-6)
            n_clipped = int((np.abs(raw) > 0.1).any(axis=1).sum())
            assert len(reply["safety"]["interventions"]) == n_clipped > 0
            assert reply["safety"]["interventions"][0]["kind"] == "action_bounds"
