"""PolicyServer under bad input and under load, against the tiny test policy (2 cameras 16x16, L1 head).

    .venv/bin/python benchmarks/bench_serve.py                              # fuzz 5,000 + 8 clients x 60 s
    .venv/bin/python benchmarks/bench_serve.py --fuzz 500 --seconds 5       # quick check

  fuzz      N malformed / adversarial frames (random bytes, truncated msgpack, wrong dtypes and shapes,
            huge declared shapes, NaNs, missing keys, deep nesting, oversized frames, ...) over one
            connection: each must get an error reply or (oversized only) a clean 1009 close; then a valid
            request must succeed. Server RSS before/after shows memory stays bounded.
  overhead  median in-process `policy.predict` (this process) vs the median client round trip of one
            sequential client (numpy -> msgpack -> websocket -> server -> policy -> back); ratio = remote /
            in-process, and the absolute difference in ms.
  load      C concurrent clients (threads, one connection each) for S seconds, each sending observations
            back to back: failed requests, throughput, p50/p99 latency. The server runs one inference
            worker, so latency under load ~ C x inference time; throughput is the figure to watch.
  batched   the same load against a second server started with max_batch=C (concurrent requests share
            one forward pass): throughput and latency side by side, and the mean batch size.

The server runs in a separate process (its own GIL), one torch thread. Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny policy and the fuzz corpus live with the tests

from tests.serve.fuzz_messages import _valid, drive  # noqa: E402
from tests.serve.serve_fakes import make_obs, obs_message, tiny_policy  # noqa: E402
from vlaforge.serve.client import PolicyClient  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serve.json"
MAX_BYTES = 1024 * 1024


def _server_main(port: int, ready: Any, max_batch: int = 1) -> None:
    import torch

    from vlaforge.serve.server import PolicyServer

    torch.set_num_threads(1)
    server = PolicyServer(tiny_policy(), "127.0.0.1", port, max_message_bytes=MAX_BYTES, max_batch=max_batch)
    ready.set()
    server.run()


def _start_server(ctx: Any, max_batch: int) -> tuple[int, Any]:
    port = _free_port()
    ready = ctx.Event()
    proc = ctx.Process(target=_server_main, args=(port, ready, max_batch), daemon=True)
    proc.start()
    ready.wait(120)
    PolicyClient("127.0.0.1", port, connect_timeout=60).close()  # wait until it accepts connections
    return port, proc


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(ms)}


def bench_overhead(port: int, calls: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    policy = tiny_policy()
    obs = make_obs(0)
    msg = obs_message(obs)
    local, remote = [], []
    with PolicyClient("127.0.0.1", port) as client:
        for _ in range(5):  # warm-up both paths
            policy.predict([obs])
            client.infer(msg)
        for _ in range(calls):  # interleaved so that background load hits both alike
            t0 = time.perf_counter()
            policy.predict([obs])
            local.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            client.infer(msg)
            remote.append((time.perf_counter() - t0) * 1e3)
    lo, re = statistics.median(local), statistics.median(remote)
    return {"in_process_ms": lo, "remote_ms": re, "ratio": re / lo, "overhead_ms": re - lo, "calls": calls}


def bench_load(port: int, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    batch_sizes: list[int] = []
    failures: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at: list[float] = [0.0]

    def worker(i: int) -> None:
        g = np.random.default_rng(i)
        try:
            client = PolicyClient("127.0.0.1", port)
        except Exception as e:
            failures.append(f"client {i}: {e}")
            start.wait()
            return
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                reply = client.infer(_valid(g))
                assert reply["actions"].shape == (4, 2)
                batch_sizes.append(int(reply["server_timing"].get("batch_size", 1)))
            except Exception as e:
                failures.append(f"client {i}: {type(e).__name__}: {e}")
                continue
            latencies[i].append((time.perf_counter() - t0) * 1e3)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [x for lat in latencies for x in lat]
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(flat),
        "failed": len(failures),
        "failures": failures[:5],
        "throughput_rps": len(flat) / wall,
        "mean_batch_size": float(np.mean(batch_sizes)) if batch_sizes else 0.0,
        **_percentiles(flat),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz", type=int, default=5000, help="number of malformed messages")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--calls", type=int, default=200, help="sequential calls for the overhead ratio")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    port, proc = _start_server(ctx, 1)
    results: dict[str, Any] = {
        "command": "python " + shlex.join(["benchmarks/bench_serve.py", *sys.argv[1:]])
    }
    try:
        rss0 = _rss_mb(proc.pid)
        t0 = time.perf_counter()
        fuzz = drive(port, args.fuzz, seed=0, oversize_bytes=MAX_BYTES)
        fuzz["seconds"] = round(time.perf_counter() - t0, 2)
        fuzz["server_rss_mb_before_after"] = [round(rss0, 1), round(_rss_mb(proc.pid), 1)]
        results["fuzz"] = fuzz
        print(f"fuzz: {args.fuzz} messages in {fuzz['seconds']} s -> {fuzz['outcome']}; bad={fuzz['bad'][:3]}; "
              f"valid request afterwards ok={fuzz['final_ok']}; server RSS {fuzz['server_rss_mb_before_after']} MB")  # fmt: skip
        results["overhead"] = ov = bench_overhead(port, args.calls)
        print(f"overhead: in-process predict {ov['in_process_ms']:.2f} ms, via server {ov['remote_ms']:.2f} ms "
              f"-> ratio {ov['ratio']:.2f}x (+{ov['overhead_ms']:.2f} ms)")  # fmt: skip
        results["load"] = ld = bench_load(port, args.clients, args.seconds)
        print(f"load: {ld['clients']} clients x {ld['seconds']} s: {ld['requests']} requests, {ld['failed']} failed, "
              f"{ld['throughput_rps']:.1f} req/s, p50 {ld['p50_ms']:.2f} ms, p99 {ld['p99_ms']:.2f} ms")  # fmt: skip
    finally:
        os.kill(proc.pid, 15)  # SIGTERM: the graceful shutdown path
        proc.join(30)
        results["server_exitcode"] = proc.exitcode
    port, proc = _start_server(ctx, args.clients)
    try:
        results["load_batched"] = lb = bench_load(port, args.clients, args.seconds)
        lb["max_batch"] = args.clients
        lb["throughput_ratio_vs_unbatched"] = lb["throughput_rps"] / ld["throughput_rps"]
        print(f"batched (max_batch={args.clients}): {lb['requests']} requests, {lb['failed']} failed, "
              f"{lb['throughput_rps']:.1f} req/s ({lb['throughput_ratio_vs_unbatched']:.2f}x unbatched), "
              f"p50 {lb['p50_ms']:.2f} ms, p99 {lb['p99_ms']:.2f} ms, mean batch {lb['mean_batch_size']:.2f}")  # fmt: skip
    finally:
        os.kill(proc.pid, 15)
        proc.join(30)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    ok = (
        not results["fuzz"]["bad"]
        and results["fuzz"]["final_ok"]
        and results["load"]["failed"] == 0
        and results["load_batched"]["failed"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
