"""openpi's own client (``openpi_client.websocket_client_policy.WebsocketClientPolicy``, PyPI
``openpi-client``) drives ``vlaforge serve``: it connects with an API key, reads the metadata, sends
observations built exactly as openpi's ``examples/libero/main.py`` builds them (``observation/image``,
``observation/wrist_image`` resized with ``image_tools.resize_with_pad`` to 224 px, ``observation/state``
8-D, ``prompt``) and gets the action chunk the policy computes locally for the same inputs.

Runs where openpi-client is installed (``make test-peers``); skipped elsewhere.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.peers.need import need

websocket_client_policy = need("openpi_client.websocket_client_policy", "openpi-client 0.1.2")
image_tools = need("openpi_client.image_tools", "openpi-client 0.1.2")

API_KEY = "parity-key"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vlaforge serve exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("vlaforge serve did not become healthy")


def libero_element(seed: int, prompt: str) -> dict:
    """One request as openpi's LIBERO example makes it (256 px renders, turned 180°, resized with pad)."""
    g = np.random.default_rng(seed)
    agentview = g.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    wrist = g.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    img = np.ascontiguousarray(agentview[::-1, ::-1])
    wrist_img = np.ascontiguousarray(wrist[::-1, ::-1])
    return {
        "observation/image": image_tools.convert_to_uint8(image_tools.resize_with_pad(img, 224, 224)),
        "observation/wrist_image": image_tools.convert_to_uint8(
            image_tools.resize_with_pad(wrist_img, 224, 224)
        ),
        "observation/state": g.normal(size=8),  # float64, as the example's np.concatenate gives
        "prompt": prompt,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import torch

    from tests.peers.libero_like import LiberoLike
    from vlaforge.policies.recipes import make_policy

    torch.manual_seed(0)
    # A deterministic head (L1), so the served chunk can be compared exactly with a local predict.
    policy = make_policy("octo-tiny", LiberoLike(), head="l1", chunk=10).eval()  # openpi replans every 5
    run = tmp_path_factory.mktemp("openpi-client") / "run"
    policy.save(run / "policy")
    port = _free_port()
    cmd = [sys.executable, "-m", "vlaforge.cli", "serve", str(run), "--port", str(port), "--api-key", API_KEY]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        _wait_healthy(port, proc)
        yield policy, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openpi_client_gets_the_policys_actions_for_libero_example_observations(served):
    from vlaforge.types import Observation

    policy, port = served
    client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=API_KEY)
    meta = client.get_server_metadata()
    assert meta["cameras"] == {"image": [224, 224], "wrist_image": [224, 224]}
    assert (meta["state_dim"], meta["action_dim"], meta["chunk"]) == (8, 7, policy.config.chunk)
    for seed, prompt in enumerate(
        ["put the black bowl on the plate", "open the middle drawer of the cabinet"]
    ):
        element = libero_element(seed, prompt)
        reply = client.infer(element)
        actions = reply["actions"]
        assert actions.dtype == np.float32 and actions.shape == (policy.config.chunk, 7)
        assert len(actions) >= 5  # the example replans every 5 steps and asserts this
        local = policy.predict(
            [
                Observation(
                    images={
                        "image": element["observation/image"],
                        "wrist_image": element["observation/wrist_image"],
                    },
                    state=element["observation/state"].astype(np.float32),
                    instruction=prompt,
                )
            ]
        ).actions
        print(f"openpi client, request {seed}: max abs difference {np.abs(actions - local).max():.3g}")
        np.testing.assert_allclose(actions, local, rtol=0, atol=1e-5)
        assert set(reply["server_timing"]) >= {"infer_ms", "total_ms"}


def test_openpi_client_without_or_with_a_wrong_key_is_refused(served):
    import websockets.exceptions

    _, port = served
    for key in (None, "wrong-key"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=key)
        assert e.value.response.status_code == 401
