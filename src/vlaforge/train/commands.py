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
    finetune: dict | None = None,
    weights: list[float] | None = None,
    cotrain: dict | None = None,
    camera_map: dict[str, dict[str, str]] | None = None,
    progress: bool = True,
):
    """Library entry point used by the CLI and quickstart. Returns (policy, TrainResult).

    finetune: {"init_from": CKPT, "allow_unknown": bool, "freeze": [globs], "train_only": [globs],
    "lora": LoRAConfig fields}. With init_from the architecture comes from the checkpoint and the
    embodiment from `data`; "train_only" (head-only tuning: ["head.*"]) freezes everything else and
    cannot be combined with "freeze" or "lora".
    data: one dataset root, or several as "a,b" / "name=path,..." (a cross-embodiment mixture, sampled
    with `weights`; state/action padded to the largest, statistics kept per dataset).
    camera_map: mixtures only, dataset name -> {its camera: the mixture's camera} (`parse_camera_map`).
    cotrain: {"vl": VL_DIR, "robot_fraction": f}: RT-2 co-training of a VLA token recipe with a
    vision-language directory (`vlaforge.data.cotrain`); one robot dataset, no --init-from.
    """
    from vlaforge.data import Dataset, MixtureDataset
    from vlaforge.policies.recipes import family_overrides, get_recipe, make_mixture_policy, make_policy
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.finetune import apply_finetune_setup, finetune_policy, parameter_table
    from vlaforge.train.lora import lora_preset
    from vlaforge.train.trainer import seed_everything, train

    r = get_recipe(recipe)
    check_training_setup(
        recipe, data, finetune=finetune, weights=weights, cotrain=cotrain, camera_map=camera_map
    )
    roots, names, mix_weights = parse_data(data, weights)
    ft = {k: v for k, v in (finetune or {}).items() if v}
    # --head / --no-augment are options of the Octo recipes only
    model_kw = family_overrides(recipe, {**(model_overrides or {}), "head": head, "language": language})
    cfg = TrainConfig(**{**r.train, **{k: v for k, v in (train_overrides or {}).items() if v is not None}})
    mixture = len(roots) > 1 or weights is not None
    # Before anything random is built: the initial weights (and LoRA adapters) are a function of the seed.
    seed_everything(cfg.seed)
    if cotrain:
        from vlaforge.data.vision_language import VisionLanguageDataset
        from vlaforge.policies.vla.recipes import make_cotraining_policy

        overrides = {k: v for k, v in model_kw.items() if v is not None}
        policy = make_cotraining_policy(
            recipe, Dataset(roots[0]), VisionLanguageDataset(cotrain["vl"]), **overrides
        )
    elif mixture:
        probe = MixtureDataset(
            {n: Dataset(r_) for n, r_ in zip(names, roots)}, mix_weights, seed=cfg.seed, cameras=camera_map
        )
        policy = make_mixture_policy(recipe, probe, **model_kw)
    elif ft.get("init_from"):
        probe = Dataset(roots[0])
        overrides = {k: v for k, v in model_kw.items() if v is not None}
        policy, report = finetune_policy(
            ft["init_from"], probe, allow_unknown=ft.get("allow_unknown", False), **overrides
        )
        if progress:
            print(report.format())
    else:
        policy = make_policy(recipe, Dataset(roots[0]), **model_kw)
    if ft.get("lora") == "recipe":  # --lora: the family's published LoRA settings, stored resolved for resume
        ft["lora"] = lora_preset(policy).to_dict()
    apply_finetune_setup(policy, ft)
    c = policy.config
    dataset = _training_data(roots, names, mix_weights, c, cfg, progress)
    if cotrain:
        cotrain = {
            "vl": str(Path(cotrain["vl"]).resolve()),
            "robot_fraction": float(cotrain["robot_fraction"]),
        }
        dataset = _cotraining_data(policy, dataset, cotrain, cfg.seed)
    if progress:
        n = policy.num_parameters()
        print(
            f"recipe {recipe} | head {policy.head_name} | language {policy.config.language} | {n / 1e6:.2f}M params"
        )
        print(f"dataset {data}: {len(dataset)} samples, {dataset.num_episodes} episodes")
        if cfg.word_dropout:
            print(f"instructions: each word deleted with probability {cfg.word_dropout} (--word-dropout)")
        if cotrain:
            print(f"co-training: {dataset!r}")
        if ft.get("freeze") or ft.get("train_only") or ft.get("lora"):
            print(parameter_table(policy))
    info = {
        "recipe": recipe,
        "data": [str(Path(r_).resolve()) for r_ in roots] if mixture else str(Path(roots[0]).resolve()),
        "names": names if mixture else None,
        "weights": mix_weights,
        "finetune": ft,
    }
    if cotrain:
        info["cotrain"] = cotrain
    return policy, train(policy, dataset, cfg, out, progress=progress, run_info=info)


def resume_training(run_dir: str | Path, *, train_overrides: dict | None = None, progress: bool = True):
    """Continue a run from its newest readable checkpoint (only budget/logging fields may change)."""
    from vlaforge.errors import CheckpointError
    from vlaforge.policies.octo.policy import Policy
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.finetune import apply_finetune_setup
    from vlaforge.train.trainer import latest_checkpoint, train

    run_dir = Path(run_dir)
    cfg_path = run_dir / "train_config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"cannot resume {run_dir}: no train_config.json (is this a vlaforge run directory?)"
        )
    saved = json.loads(cfg_path.read_text())
    cfg = TrainConfig(
        **{**saved["train"], **{k: v for k, v in (train_overrides or {}).items() if v is not None}}
    )
    # Modules and statistics come from the newest checkpoint's policy; train() then restores the raw
    # training weights, so LoRA adapters must exist first.
    policy = Policy.load(latest_checkpoint(run_dir) / "policy")
    apply_finetune_setup(policy, saved.get("finetune", {}))
    c = policy.config
    data = saved["data"]
    roots = data if isinstance(data, list) else [data]
    names = saved.get("names") or [Path(roots[0]).name]
    dataset = _training_data(roots, names, saved.get("weights"), c, cfg, progress)
    info = {
        "recipe": saved.get("recipe", c.recipe),
        "data": saved["data"],
        "names": saved.get("names"),
        "weights": saved.get("weights"),
        "finetune": saved.get("finetune", {}),
    }
    if saved.get("cotrain"):
        info["cotrain"] = saved["cotrain"]
        dataset = _cotraining_data(policy, dataset, saved["cotrain"], cfg.seed)
    return policy, train(policy, dataset, cfg, run_dir, progress=progress, resume=True, run_info=info)


def parse_data(data: str | Path, weights: list[float] | None) -> tuple[list[str], list[str], dict | None]:
    """ "a,b" or "name=path,..." -> (roots, names, {name: weight} | None)."""
    roots, names = [], []
    for part in str(data).split(","):
        name, _, path = part.partition("=") if "=" in part else (Path(part).name, "", part)
        roots.append(path)
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names {names} are not unique; name them with --data name=path,...")
    if weights is not None and len(weights) != len(roots):
        raise ValueError(f"--weights has {len(weights)} values for {len(roots)} datasets")
    return roots, names, (dict(zip(names, weights)) if weights is not None else None)


def parse_camera_map(specs: list[str] | None) -> dict[str, dict[str, str]] | None:
    """["mt10:corner=image,gripper=wrist_image", ...] -> {"mt10": {"corner": "image", ...}} (None: no map)."""
    if not specs:
        return None
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, sep, pairs = spec.partition(":")
        mapping = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)
        if not sep or not name or not mapping or len(mapping) != len(pairs.split(",")):
            raise ValueError(
                f"--camera-map {spec!r}: expected NAME:its_camera=policy_camera[,...], "
                "e.g. mt10:corner=image,gripper=wrist_image"
            )
        if name in out:
            raise ValueError(f"--camera-map names dataset '{name}' twice")
        out[name] = mapping
    return out


def check_training_setup(
    recipe: str,
    data: str | Path,
    *,
    finetune: dict | None = None,
    weights: list[float] | None = None,
    cotrain: dict | None = None,
    train_overrides: dict | None = None,
    camera_map: dict | None = None,
) -> None:
    """What `run_training` refuses before reading any data (a ValueError naming the option): unknown or
    repeated dataset names, weights that do not match them, fine-tuning options that do not combine, a
    mixture with --init-from, co-training outside a VLA token recipe, an unknown recipe, training
    settings `TrainConfig` rejects (``--steps 0``)."""
    from vlaforge.policies.recipes import get_recipe
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.finetune import check_finetune_setup

    overrides = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    TrainConfig(**{**get_recipe(recipe).train, **overrides})

    roots, names, _ = parse_data(data, weights)
    ft = {k: v for k, v in (finetune or {}).items() if v}
    check_finetune_setup(ft)
    mixture = len(roots) > 1 or weights is not None
    if camera_map and not mixture:
        raise ValueError("--camera-map renames a mixture's cameras: give several --data")
    unknown = sorted(set(camera_map or {}) - set(names))
    if unknown:
        raise ValueError(f"--camera-map names datasets {unknown} that are not in --data ({names})")
    if mixture and ft.get("init_from"):
        raise ValueError("--init-from with several --data is not supported yet")
    if cotrain:
        _check_cotrain(recipe, mixture, ft, float(cotrain["robot_fraction"]))
        if overrides.get("word_dropout"):
            raise ValueError(
                "--word-dropout with --cotrain-vl is not supported (it would cut words from the VL prompts)"
            )


def _check_cotrain(recipe: str, mixture: bool, ft: dict, robot_fraction: float) -> None:
    from vlaforge.policies.vla.recipes import VLA_RECIPES

    if not 0.0 < robot_fraction < 1.0:
        raise ValueError(f"--robot-fraction {robot_fraction}: must be in (0, 1), e.g. 0.66 (RT-2)")
    token_recipes = [n for n, r in VLA_RECIPES.items() if r.model.get("variant") != "oft"]
    if recipe not in token_recipes:
        raise ValueError(
            f"--cotrain-vl mixes vision-language batches into a VLA recipe with an LM loss "
            f"({', '.join(token_recipes)}); '{recipe}' is not one"
        )
    if mixture:
        raise ValueError("--cotrain-vl takes one robot --data (the VLA recipes do not train on mixtures)")
    if ft.get("init_from"):
        raise ValueError("--cotrain-vl with --init-from is not supported yet")


def _cotraining_data(policy, robot, cotrain: dict, seed: int):
    """The robot dataset with the vision-language records mixed in (`data.cotrain.CoTrainingDataset`),
    their images on `policy`'s main camera (its other cameras see zeros)."""
    from vlaforge.data.cotrain import CoTrainingDataset
    from vlaforge.data.vision_language import VisionLanguageDataset
    from vlaforge.policies.embodiment import main_camera

    camera = main_camera(policy.camera_names)
    vl = VisionLanguageDataset(cotrain["vl"])
    return CoTrainingDataset(robot, vl, cotrain["robot_fraction"], seed, camera=camera)


def _training_data(roots, names, weights, policy_config, cfg, progress: bool):
    """One Dataset (frames cached if configured) or a MixtureDataset of several (the camera map is the
    policy's, so a resumed run maps its cameras as the first start did)."""
    from vlaforge.data import Dataset, MixtureDataset

    def load(root: str):
        ds = Dataset(root, history=policy_config.history, chunk=policy_config.chunk)
        if cfg.cache_frames:
            ds.cache_frames(progress=progress)
        return ds

    if len(roots) == 1 and weights is None:
        return load(roots[0])
    cameras = getattr(policy_config, "dataset_cameras", None)
    return MixtureDataset({n: load(r) for n, r in zip(names, roots)}, weights, seed=cfg.seed, cameras=cameras)


def _run(args: argparse.Namespace) -> int:
    from vlaforge.train import distributed

    main = distributed.current().is_main  # under torchrun only rank 0 prints
    if args.parallel == "fsdp":
        if not distributed.current().enabled:
            raise SystemExit(
                "--fsdp shards the model over several processes: launch with "
                "`torchrun --nproc_per_node N -m vlaforge.train ... --fsdp` (N >= 2); "
                "a single process holds the whole model anyway, so drop --fsdp there."
            )
    train_kw = {
        "steps": args.steps,
        "minutes": args.minutes,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "num_workers": args.workers,
        "threads": args.threads,
        "seed": args.seed,
        "save_every": args.save_every,
        "log_every": args.log_every,
        "cache_frames": not args.no_cache,
        "cache_features": not args.no_feature_cache,
        "precision": args.precision,
        "grad_accum": args.grad_accum,
        "grad_checkpointing": args.grad_checkpointing or None,
        "parallel": args.parallel,
        "eval_every": args.eval_every,
        "eval_tasks": args.eval_tasks,
        "eval_episodes": args.eval_episodes,
        "eval_protocol": args.eval_protocol,
        "word_dropout": args.word_dropout,
    }
    if args.resume:
        overrides = {
            k: train_kw[k]
            for k in ("steps", "minutes", "parallel", "grad_checkpointing", "log_every", "threads")
        }
        _, res = resume_training(args.resume, train_overrides=overrides, progress=main)
        if main:
            _print_result(res)
        return 0
    if not args.data or not args.out:
        raise SystemExit("vlaforge train: --data and --out are required (or --resume RUN_DIR)")
    model_kw = json.loads(args.model_overrides) if args.model_overrides else {}
    if args.no_augment:
        model_kw["augment"] = False
    lora = None
    if args.lora and args.lora_rank:
        raise SystemExit(
            "vlaforge train: --lora (the recipe's published LoRA settings) or --lora-rank, not both"
        )
    if args.lora:
        lora = "recipe"
    elif args.lora_rank:
        lora = {
            "rank": args.lora_rank,
            "alpha": args.lora_alpha if args.lora_alpha is not None else float(args.lora_rank),
            "dropout": args.lora_dropout,
            "targets": args.lora_targets,
            "train_also": args.lora_train_also,
        }
    finetune = {
        "init_from": args.init_from,
        "allow_unknown": args.allow_unknown_keys,
        "freeze": args.freeze,
        "train_only": args.train_only,
        "lora": lora,
    }
    weights = [float(x) for x in args.weights.split(",")] if args.weights else None
    cotrain = _cotrain_arg(args)
    try:  # e.g. --train-only with --lora-rank: refused before any data is read
        camera_map = parse_camera_map(args.camera_map)
        check_training_setup(
            args.recipe,
            args.data,
            finetune=finetune,
            weights=weights,
            cotrain=cotrain,
            train_overrides=train_kw,
            camera_map=camera_map,
        )
    except ValueError as e:
        raise SystemExit(f"vlaforge train: {e}") from None
    _, res = run_training(
        args.recipe,
        args.data,
        args.out,
        head=args.head,
        language=args.language,
        train_overrides=train_kw,
        model_overrides=model_kw,
        finetune=finetune,
        weights=weights,
        cotrain=cotrain,
        camera_map=camera_map,
        progress=main,
    )
    if main:
        _print_result(res)
    return 0


def _cotrain_arg(args: argparse.Namespace) -> dict | None:
    if args.cotrain_vl is None:
        if args.robot_fraction is not None:
            raise SystemExit("--robot-fraction sets the co-training mixture: give --cotrain-vl VL_DIR too")
        return None
    fraction = 0.5 if args.robot_fraction is None else args.robot_fraction
    return {"vl": args.cotrain_vl, "robot_fraction": fraction}


def _print_result(res) -> None:
    print(
        f"done: {res.steps} steps in {res.wall_s / 60:.1f} min, {res.samples_per_s:.0f} samples/s, "
        f"data wait {res.data_wait_fraction:.1%}, final loss {res.final_loss:.4f}"
    )
    print(
        f"policy: {res.run_dir / 'policy'}   summary: {res.run_dir / 'train_summary.json'}   curve: {res.run_dir / 'loss.png'}"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy recipe on a dataset")
    p.add_argument("--recipe", default="octo-tiny", help="recipe name (see `vlaforge train --list-recipes`)")
    p.add_argument(
        "--data", help="dataset root (LeRobot v3.0 or v2.1), or a mixture: 'a,b' or 'name=path,name2=path2'"
    )
    p.add_argument(
        "--weights", default=None, help="mixture sampling weights, comma-separated, one per --data"
    )
    p.add_argument(
        "--camera-map",
        action="append",
        metavar="NAME:CAM=POLICY_CAM,...",
        help="a mixture dataset's cameras under the policy's names, e.g. mt10:corner=image,gripper=wrist_image "
        "(repeat per dataset; `vlaforge eval --dataset NAME` maps them back)",
    )
    p.add_argument("--out", help="run directory to create")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed/finished run (--steps, --minutes, --fsdp, --grad-checkpointing may change)",
    )
    p.add_argument("--head", choices=["diffusion", "flow", "binned", "l1", "mse"], default=None)
    p.add_argument("--language", choices=["words", "minilm"], default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget (the LR schedule follows it, so the run is not bit-reproducible)",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the training process")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument(
        "--log-every", type=int, default=None, help="steps per logged loss (the curve's resolution)"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="decode video per sample instead of caching frames"
    )
    p.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="run a frozen pretrained image tower (Lite0) on every sample instead of once per frame",
    )
    p.add_argument("--no-augment", action="store_true", help="disable image augmentation")
    p.add_argument(
        "--model-overrides", default=None, help="JSON of PolicyConfig overrides, e.g. '{\"depth\": 2}'"
    )
    perf = p.add_argument_group("precision and memory")
    perf.add_argument(
        "--precision", choices=["fp32", "bf16"], default=None, help="bf16 autocasts the forward pass"
    )
    perf.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    perf.add_argument(
        "--grad-checkpointing", action="store_true", help="recompute transformer blocks in backward"
    )
    par = p.add_argument_group("several processes (under torchrun -m vlaforge.train)")
    par.add_argument(
        "--parallel",
        choices=["ddp", "fsdp"],
        default=None,
        help="ddp (default): a full model copy per rank; fsdp: weights, gradients and AdamW state sharded",
    )
    par.add_argument(
        "--fsdp", dest="parallel", action="store_const", const="fsdp", help="shorthand for --parallel fsdp"
    )
    ev = p.add_argument_group("evaluation during training")
    ev.add_argument("--eval-every", type=int, default=None, help="run simulator episodes every N steps")
    ev.add_argument("--eval-tasks", default=None, help="e.g. mt10 or reach,drawer-close")
    ev.add_argument("--eval-episodes", type=int, default=None, help="episodes per task (fixed eval seeds)")
    ev.add_argument(
        "--eval-protocol",
        default=None,
        help="Meta-World protocol of those episodes: vlaforge (default) or lerobot (for a `record --protocol "
        "lerobot` dataset; validation seeds 2000.., never its test seeds 1000..)",
    )
    p.add_argument(
        "--word-dropout",
        type=float,
        default=None,
        metavar="P",
        help="instruction augmentation: delete each word of a sample's instruction with probability P "
        "(e.g. 0.15), so the policy does not key on one exact phrasing (default 0 = off)",
    )
    co = p.add_argument_group("co-training (RT-2; VLA token recipes)")
    co.add_argument(
        "--cotrain-vl",
        metavar="VL_DIR",
        default=None,
        help="vision-language directory (vl.jsonl + images) mixed into the robot batches",
    )
    co.add_argument(
        "--robot-fraction",
        type=float,
        default=None,
        help="share of robot samples in the co-training mixture, in (0, 1); default 0.5 (RT-2: ~0.5-0.66)",
    )
    ft = p.add_argument_group("fine-tuning")
    ft.add_argument("--init-from", metavar="CKPT", help="start from a trained policy (run dir or policy dir)")
    ft.add_argument(
        "--allow-unknown-keys", action="store_true", help="ignore checkpoint weights the new policy lacks"
    )
    ft.add_argument(
        "--freeze", nargs="+", default=None, metavar="GLOB", help="freeze parameters, e.g. 'image_encoders.*'"
    )
    ft.add_argument(
        "--train-only",
        nargs="+",
        default=None,
        metavar="GLOB",
        help="train only the matching parameters, freeze the rest (head-only tuning: 'head.*')",
    )
    ft.add_argument(
        "--lora",
        action="store_true",
        help="the recipe family's published LoRA settings: OpenVLA/OFT/RT-2 rank 32 (alpha 16) on all "
        "linear layers; pi0/pi05 openpi's rank 16 backbone + rank 32 expert; pi0-fast rank 16",
    )
    ft.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="add peft LoRA adapters of this rank to linear layers (needs vlaforge[lora])",
    )
    ft.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    ft.add_argument("--lora-dropout", type=float, default=0.0)
    ft.add_argument("--lora-targets", nargs="+", default=["transformer.*"], metavar="GLOB")
    ft.add_argument(
        "--lora-train-also",
        nargs="+",
        default=["head.*"],
        metavar="GLOB",
        help="kept trainable besides the adapters",
    )
    p.set_defaults(func=_run)
