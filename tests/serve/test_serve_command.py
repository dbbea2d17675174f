import http.client
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from tests.serve.serve_fakes import make_obs, obs_message, tiny_policy
from vlaforge.serve.client import PolicyClient

# The CLI dispatcher lists command modules centrally; drive our `register` directly.
LAUNCH = """
import argparse, sys
from vlaforge.serve.commands import register
p = argparse.ArgumentParser(); register(p.add_subparsers())
args = p.parse_args(sys.argv[1:]); sys.exit(args.func(args))
"""


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_serves_a_checkpoint_and_stops_cleanly_on_sigterm(tmp_path):
    policy = tiny_policy()
    policy.save(tmp_path / "run" / "policy")
    port = _free_port()
    cmd = [
        sys.executable,
        "-c",
        LAUNCH,
        "serve",
        str(tmp_path / "run"),
        "--port",
        str(port),
        "--api-key",
        "k",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        _wait_healthy(port, proc)
        client = PolicyClient("127.0.0.1", port, api_key="k")
        obs = make_obs(0)
        np.testing.assert_allclose(
            client.infer(obs_message(obs))["actions"], policy.predict([obs]).actions, atol=1e-5
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(ConnectionClosed) as e:
            client._ws.recv(timeout=5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1001  # "going away", not a dropped socket
        log = proc.stderr.read().decode()
        assert "shutting down" in log and "server stopped" in log and "'requests': 1" in log
    finally:
        if proc.poll() is None:
            proc.kill()
