"""``--init-from``: initialise a freshly built policy from a pretrained checkpoint, and report what fit.

:func:`load_pretrained` copies every weight whose shape still fits and *lists* the ones it could
not use, because a new embodiment (action size, state size, cameras) changes a few tensors and a
silent partial load is the classic fine-tuning bug. Checkpoint keys the new policy does not have
are an error unless allowed: they usually mean the wrong checkpoint or a different head.
Word embeddings are remapped word by word, since a new dataset's vocabulary numbers words
differently and copying rows by index would give every shared word a stranger's embedding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file

from vlaforge.errors import CheckpointError
from vlaforge.models.encoders import LanguageEncoder, WordTokenizer
from vlaforge.policies.base import CONFIG_FILE, WEIGHTS_FILE, resolve_checkpoint
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import Policy
from vlaforge.train.lora import lora_layers


class ShapeChange(NamedTuple):
    """A checkpoint tensor that did not fit: the policy keeps its fresh initialisation for ``key``."""

    key: str
    checkpoint_shape: tuple[int, ...]
    policy_shape: tuple[int, ...]


class Remapped(NamedTuple):
    """A word-embedding table copied row by word: ``copied`` rows came from the checkpoint."""

    key: str
    copied: int
    new_words: list[str]  # words of the new vocabulary the checkpoint never saw (fresh rows)


@dataclass
class InitReport:
    """What :func:`load_pretrained` did with each tensor; ``format()`` prints it as a table."""

    checkpoint: Path
    loaded: list[str] = field(default_factory=list)  # copied as is
    reinitialized: list[ShapeChange] = field(default_factory=list)  # shape changed: fresh init kept
    missing: list[str] = field(default_factory=list)  # in the policy, not in the checkpoint: fresh init
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint only: dropped (allow_unknown)
    remapped: list[Remapped] = field(default_factory=list)  # word embeddings copied by word
    config_changes: list[str] = field(default_factory=list)  # "field: checkpoint -> policy"
    loaded_numel: int = 0  # number of scalar weights copied from the checkpoint
    total_numel: int = 0  # number of scalar weights in the policy's state dict

    @property
    def fresh(self) -> list[str]:
        """Every key of the policy that still holds its fresh initialisation (entirely)."""
        return [c.key for c in self.reinitialized] + self.missing

    def format(self) -> str:
        frac = self.loaded_numel / self.total_numel if self.total_numel else 0.0
        lines = [
            f"init from {self.checkpoint}: {len(self.loaded)} tensors loaded "
            f"({self.loaded_numel:,} of {self.total_numel:,} weights, {frac:.1%})"
        ]
        if self.config_changes:
            lines.append("config changes (checkpoint -> now): " + "; ".join(self.config_changes))
        rows: list[tuple[str, str, str, str]] = []
        rows += [
            (c.key, "re-initialised", _shape(c.checkpoint_shape), _shape(c.policy_shape))
            for c in self.reinitialized
        ]
        rows += [(k, "new (not in checkpoint)", "-", "") for k in self.missing]
        rows += [(k, "dropped (unknown)", "", "-") for k in self.unexpected]
        rows += [
            (r.key, f"remapped by word: {r.copied} rows copied, {len(r.new_words)} new", "", "")
            for r in self.remapped
        ]
        if rows:
            w = max(len(r[0]) for r in rows)
            wa = max(len(r[1]) for r in rows)
            lines.append(f"{'key':<{w}}  {'action':<{wa}}  {'checkpoint':>12}  {'now':>12}")
            lines += [f"{k:<{w}}  {a:<{wa}}  {s0:>12}  {s1:>12}".rstrip() for k, a, s0, s1 in rows]
            for r in self.remapped:
                if r.new_words:
                    more = f" (+{len(r.new_words) - 12} more)" if len(r.new_words) > 12 else ""
                    lines.append(f"new words in {r.key}: {', '.join(r.new_words[:12])}{more}")
        else:
            lines.append("every tensor of the policy was loaded from the checkpoint")
        return "\n".join(lines)


def _shape(s: Sequence[int]) -> str:
    return str(tuple(s))


def _group_keys(keys: Sequence[str], depth: int = 2) -> str:
    """'image_encoders.wrist.* (12 tensors), head.net.* (26 tensors)': readable lists of many keys."""
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:depth]) + ".*" if len(parts) > depth else k
        groups[prefix] = groups.get(prefix, 0) + 1
    return ", ".join(f"{g} ({n} tensor{'s' if n > 1 else ''})" for g, n in groups.items())


def _read_checkpoint(checkpoint: str | Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """-> (policy directory, tensors on CPU, config.json contents)."""
    d = resolve_checkpoint(checkpoint)
    weights_path = d / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {d} is incomplete: missing {WEIGHTS_FILE}")
    try:
        meta = json.loads((d / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / CONFIG_FILE} is not valid JSON: {e}") from e
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"could not read {weights_path}: {e} (is the file truncated?)") from e
    return d, tensors, meta


def _config_changes(saved: dict[str, Any] | None, now: PolicyConfig) -> list[str]:
    if not isinstance(saved, dict):
        return []
    cur = now.to_dict()
    return [f"{k}: {saved[k]!r} -> {cur[k]!r}" for k in cur if k in saved and saved[k] != cur[k]]


def _remap_word_rows(
    target: torch.Tensor, source: torch.Tensor, old: WordTokenizer, new: WordTokenizer
) -> tuple[int, list[str]]:
    """Copy embedding rows of words both vocabularies know; returns (rows copied, new words)."""
    shared = [w for w in new.vocab if w in old.index]
    new_ids = torch.tensor([new.index[w] for w in shared], dtype=torch.long)
    old_ids = torch.tensor([old.index[w] for w in shared], dtype=torch.long)
    target[new_ids] = source[old_ids].to(target.dtype)  # (n_shared, D)
    return len(shared), [w for w in new.vocab if w not in old.index]


@torch.no_grad()
def load_pretrained(policy: Policy, checkpoint: str | Path, *, allow_unknown: bool = False) -> InitReport:
    """Initialise a freshly built ``policy`` from a pretrained policy checkpoint (policy or run directory).

    * equal shapes: copied;
    * shape changed (new action size -> head output layer, new state size -> state projection,
      new camera size -> its positional embedding): left at the policy's fresh init, listed;
    * keys only in the policy (a new camera's encoder): left at fresh init, listed as missing;
    * keys only in the checkpoint (a removed camera, a different head): error listing them, unless
      ``allow_unknown`` (then dropped and listed);
    * the word-embedding table is copied word by word when the vocabularies differ.

    Values are copied in place, so parameters keep their identity (an optimizer built before the
    call still points at them) and their device and dtype.
    """
    if lora_layers(policy):
        raise ValueError(
            "load_pretrained: the policy already has LoRA adapters, whose base weights carry peft's key "
            "names; load the pretrained weights first, then apply_lora"
        )
    d, tensors, meta = _read_checkpoint(checkpoint)
    report = InitReport(checkpoint=d, config_changes=_config_changes(meta.get("config"), policy.config))
    own = policy.state_dict(keep_vars=True)  # name -> the live Parameter / buffer
    report.unexpected = sorted(k for k in tensors if k not in own)
    if report.unexpected and not allow_unknown:
        hint = ""
        if any("lora_" in k for k in report.unexpected):
            hint = (
                " The checkpoint holds unmerged LoRA adapters (peft's lora_A/lora_B/base_layer keys): merge "
                "them first (merge_lora before policy.save; every policy vlaforge train writes is merged)."
            )
        changes = "; ".join(report.config_changes) or "none"
        raise CheckpointError(
            f"{d / WEIGHTS_FILE} has {len(report.unexpected)} tensor(s) this policy does not have: "
            f"{_group_keys(report.unexpected)}. Config changes (checkpoint -> now): {changes}. "
            "Is it the right checkpoint, with the same head? "
            f"Pass allow_unknown=True (--allow-unknown-keys) to drop them.{hint}"
        )

    old_tok = None
    if isinstance(meta.get("tokenizer"), dict):
        old_tok = WordTokenizer.from_dict(meta["tokenizer"])
    embed_key = "text_encoder.embed.weight" if isinstance(policy.text_encoder, LanguageEncoder) else None

    for key, target in own.items():
        report.total_numel += target.numel()
        if key not in tensors:
            report.missing.append(key)
            continue
        source = tensors[key]
        if (
            key == embed_key
            and old_tok is not None
            and policy.tokenizer is not None
            and old_tok.vocab != policy.tokenizer.vocab
            and source.dim() == 2
            and source.shape[1] == target.shape[1]
        ):
            copied, new_words = _remap_word_rows(target.data, source, old_tok, policy.tokenizer)
            report.remapped.append(Remapped(key, copied, new_words))
            report.loaded_numel += copied * target.shape[1]
            continue
        if tuple(source.shape) != tuple(target.shape):
            report.reinitialized.append(ShapeChange(key, tuple(source.shape), tuple(target.shape)))
            continue
        target.data.copy_(source)
        report.loaded.append(key)
        report.loaded_numel += target.numel()
    return report
