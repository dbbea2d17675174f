"""`vlaforge train`: train a recipe on a LeRobot-format dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_training(
    recipe: str,
    data: str | Path,
    out: str | Path,
    *,
    head: str | None = None,
    language: str | None = None,
    train_overrides: dict | None = None,
    model_overrides: dict | None = None,
    progress: bool = True,
):
    """Library entry point used by the CLI and quickstart. Returns (policy, TrainResult)."""
    from vlaforge.data import Dataset
    from vlaforge.models.recipes import get_recipe, make_policy
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.trainer import train

    r = get_recipe(recipe)
    probe = Dataset(data)
    model_kw = {**(model_overrides or {}), "head": head, "language": language}
    history = model_kw.get("history") or r.model.get("history", 1)
    chunk = model_kw.get("chunk") or r.model.get("chunk", 1)
    cfg = TrainConfig(**{**r.train, **{k: v for k, v in (train_overrides or {}).items() if v is not None}})
    dataset = Dataset(data, history=history, chunk=chunk)
    if cfg.cache_frames and hasattr(dataset, "cache_frames"):
        dataset.cache_frames(progress=progress)
    policy = make_policy(recipe, probe, **model_kw)
    if progress:
        n = policy.num_parameters()
        print(
            f"recipe {recipe} | head {policy.config.head} | language {policy.config.language} | {n / 1e6:.2f}M params"
        )
        print(
            f"dataset {data}: {len(dataset)} samples, {dataset.num_episodes} episodes, history {history}, chunk {chunk}"
        )
    result = train(policy, dataset, cfg, out, progress=progress)
    return policy, result


def _run(args: argparse.Namespace) -> int:
    train_kw = {
        "steps": args.steps,
        "minutes": args.minutes,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "num_workers": args.workers,
        "threads": args.threads,
        "seed": args.seed,
        "save_every": args.save_every,
        "cache_frames": not args.no_cache,
    }
    model_kw = json.loads(args.model_overrides) if args.model_overrides else {}
    if args.no_augment:
        model_kw["augment"] = False
    _, res = run_training(
        args.recipe,
        args.data,
        args.out,
        head=args.head,
        language=args.language,
        train_overrides=train_kw,
        model_overrides=model_kw,
    )
    print(
        f"done: {res.steps} steps in {res.wall_s / 60:.1f} min, {res.samples_per_s:.0f} samples/s, "
        f"data wait {res.data_wait_fraction:.1%}, final loss {res.final_loss:.4f}"
    )
    print(
        f"policy: {res.run_dir / 'policy'}   summary: {res.run_dir / 'train_summary.json'}   curve: {res.run_dir / 'loss.png'}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy recipe on a dataset")
    p.add_argument("--recipe", default="octo-tiny", help="recipe name (see `vlaforge train --list-recipes`)")
    p.add_argument("--data", required=True, help="dataset root (LeRobot v3.0 or v2.1 layout)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--head", choices=["diffusion", "flow", "binned", "l1", "mse"], default=None)
    p.add_argument("--language", choices=["words", "minilm"], default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--minutes", type=float, default=None, help="wall-clock budget (the LR schedule follows it)"
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the training process")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument(
        "--no-cache", action="store_true", help="decode video per sample instead of caching frames"
    )
    p.add_argument("--no-augment", action="store_true", help="disable image augmentation")
    p.add_argument(
        "--model-overrides", default=None, help="JSON of PolicyConfig overrides, e.g. '{\"depth\": 2}'"
    )
    p.set_defaults(func=_run)
