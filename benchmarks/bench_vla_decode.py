"""OpenVLA-OFT parallel decoding vs OpenVLA autoregressive decoding of the same action chunk.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_vla_decode.py        # tiny + small LM
    .venv/bin/python benchmarks/bench_vla_decode.py --sizes tiny --calls 5                # quick check

Both policies get the same backbone: the ``-tiny`` recipes' fused DINOv2 + SigLIP towers (32 px,
16 patches), the same DecoderLM (``tiny``: the recipes' 128 wide x 4 layers; ``small``: 512 x 8,
8 heads, MLP 1376) and the same chunk of H = 8 steps x A = 7 dimensions = 56 action values, one
camera, batch 1, fp32, random weights (latency does not depend on them), ``torch.inference_mode``:

* **openvla (AR)**: ``openvla-tiny`` with ``chunk=8``: the 56 action tokens are generated one by one
  by greedy decoding with the KV cache (prefix once, then 55 one-token passes);
* **openvla (AR, no cache)**: the same tokens recomputing the whole sequence at every step (the
  reference path, ``use_cache=False``); both AR paths must emit the same actions (checked);
* **openvla-oft**: ``openvla-oft-tiny``: one forward pass over prefix + 56 zero placeholder tokens
  (bidirectional among themselves) and the L1 MLP-ResNet head.

Per policy it times the whole ``predict_batch`` chunk (vision + prompt + decoding) and the decoding
alone from a precomputed prefix (``_decode_tokens`` / ``_oft_actions``). The two prefixes differ by
OFT's proprio token (one more token); the AR model's vocabulary holds the 256 action ids on top of
the prompt words (its output layer is larger). Calls alternate between the quantities so load from
other processes hits all alike; medians over --calls calls after two warm-up calls each.
Writes benchmarks/results/vla_decode.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.policies.recipes import make_policy
from vlaforge.policies.vla.policy import VLAPolicy
from vlaforge.policies.vla.recipes import VLA_RECIPES

RESULTS = Path(__file__).resolve().parent / "results" / "vla_decode.json"
TASKS = ["push the red block to the goal", "open the top drawer"]
CHUNK, ACTION_DIM, STATE_DIM, FRAME = 8, 7, 8, 64
# LM sizes (LMConfig fields changed from the tiny recipes' Llama; the vocabulary is set at build).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"hidden_size": 512, "intermediate_size": 1376, "num_layers": 8, "num_heads": 8,
              "num_kv_heads": 8, "head_dim": 64},
}  # fmt: skip


class _BenchDataset:
    """The little of a `vlaforge.data.Dataset` a VLA recipe reads: features, statistics, fps, tasks."""

    fps = 10.0

    def __init__(self) -> None:
        self.features = {
            "observation.images.corner": {"dtype": "video", "shape": [FRAME, FRAME, 3]},
            "observation.state": {"dtype": "float32", "shape": [STATE_DIM], "names": None},
            "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": None},
        }
        self.stats = {
            k: {
                "mean": np.zeros(d, np.float32),
                "std": np.ones(d, np.float32),
                "q01": -np.ones(d, np.float32),
                "q99": np.ones(d, np.float32),
            }
            for k, d in (("observation.state", STATE_DIM), ("action", ACTION_DIM))
        }

        class _Meta:
            tasks = TASKS

        self.meta = _Meta()


def _batch() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "observation.images.corner": torch.randint(
            0, 256, (1, 1, FRAME, FRAME, 3), generator=g, dtype=torch.uint8
        ),
        "observation.state": torch.randn(1, 1, STATE_DIM, generator=g),
        "task": [TASKS[0]],
    }


def _build(recipe: str, size: str) -> VLAPolicy:
    torch.manual_seed(0)
    lm = {**VLA_RECIPES[recipe].model["lm"], **SIZES[size]}
    policy = make_policy(recipe, _BenchDataset(), chunk=CHUNK, lm=lm)
    assert isinstance(policy, VLAPolicy)
    return policy.eval()


def bench_size(size: str, calls: int) -> dict[str, Any]:
    ar, oft = _build("openvla-tiny", size), _build("openvla-oft-tiny", size)
    batch = _batch()
    with torch.inference_mode():
        ar_prefix, ar_valid = ar._prefix(batch)  # (1, P, D), (1, P)
        oft_prefix, oft_valid = oft._prefix(batch)  # (1, P + 1, D): + the proprio token
        fns = {
            "ar_chunk": lambda: ar.predict_batch(batch, use_cache=True),
            "ar_nocache_chunk": lambda: ar.predict_batch(batch, use_cache=False),
            "oft_chunk": lambda: oft.predict_batch(batch),
            "ar_decode": lambda: ar._decode_tokens(ar_prefix, ar_valid, True),
            "oft_decode": lambda: oft._oft_actions(oft_prefix, oft_valid),
            "ar_prefix": lambda: ar._prefix(batch),
            "oft_prefix": lambda: oft._prefix(batch),
        }
        a_cached, a_recomputed = fns["ar_chunk"](), fns["ar_nocache_chunk"]()
        same_tokens = bool(torch.equal(a_cached, a_recomputed))
        for f in fns.values():  # two warm-up calls each
            f()
            f()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(calls):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    cfg = ar.lm.config
    return {
        "size": size,
        "lm": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "family"},
        "lm_parameters": {"openvla": sum(p.numel() for p in ar.lm.parameters()),
                          "oft": sum(p.numel() for p in oft.lm.parameters())},
        "vision_parameters": sum(p.numel() for p in ar.vision_tower.parameters()),
        "oft_head_parameters": sum(p.numel() for p in oft.action_head.parameters()),  # type: ignore[union-attr]
        "prefix_tokens": {"openvla": int(ar_prefix.shape[1]), "oft": int(oft_prefix.shape[1])},
        "prompt_tokens_real": int(ar_valid.sum()) - ar.n_image_tokens,
        "chunk": CHUNK,
        "action_dim": ACTION_DIM,
        "action_tokens": CHUNK * ACTION_DIM,
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "ar_over_oft_chunk": round(med["ar_chunk"] / med["oft_chunk"], 2),
        "ar_over_oft_decode": round(med["ar_decode"] / med["oft_decode"], 2),
        "ar_nocache_over_oft_chunk": round(med["ar_nocache_chunk"] / med["oft_chunk"], 2),
        "ar_cached_equals_recomputed": same_tokens,
        "ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,small", help=f"comma-separated LM sizes from {sorted(SIZES)}")
    p.add_argument("--calls", type=int, default=20, help="timed calls per quantity (after 2 warm-up calls)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = "python benchmarks/bench_vla_decode.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    torch.set_num_threads(args.threads)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    rows = [bench_size(s, args.calls) for s in sizes]

    from vlaforge.info import machine_info

    machine = machine_info()
    print(f"command: {command}")
    print(
        f"machine: {machine['cpu']} ({machine['cores']} cores), torch threads {args.threads}; batch 1, fp32"
    )
    print(
        f"chunk H={CHUNK} x A={ACTION_DIM} = {CHUNK * ACTION_DIM} action values; medians of {args.calls} calls\n"
    )
    print(
        "| LM (params) | prefix tokens AR / OFT | AR chunk (ms) | AR no-cache chunk (ms) | OFT chunk (ms) | "
        "AR / OFT chunk | AR decode (ms) | OFT decode (ms) | AR / OFT decode |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m, lm = r["median_ms"], r["lm"]
        print(
            f"| {r['size']}: {lm['hidden_size']} x {lm['num_layers']} ({r['lm_parameters']['openvla'] / 1e6:.1f}M) "
            f"| {r['prefix_tokens']['openvla']} / {r['prefix_tokens']['oft']} | {m['ar_chunk']:.1f} | "
            f"{m['ar_nocache_chunk']:.1f} | {m['oft_chunk']:.1f} | {r['ar_over_oft_chunk']:.1f}x | "
            f"{m['ar_decode']:.1f} | {m['oft_decode']:.1f} | {r['ar_over_oft_decode']:.1f}x |"
        )
    ok = all(r["ar_cached_equals_recomputed"] for r in rows)
    print(f"\ncached and recomputed autoregressive decoding give the same actions: {'yes' if ok else 'NO'}")
    record = {
        "command": command,
        "machine": machine,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "calls": args.calls,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
