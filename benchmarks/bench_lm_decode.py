"""Greedy decoding latency of `DecoderLM`: KV cache vs recomputing the whole sequence every step.

    .venv/bin/python benchmarks/bench_lm_decode.py                       # defaults below
    .venv/bin/python benchmarks/bench_lm_decode.py --calls 3 --new 7     # quick check

The workload is shaped like OpenVLA's action decoding at batch 1: a prompt of --prompt tokens
(OpenVLA: 256 image patches + ~20 instruction tokens) given as embeddings, then --new greedy tokens
(OpenVLA: 7 action dimensions; RT-2: 8). The model is a Llama-style DecoderLM of the given width and
depth with random weights (latency does not depend on them) and a 32000-token vocabulary. Both paths
use `generate_greedy` (use_cache=True / False) and must emit the same tokens, which is checked.

Cached and uncached calls alternate (cached, uncached, cached, ...) so load from other processes hits
both alike; the table reports medians over --calls calls after one warm-up call each, and the ratio
uncached / cached.

Writes benchmarks/results/lm_decode.json.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_inference import write_record

from vlaforge.models.lm import DecoderLM, LMConfig, generate_greedy

RESULTS = Path(__file__).resolve().parent / "results" / "lm_decode.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512, help="LM width (Llama-2-7B: 4096)")
    p.add_argument("--layers", type=int, default=8, help="LM depth (Llama-2-7B: 32)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--prompt", type=int, default=276, help="prompt tokens (OpenVLA: 256 image + ~20 text)")
    p.add_argument("--new", type=str, default="7,32", help="comma-separated numbers of generated tokens")
    p.add_argument("--calls", type=int, default=5, help="timed calls per setting and path")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = "python benchmarks/bench_lm_decode.py " + shlex.join(argv if argv is not None else sys.argv[1:])

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LMConfig(
        family="llama",
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 8 / 3) // 64 * 64,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        max_position=4096,
    )
    model = DecoderLM(config).eval()
    prompt = torch.randn(1, args.prompt, args.hidden)  # (1, Lp, D): image tokens + text embeddings

    def timed(new: int, use_cache: bool) -> tuple[float, torch.Tensor]:
        t = time.perf_counter()
        out = generate_greedy(model, inputs_embeds=prompt, max_new_tokens=new, use_cache=use_cache)
        return (time.perf_counter() - t) * 1e3, out.tokens

    rows = []
    for new in (int(x) for x in args.new.split(",")):
        timed(new, True), timed(new, False)  # warm-up
        cached_ms, uncached_ms, same = [], [], True
        for _ in range(args.calls):
            ms_c, tok_c = timed(new, True)
            ms_u, tok_u = timed(new, False)
            cached_ms.append(ms_c)
            uncached_ms.append(ms_u)
            same &= torch.equal(tok_c, tok_u)
        c, u = statistics.median(cached_ms), statistics.median(uncached_ms)
        rows.append(
            {
                "new_tokens": new,
                "cached_median_ms": round(c, 1),
                "uncached_median_ms": round(u, 1),
                "uncached_over_cached": round(u / c, 2),
                "cached_ms_per_token": round(c / new, 1),
                "same_tokens": same,
                "cached_ms": [round(x, 1) for x in cached_ms],
                "uncached_ms": [round(x, 1) for x in uncached_ms],
            }
        )

    from vlaforge.info import machine_info

    machine = machine_info()
    n_params = sum(q.numel() for q in model.parameters())
    print(f"command: {command}")
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), torch threads {args.threads}")
    print(
        f"model: llama-style, width {args.hidden}, depth {args.layers}, heads {args.heads}/{args.kv_heads} KV, "
        f"vocab {args.vocab} ({n_params / 1e6:.1f}M params, fp32); prompt {args.prompt} tokens, batch 1"
    )
    print()
    print("| new tokens | cached (ms) | recompute (ms) | recompute / cached | same tokens |")
    print("|---:|---:|---:|---:|:---:|")
    for r in rows:
        print(
            f"| {r['new_tokens']} | {r['cached_median_ms']:.1f} | {r['uncached_median_ms']:.1f} | "
            f"{r['uncached_over_cached']:.2f}x | {'yes' if r['same_tokens'] else 'NO'} |"
        )
    record = {
        "command": command,
        "machine": machine,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "model": {**config.__dict__, "parameters": n_params, "dtype": "float32"},
        "prompt_tokens": args.prompt,
        "calls": args.calls,
        "results": rows,
    }
    write_record(record, args.out)
    return 0 if all(r["same_tokens"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
