"""`vlaforge bench`: how fast a policy acts, where the time goes, and which fast path helps.

    vlaforge bench --recipe octo-tiny,octo-small --roofline          # random weights, Meta-World inputs
    vlaforge bench --recipe pi0-tiny,pi0-fast-tiny,openvla-tiny,openvla-oft-tiny,rt2-tiny
    vlaforge bench --recipe octo-small --head flow --paths all --runs 100
    vlaforge bench --checkpoint runs/octo-mt10 --device cuda

For each model: parameters, FLOPs per chunk (one full predict, all sampling steps), the stage
breakdown (Octo: tokenize / transformer / head / rest; π0: vision / backbone / expert steps; OpenVLA,
RT-2, π0-FAST: vision / prefix / decode tokens; OFT: vision / pass / head), chunk latency median and p90 over --runs calls,
control rate (chunk / latency), peak memory per call, and every fast path side by side with its
actions checked against the plain path. Writes benchmarks/results/bench-<version>.json (or --out)
and a PNG next to it. docs/performance.md explains the fast paths and the roofline multiple.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
from pathlib import Path
from typing import Any

PATH_NAMES = "inference_mode,bf16,compile,int8,prefix-cache"  # = fastpaths.PATHS (kept torch-free here)
HEAD_NAMES = ("diffusion", "flow", "binned", "l1", "mse")
LOADED = 0.5  # load average per core above which the result carries a "machine under load" note


def _split(text: str, allowed: list[str] | tuple[str, ...], flag: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise SystemExit(
            f"vlaforge bench: {flag}: unknown value(s) {bad or text!r}; choose from {list(allowed)}"
        )
    return list(dict.fromkeys(items))


def command_line(args: argparse.Namespace) -> str:
    """The invocation, rebuilt from the parsed options (also right when called as `main([...])`)."""
    parts = ["vlaforge", "bench"]
    for flag, value in (
        ("--recipe", args.recipe),
        ("--checkpoint", args.checkpoint),
        ("--head", args.head),
        ("--paths", args.paths),
        ("--runs", args.runs),
        ("--warmup", args.warmup),
        ("--steps", args.steps),
        ("--device", args.device),
        ("--threads", args.threads),
        ("--image-size", args.image_size),
        ("--out", args.out),
        ("--seed", args.seed),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.roofline:
        parts.append("--roofline")
    for note in args.note:
        parts += ["--note", note]
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    return env + shlex.join(parts)


# The ISA extensions that decide bf16 / int8 speed (what oneDNN and fbgemm can use).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _run(args: argparse.Namespace) -> int:
    import torch

    from vlaforge import __version__
    from vlaforge.bench import embodiment
    from vlaforge.bench.fastpaths import parse_paths
    from vlaforge.bench.measure import cpu_flags
    from vlaforge.bench.report import SCHEMA, default_out_path, model_label, plot, render_tables, write_json
    from vlaforge.bench.roofline import measure_matmul_throughput
    from vlaforge.bench.runner import LM_HEADS, bench_policy
    from vlaforge.inference.fastpaths import lm_family
    from vlaforge.info import machine_info
    from vlaforge.policies.registry import all_recipe_names, recipe_family

    if args.runs < 1 or args.warmup < 0:
        raise SystemExit(
            f"vlaforge bench: need --runs >= 1 and --warmup >= 0 (got {args.runs}, {args.warmup})"
        )
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"vlaforge bench: --steps must be >= 1, got {args.steps}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"vlaforge bench: --device {args.device}: CUDA is not available here (torch {torch.__version__}); "
            "use --device cpu"
        )
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise SystemExit(f"vlaforge bench: --device {args.device!r}: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        paths = parse_paths(args.paths)
    except ValueError as e:
        raise SystemExit(f"vlaforge bench: {e}") from None

    # What to benchmark: (label fields, builder) pairs; policies are built one at a time.
    models: list[tuple[dict[str, Any], Any]] = []
    if args.checkpoint:
        if args.head or args.image_size:
            raise SystemExit("vlaforge bench: --head and --image-size apply to --recipe, not to --checkpoint")
        if not Path(args.checkpoint).exists():
            raise SystemExit(f"vlaforge bench: --checkpoint {args.checkpoint} does not exist")
        models.append(
            ({"checkpoint": str(args.checkpoint)}, lambda: embodiment.load_checkpoint_policy(args.checkpoint))
        )
    else:
        recipes = _split(args.recipe, all_recipe_names(), "--recipe")
        heads = _split(args.head, HEAD_NAMES, "--head") if args.head else ["diffusion"]
        for recipe in recipes:
            fixed_head = not recipe_family(
                recipe
            ).capabilities.head_choice  # π0 / π0-FAST / OpenVLA / OFT / RT-2
            for head in [None] if fixed_head else heads:
                models.append(
                    (
                        {"recipe": recipe, "checkpoint": None},
                        lambda r=recipe, h=head: embodiment.build_recipe_policy(
                            r, h, image_size=args.image_size, seed=args.seed
                        ),
                    )
                )

    load_start = _load()
    machine = {
        **machine_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(ISA_FLAGS),
    }
    threads = torch.get_num_threads()
    roofline = None
    if args.roofline:
        print(
            f"measuring matmul throughput (fp32, bf16) on {device} with {threads} thread(s) ...", flush=True
        )
        roofline = {d: measure_matmul_throughput(d, device=device) for d in ("fp32", "bf16")}
        for d, r in roofline.items():
            print(f"  {d}: best {r.best_gflops:.1f} GFLOP/s (n={r.best_size}); by size {r.gflops_by_size}")

    results = []
    for label, build in models:
        try:
            policy = build().to(device)
        except (ValueError, OSError) as e:
            raise SystemExit(f"vlaforge bench: {e}") from None
        name = label.get("recipe") or label["checkpoint"]
        family = lm_family(policy)
        head = LM_HEADS[family] if family else policy.config.head
        print(f"{name} ({head}): {policy.num_parameters() / 1e6:.2f}M parameters, "
              f"paths {', '.join(paths)}", flush=True)  # fmt: skip
        record = bench_policy(
            policy,
            paths=paths,
            runs=args.runs,
            warmup=args.warmup,
            steps=args.steps,
            roofline=roofline,
            seed=args.seed,
            log=lambda s: print(s, flush=True),
        )
        results.append({**label, "recipe": policy.config.recipe, **record})
        print(
            f"  {model_label(results[-1])}: {record['paths']['inference_mode']['median_ms']:.2f} ms median",
            flush=True,
        )
        del policy

    load_end = _load()
    notes = list(args.note)
    cores = os.cpu_count() or 1
    busiest = max(load_start[:1] + load_end[:1], default=0.0)
    if busiest > LOADED * cores:
        notes.append(
            f"machine under load: 1-min load average up to {busiest} on {cores} cores during the run "
            "(other processes shared the CPU); latencies are upper bounds, compare paths within this run"
        )
    first = results[0]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "vlaforge": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command_line(args),
        "machine": machine,
        "device": str(device),
        "threads": threads,
        "embodiment": {
            "cameras": first["model"]["cameras"],
            "state_dim": None if args.checkpoint else embodiment.STATE_DIM,
            "action_dim": None if args.checkpoint else embodiment.ACTION_DIM,
            "instruction": embodiment.INSTRUCTION,
            "batch": 1,
            "weights": "checkpoint" if args.checkpoint else "random (recipe)",
        },
        "runs": args.runs,
        "warmup": args.warmup,
        "steps": args.steps,
        "paths": paths,
        "load_average": {"start": load_start, "end": load_end},
        "notes": notes,
        "roofline": None if roofline is None else {d: r.to_dict() for d, r in roofline.items()},
        "results": results,
    }
    print()
    print(render_tables(report))
    out = Path(args.out) if args.out else default_out_path(__version__)
    write_json(report, out)
    png = plot(report, out.with_suffix(".png"))
    print(f"\nwrote {out}" + (f" and {png}" if png else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="inference latency, FLOPs, stage breakdown and fast paths of a policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--recipe", help="comma-separated recipes, built with random weights (e.g. octo-tiny,octo-small)"
    )
    src.add_argument("--checkpoint", metavar="RUN_DIR", help="a trained policy directory or run directory")
    p.add_argument(
        "--head",
        help=f"action head(s) for --recipe, comma-separated: {'|'.join(HEAD_NAMES)} (default diffusion)",
    )
    p.add_argument(
        "--paths",
        default="all",
        help=f"fast paths to compare, comma-separated, from {PATH_NAMES} (default all); inference_mode, "
        "the plain path and reference, always runs. compile: 10-60 s per model on CPU with a warm inductor "
        "cache, minutes cold (octo blocks; the LM decode step of OpenVLA / RT-2 / π0-FAST)",
    )
    p.add_argument("--runs", type=int, default=50, help="timed calls per path (default 50)")
    p.add_argument(
        "--warmup", type=int, default=5, help="untimed calls per path after its first call (default 5)"
    )
    p.add_argument(
        "--steps", type=int, help="sampling steps of diffusion/flow heads (default: the head's own)"
    )
    p.add_argument(
        "--roofline",
        action="store_true",
        help="measure fp32/bf16 matmul peaks; report latency as a multiple of FLOPs / peak",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's choice, OMP_NUM_THREADS)"
    )
    p.add_argument(
        "--image-size", type=int, help="camera size override for --recipe (default 128; tests use 32)"
    )
    p.add_argument(
        "--out", help="JSON path (default benchmarks/results/bench-<version>.json); the PNG goes next to it"
    )
    p.add_argument("--seed", type=int, default=0, help="weights and observation seed (default 0)")
    p.add_argument(
        "--note", action="append", default=[], help="free text stored in the JSON's notes (repeatable)"
    )
    p.set_defaults(func=_run)
