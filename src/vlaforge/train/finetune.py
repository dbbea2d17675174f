"""Fine-tuning a pretrained policy: the workflow, the run's "finetune" section, and a parameter table.

The workflow users run (Octo's "fine-tune on your own robot", openpi's LoRA configs):

    policy, report = finetune_policy("runs/pretrain", new_dataset)   # architecture from the checkpoint,
    print(report.format())                                          # embodiment from the new data
    apply_lora(policy, ["transformer.*"], rank=16, train_also=["head.*"])   # or freeze / freeze_all_but
    print(parameter_table(policy))
    train(policy, ...)                                              # the optimizer sees requires_grad only
    merge_lora(policy); policy.save("runs/ft/deploy")               # a plain checkpoint, Policy.load reads it

The pieces live by job: ``init_from.py`` (:func:`load_pretrained` and its shape report, word-embedding
remap), ``freeze.py`` (:func:`freeze` / :func:`freeze_all_but` globs), ``lora.py`` (peft adapters:
:func:`apply_lora`, :func:`lora_preset`, :func:`merge_lora`, :func:`export_state_dict`). This module
builds a policy for new data from a checkpoint (:func:`finetune_policy`), checks and re-applies a
run's recorded fine-tuning setup, and prints trainable-parameter tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from vlaforge.errors import CheckpointError
from vlaforge.policies.base import CONFIG_FILE, resolve_checkpoint
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import Policy
from vlaforge.train.freeze import freeze, freeze_all_but
from vlaforge.train.init_from import InitReport, load_pretrained
from vlaforge.train.lora import LoRAConfig

# Fields of PolicyConfig that describe the robot (taken from the new dataset when fine-tuning);
# every other field describes the architecture and is taken from the pretrained checkpoint.
EMBODIMENT_FIELDS = ("cameras", "state_dim", "action_dim", "fps", "unnormalized_action_dims")


def finetune_policy(
    checkpoint: str | Path, dataset: Any, *, allow_unknown: bool = False, **overrides: Any
) -> tuple[Policy, InitReport]:
    """Build a policy for ``dataset`` with the checkpoint's architecture, then :func:`load_pretrained`.

    The embodiment (:data:`EMBODIMENT_FIELDS`: cameras, state/action sizes, fps, gripper dims),
    the normalization statistics and the vocabulary come from the new dataset; everything else
    (width, depth, head, chunk, history, ...) from the checkpoint's config, so users do not have
    to repeat the pretraining flags. ``overrides`` change PolicyConfig fields on top (e.g. a new
    ``head``, which then needs ``allow_unknown`` for the old head's weights).
    """
    from vlaforge.policies.embodiment import task_texts
    from vlaforge.policies.octo.recipes import policy_from_config
    from vlaforge.policies.recipes import config_from_dataset

    d = resolve_checkpoint(checkpoint)
    try:
        saved = PolicyConfig.from_dict(json.loads((d / CONFIG_FILE).read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_FILE} is not a vlaforge policy config: {e}") from e
    arch = {k: v for k, v in saved.to_dict().items() if k not in EMBODIMENT_FIELDS and k != "recipe"}
    cfg = config_from_dataset(saved.recipe, dataset, **{**arch, **overrides})
    policy = policy_from_config(cfg, dataset.stats, task_texts(dataset))
    return policy, load_pretrained(policy, d, allow_unknown=allow_unknown)


# ================================================================================================ table


def parameter_counts(policy: nn.Module) -> dict[str, tuple[int, int]]:
    """Top-level module (or top-level parameter) name -> (trainable, total) parameter counts."""
    counts: dict[str, list[int]] = {}
    for name, p in policy.named_parameters():
        row = counts.setdefault(name.split(".")[0], [0, 0])
        row[1] += p.numel()
        if p.requires_grad:
            row[0] += p.numel()
    return {k: (v[0], v[1]) for k, v in counts.items()}


def parameter_table(policy: nn.Module) -> str:
    """Trainable / total parameters per top-level module, then peft's one-line summary."""
    counts = parameter_counts(policy)
    trainable = sum(t for t, _ in counts.values())
    total = sum(n for _, n in counts.values())
    w = max([len("module"), len("total"), *(len(k) for k in counts)])
    lines = [f"{'module':<{w}}  {'trainable':>13}  {'total':>13}  {'trainable%':>10}"]
    for name, (t, n) in counts.items():
        lines.append(f"{name:<{w}}  {t:>13,}  {n:>13,}  {100 * t / n if n else 0.0:>10.2f}")
    lines.append("-" * len(lines[0]))
    lines.append(
        f"{'total':<{w}}  {trainable:>13,}  {total:>13,}  {100 * trainable / total if total else 0.0:>10.2f}"
    )
    pct = 100 * trainable / total if total else 0.0
    lines.append(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {pct:.4f}")
    return "\n".join(lines)


def check_finetune_setup(setup: dict[str, Any]) -> None:
    """Refuse unknown keys and contradictory settings of a "finetune" section, before any work is done."""
    known = {"init_from", "allow_unknown", "freeze", "train_only", "lora"}
    unknown = sorted(set(setup) - known)
    if unknown:
        raise ValueError(f"unknown fine-tuning setting(s) {unknown}; known: {sorted(known)}")
    lora = setup.get("lora")
    if lora is not None and lora != "recipe" and not isinstance(lora, dict):
        raise ValueError(f"lora must be LoRAConfig fields (a dict) or 'recipe' (--lora), got {lora!r}")
    if setup.get("train_only") and (setup.get("lora") or setup.get("freeze")):
        other = "--lora-rank (lora)" if setup.get("lora") else "--freeze"
        raise ValueError(
            f"--train-only (train_only) cannot be combined with {other}: it already freezes every "
            "parameter it does not match. With LoRA, keep extra parameters trainable next to the adapters "
            "with --lora-train-also (e.g. 'head.*'); to freeze some modules and train the rest, use --freeze."
        )


def apply_finetune_setup(policy: nn.Module, setup: dict[str, Any]) -> None:
    """Re-apply the freezing, head-only training and LoRA recorded in a run's "finetune" section.

    setup: ``{"freeze": [globs], "train_only": [globs], "lora": LoRAConfig fields}`` (plus
    ``init_from`` / ``allow_unknown``, which only matter when the policy is built). ``train_only``
    is :func:`freeze_all_but` (head-only tuning: ``["head.*"]``) and excludes the other two.
    """
    check_finetune_setup(setup)
    if setup.get("freeze"):
        freeze(policy, setup["freeze"])
    if setup.get("train_only"):
        freeze_all_but(policy, setup["train_only"])
    if setup.get("lora"):
        LoRAConfig(**setup["lora"]).apply(policy)
