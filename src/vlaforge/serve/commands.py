"""`vlaforge serve RUN_DIR --host 127.0.0.1 --port 8000 [--api-key KEY] [--safety limits.json] [--max-batch 8]
[--bf16 | --int8] [--compile] [--decode-failures flag|error] [--dataset NAME]`."""

from __future__ import annotations

import argparse
import logging
import os


def _serve(args: argparse.Namespace) -> int:
    from vlaforge.inference.load import dataset_choice_problem, load_policy
    from vlaforge.serve.server import PolicyServer

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    api_key = args.api_key or os.environ.get("VLAFORGE_API_KEY") or None
    safety = None
    if args.safety:
        from vlaforge.runtime.safety import load_limits

        try:
            safety = load_limits(args.safety)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"--safety: {e}") from None
    problem = dataset_choice_problem(args.run_dir, args.dataset, "the robot it serves")
    if problem:
        raise SystemExit(f"vlaforge serve: {problem}")
    try:
        policy = load_policy(
            args.run_dir,
            int8=args.int8,
            bf16=args.bf16,
            map_location=args.device,
            compile=args.compile,
            **({"dataset": args.dataset} if args.dataset else {}),
        )
    except ValueError as e:  # a bad checkpoint, or a fast path that does not apply: one line
        raise SystemExit(f"vlaforge serve: {e}") from None
    try:
        server = PolicyServer(
            policy,
            args.host,
            args.port,
            api_key=api_key,
            max_message_bytes=int(args.max_message_mb * 1024 * 1024),
            safety=safety,
            max_batch=args.max_batch,
            batch_timeout_ms=args.batch_timeout_ms,
            decode_failures=args.decode_failures,
        )
    except ValueError as e:
        raise SystemExit(f"vlaforge serve: {e}") from None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("vlaforge.serve").warning("serving on %s without an API key", args.host)
    server.run()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a trained policy over a websocket (openpi-compatible msgpack protocol)",
        description="Serve a trained policy: ws://HOST:PORT, GET /healthz; see docs/protocol.md.",
    )
    p.add_argument("run_dir", help="run directory or policy checkpoint directory")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all; default 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Api-Key KEY' (or set VLAFORGE_API_KEY)"
    )
    p.add_argument("--max-message-mb", type=float, default=16.0, help="largest accepted frame in MiB")
    p.add_argument("--safety", default=None, help="JSON file of SafetyLimits fields; filters every reply")
    p.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="run up to this many concurrent clients' requests as one forward pass (default 1: no batching)",
    )
    p.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=2.0,
        help="with --max-batch > 1: how long a request waits for others to share its batch",
    )
    p.add_argument(
        "--decode-failures",
        choices=("flag", "error"),
        default="flag",
        help="a chunk whose tokens failed to decode (π0-FAST fallback, OpenVLA non-action tokens): 'flag' "
        "returns it with decode_failed=true (default); 'error' answers with an error reply (kind 'decode')",
    )
    p.add_argument("--device", default="cpu", help="torch device for the policy (cpu, cuda)")
    p.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="a cross-embodiment policy's dataset to serve as (its action size, statistics, rate, cameras)",
    )
    fast = p.add_mutually_exclusive_group()
    fast.add_argument(
        "--bf16",
        action="store_true",
        help="transformer weights in bfloat16 (fast on CPUs with AMX / AVX512-BF16 and on GPUs)",
    )
    fast.add_argument(
        "--int8", action="store_true", help="dynamic int8 Linear layers in transformer and head (CPU only)"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the per-chunk networks and warm up before serving (octo-family, π0 / π0.5; "
        "each new --max-batch batch size compiles on first use)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request's timing")
    p.set_defaults(func=_serve)
