"""FAST action tokens on Meta-World MT10: tokens per chunk, compression and reconstruction error.

    OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_fast_tokenizer.py
    .venv/bin/python benchmarks/bench_fast_tokenizer.py --horizons 8 --max-train-chunks 2000   # quick check

For each chunk length H (default 8 = ``pi0-tiny``'s chunk, 16, and 50 = π0's chunk length, the paper's
setting; at MT10's 80 Hz, 50 steps are 0.625 s instead of the paper's 1 s at 50 Hz):

* chunks: every frame t of every episode gives the window of actions t .. t+H-1, the last action
  repeated past the episode end (what ``Dataset(root, chunk=H)`` returns for training);
* split: every ``--holdout-every``-th episode (default 10: 50 of the 500 episodes) is held out; the
  tokenizer is fitted on (at most ``--max-train-chunks``, sampled with a fixed seed) chunks of the other
  episodes and evaluated on every chunk of the held-out ones;
* normalization: the dataset's q01/q99 of ``action`` (meta/stats.json), every dimension (π0-FAST
  normalizes the gripper too); scale 10, vocabulary 1024 (the paper's defaults).

Reported per H: trained vocabulary size, tokens per chunk (mean, p50, p90, max), compression ratio
(H·A values per chunk / mean tokens; 256-bin tokenization as in RT-2 / OpenVLA spends one token per
value, ratio 1), non-zero quantized coefficients per chunk (what the BPE has to spell out), the
reconstruction error after encode -> decode in normalized units (against the clipped normalized
chunk) and in robot units (against the raw chunk), the largest per-chunk L2 error next to its bound
``0.5 · sqrt(H·A) / scale``, decode failures, and fit / encode / decode times. Writes
benchmarks/results/fast_tokenizer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data import Dataset
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "fast_tokenizer.json"


def episode_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """Episode actions (L, A) -> (L, H, A): the window t .. t+H-1 for every t, clamped to the last step."""
    steps = np.arange(len(actions))[:, None] + np.arange(horizon)[None, :]  # (L, H)
    return actions[np.minimum(steps, len(actions) - 1)]  # (L, H, A)


def load_chunks(root: Path, horizon: int, holdout_every: int) -> tuple[np.ndarray, np.ndarray, Dataset]:
    """(train chunks (N, H, A), held-out chunks (M, H, A), dataset) from the episodes of `root`."""
    ds = Dataset(root, cameras=[])  # tabular columns only: no video is decoded
    train, held_out = [], []
    for e in range(ds.num_episodes):
        chunks = episode_chunks(ds.episode(e)["action"].astype(np.float64), horizon)  # (L, H, A)
        (held_out if e % holdout_every == 0 else train).append(chunks)
    return np.concatenate(train), np.concatenate(held_out), ds


def bench_horizon(
    root: Path, horizon: int, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    train, held_out, ds = load_chunks(root, horizon, args.holdout_every)
    n_train_all = len(train)
    if args.max_train_chunks and n_train_all > args.max_train_chunks:
        train = train[np.sort(rng.choice(n_train_all, args.max_train_chunks, replace=False))]
    stats = ds.stats["action"]
    t0 = time.perf_counter()
    tok = FastTokenizer.fit(train, vocab_size=args.vocab_size, scale=args.scale, stats=stats)
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ids = tok.encode_batch(held_out)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = tok.decode_batch(ids)
    decode_s = time.perf_counter() - t0

    n_tokens = np.array([len(i) for i in ids])  # (M,)
    values = horizon * tok.action_dim
    target = tok.normalize(held_out)  # (M, H, A) clipped normalized chunks
    err_norm = np.abs(dec.normalized.astype(np.float64) - target)  # (M, H, A)
    err_robot = np.abs(dec.actions.astype(np.float64) - held_out)  # (M, H, A)
    l2 = np.sqrt((err_norm**2).sum(axis=(1, 2)))  # (M,)
    nonzero = (tok.quantize(target) != 0).sum(axis=(1, 2))  # (M,)
    return {
        "horizon": horizon,
        "action_dim": tok.action_dim,
        "values_per_chunk": values,
        "train_chunks": len(train),
        "train_chunks_available": n_train_all,
        "eval_chunks": len(held_out),
        "vocab_size": tok.vocab_size,
        "min_token": tok.min_token,
        "max_token": tok.max_token,
        "tokens_per_chunk": {
            "mean": float(n_tokens.mean()),
            "p50": float(np.percentile(n_tokens, 50)),
            "p90": float(np.percentile(n_tokens, 90)),
            "max": int(n_tokens.max()),
        },
        "compression_ratio": float(values / n_tokens.mean()),
        "nonzero_coefficients_mean": float(nonzero.mean()),
        "error_normalized": {"mean": float(err_norm.mean()), "max": float(err_norm.max())},
        "error_robot": {"mean": float(err_robot.mean()), "max": float(err_robot.max())},
        "l2_error_max": float(l2.max()),
        "l2_error_bound": 0.5 * np.sqrt(values) / tok.scale,
        "decode_failures": int((~dec.valid).sum()),
        "clipped_coefficients": tok.clipped_count,
        "fit_s": fit_s,
        "encode_ms_per_chunk": 1000 * encode_s / len(held_out),
        "decode_ms_per_chunk": 1000 * decode_s / len(held_out),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/mt10"))
    p.add_argument("--horizons", default="8,16,50", help="comma-separated chunk lengths H")
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--holdout-every", type=int, default=10, help="hold out episodes e with e %% N == 0")
    p.add_argument(
        "--max-train-chunks", type=int, default=0, help="subsample the training chunks (0 = use all)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args_text = shlex.join(argv if argv is not None else sys.argv[1:])
    command = f"python benchmarks/bench_fast_tokenizer.py {args_text}".rstrip()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    rows = [bench_horizon(args.data, int(h), args, rng) for h in args.horizons.split(",") if h.strip()]
    total_s = time.perf_counter() - t0

    from vlaforge.info import machine_info

    machine = machine_info()
    print(f"command: {command}")
    print(
        f"data: {args.data} (held out: every {args.holdout_every}th episode); scale {args.scale:g}, "
        f"vocab {args.vocab_size}; {machine['cpu']} ({machine['cores']} cores)"
    )
    print()
    print(
        "| H | H·A | train / eval chunks | vocab | tokens mean | p90 | max | H·A / tokens | non-zero coef | "
        "err norm mean / max | err robot mean / max | max L2 / bound | failures | fit s | enc / dec ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t, en, er = r["tokens_per_chunk"], r["error_normalized"], r["error_robot"]
        print(
            f"| {r['horizon']} | {r['values_per_chunk']} | {r['train_chunks']:,} / {r['eval_chunks']:,} | "
            f"{r['vocab_size']} | {t['mean']:.1f} | {t['p90']:.0f} | {t['max']} | {r['compression_ratio']:.2f} | "
            f"{r['nonzero_coefficients_mean']:.1f} | {en['mean']:.4f} / {en['max']:.3f} | "
            f"{er['mean']:.4f} / {er['max']:.3f} | {r['l2_error_max']:.3f} / {r['l2_error_bound']:.3f} | "
            f"{r['decode_failures']} | {r['fit_s']:.1f} | {r['encode_ms_per_chunk']:.3f} / "
            f"{r['decode_ms_per_chunk']:.3f} |"
        )
    ok = all(r["decode_failures"] == 0 and r["l2_error_max"] <= r["l2_error_bound"] + 1e-9 for r in rows)
    print(f"\nno decode failures and every chunk's L2 error within its bound: {'yes' if ok else 'NO'}")
    print(f"total {total_s:.1f} s")
    record = {
        "command": command,
        "machine": machine,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "data": str(args.data),
        "holdout_every": args.holdout_every,
        "scale": args.scale,
        "vocab_size_requested": args.vocab_size,
        "max_train_chunks": args.max_train_chunks,
        "seed": args.seed,
        "total_s": total_s,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
