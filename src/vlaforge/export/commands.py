"""`vlaforge export RUN_OR_POLICY_DIR --format onnx --out DIR`: a policy as a standalone ONNX graph.

    vlaforge export runs/octo-mt10 --format onnx --out exported/octo-mt10
    vlaforge export runs/octo-minilm --format onnx --out exported/m --instructions tasks.txt
    vlaforge export runs/octo-mt10 --format onnx --out exported/ddim10 --steps 10

Writes model.onnx + export.json (+ text_features.npz), checks onnxruntime against PyTorch on random
inputs (exit 1 if the actions differ by more than --tolerance) and prints both latencies.
Run the result with `vlaforge.export.onnx.OnnxPolicy(DIR)` (numpy + onnxruntime only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMATS = ("onnx",)


def read_instructions(path: str) -> list[str]:
    """A JSON list of strings, or a text file with one instruction per line (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"vlaforge export: --instructions {path}: no such file")
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise SystemExit(f"vlaforge export: --instructions {path}: expected a JSON list of strings")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]


def _run(args: argparse.Namespace) -> int:
    from vlaforge.errors import CheckpointError
    from vlaforge.export import ExportError

    try:
        from vlaforge.export.onnx_export import export_onnx

        instructions = read_instructions(args.instructions) if args.instructions else None
        result = export_onnx(
            args.run_dir,
            args.out,
            steps=args.steps,
            instructions=instructions,
            verify=not args.no_verify,
            tolerance=args.tolerance,
            latency_runs=args.latency_runs,
        )
    except ImportError as e:
        raise SystemExit(f"vlaforge export: {e}") from None
    except (ExportError, CheckpointError) as e:
        print(f"vlaforge export: {e}")
        return 1
    return 0 if result.verified or args.no_verify else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained Octo-layout policy to ONNX (checked against PyTorch)",
        description="Export a policy to a standalone ONNX graph (images, state, text, noise -> actions) "
        "plus export.json; verify it against PyTorch and print both latencies. See docs/deploy.md.",
    )
    p.add_argument("run_dir", help="run directory or policy checkpoint directory")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    p.add_argument("--out", required=True, help="output directory (created; files are overwritten)")
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps to unroll (default: the head's own)"
    )
    p.add_argument(
        "--instructions",
        default=None,
        help="MiniLM policies: file of instructions (one per line, or a JSON list) whose text features are "
        "precomputed into the export",
    )
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="max |onnxruntime - torch| allowed (robot units)"
    )
    p.add_argument("--latency-runs", type=int, default=20, help="timed predict calls per runtime (0: skip)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    p.set_defaults(func=_run)
