"""Fine-tuning a pretrained policy: init-from, freezing, LoRA (with merge), and a parameter table.

The workflow users run (Octo's "fine-tune on your own robot", openpi's LoRA configs):

    policy, report = finetune_policy("runs/pretrain", new_dataset)   # architecture from the checkpoint,
    print(report.format())                                          # embodiment from the new data
    apply_lora(policy, ["transformer.*"], rank=16, train_also=["head.*"])   # or freeze / freeze_all_but
    print(parameter_table(policy))
    train(policy, ...)                                              # the optimizer sees requires_grad only
    merge_lora(policy); policy.save("runs/ft/deploy")               # a plain checkpoint, Policy.load reads it

Why each piece exists:

* :func:`load_pretrained` copies every weight whose shape still fits and *lists* the ones it could
  not use, because a new embodiment (action size, state size, cameras) changes a few tensors and a
  silent partial load is the classic fine-tuning bug. Checkpoint keys the new policy does not have
  are an error unless allowed: they usually mean the wrong checkpoint or a different head.
  Word embeddings are remapped word by word, since a new dataset's vocabulary numbers words
  differently and copying rows by index would give every shared word a stranger's embedding.
* :func:`freeze` / :func:`freeze_all_but` take fnmatch globs over parameter names; a glob that
  matches nothing is an error, since a typo would otherwise train the whole model unnoticed.
* LoRA goes through ``peft`` (``inject_adapter_in_model``; an optional dependency, ``vlaforge[lora]``,
  imported only when adapters are used) rather than our own layer: it is the implementation
  OpenVLA's LoRA fine-tuning was run with, its layers, initialisation (B = 0, so wrapping changes
  no output) and merge are maintained and tested upstream, and users get the modules they know
  from ``transformers``. We resolve our fnmatch globs to exact module names and hand peft an
  anchored regex of them, because peft's plain name lists also match by suffix.
  While adapters are attached the state-dict keys of an adapted layer ``x`` are peft's
  (``x.base_layer.weight``, ``x.lora_A.default.weight``, ...): the raw training weights of a LoRA
  run carry them, and a resume re-attaches the adapters before loading them. Every *policy* a run
  writes goes through :func:`export_state_dict` (or, in Python, :func:`merge_lora`), which gives the
  plain keys back (``x.weight`` with the update folded in, ``x.bias``), so ``Policy.load`` reads it
  with its strict key check.
* Head-only tuning (``--train-only 'head.*'``) is :func:`freeze_all_but`, recorded with the run so
  a resume freezes the same parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file
from torch import nn

from vlaforge.errors import CheckpointError
from vlaforge.models.encoders import LanguageEncoder, WordTokenizer
from vlaforge.policies.base import CONFIG_FILE, WEIGHTS_FILE, resolve_checkpoint
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.registry import family_of

# Fields of PolicyConfig that describe the robot (taken from the new dataset when fine-tuning);
# every other field describes the architecture and is taken from the pretrained checkpoint.
EMBODIMENT_FIELDS = ("cameras", "state_dim", "action_dim", "fps", "unnormalized_action_dims")


# ================================================================================================ init-from


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


# ================================================================================================ freezing


def _matches(name: str, pattern: str) -> bool:
    """fnmatch glob over dotted names; a bare module path also matches everything below it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def _prefixes(names: Iterable[str], limit: int = 14) -> str:
    """A few valid patterns for error messages: top-level modules, then their children."""
    names = list(names)
    top = list(dict.fromkeys(n.split(".")[0] for n in names))
    second = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in names if n.count(".") >= 2))
    out = [f"{p}.*" if any(n.startswith(p + ".") for n in names) else p for p in top]
    out += [f"{p}.*" for p in second if p not in top]
    more = f", ... ({len(out) - limit} more)" if len(out) > limit else ""
    return ", ".join(repr(p) for p in out[:limit]) + more


def _match_patterns(names: Sequence[str], patterns: Sequence[str], what: str, flag: str) -> set[str]:
    """Names matched by any pattern; a pattern that matches nothing is an error naming it."""
    if isinstance(patterns, str):
        raise TypeError(
            f"{what} patterns must be a list of globs, got the string {patterns!r}; use [{patterns!r}]"
        )
    matched: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if _matches(n, pattern)}
        if not hits:
            example = next((n for n in names if n.startswith("transformer.")), names[0])
            raise ValueError(
                f"{flag} pattern {pattern!r} matches no {what} of the policy. Patterns are fnmatch globs "
                f"over full dotted names such as {example!r} ('*' crosses dots: '*.attn.*'); "
                f"valid prefixes include {_prefixes(names)}"
            )
        matched |= hits
    return matched


def freeze(policy: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter matching a glob (``'image_encoders.*'``); returns them.

    ``make_optimizer`` only optimizes ``requires_grad`` parameters, so frozen ones also cost no
    optimizer memory. A pattern that matches nothing is an error (a typo must not go unnoticed).
    """
    names = [n for n, _ in policy.named_parameters()]
    hit = _match_patterns(names, patterns, "parameter", "--freeze")
    frozen = []
    for name, p in policy.named_parameters():
        if name in hit:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_all_but(policy: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze every parameter NOT matching a glob; ``freeze_all_but(policy, ['head.*'])`` = head-only tuning.

    Returns the frozen names. Matching parameters are set trainable (so the call is idempotent).
    """
    names = [n for n, _ in policy.named_parameters()]
    if not patterns:
        raise ValueError(
            "freeze_all_but (--train-only): no patterns given, which would freeze everything; e.g. ['head.*']"
        )
    keep = _match_patterns(names, patterns, "parameter", "--train-only")
    frozen = []
    for name, p in policy.named_parameters():
        p.requires_grad_(name in keep)
        if name not in keep:
            frozen.append(name)
    return frozen


# ================================================================================================ LoRA

ADAPTER = "default"  # peft's adapter name; vlaforge attaches one adapter per layer
LORA_INSTALL_HINT = "LoRA needs peft: pip install 'vlaforge[lora]'"


def _peft() -> Any:
    """The ``peft`` module, imported on first use (it takes seconds and is an optional dependency)."""
    try:
        import peft
    except ImportError as e:
        raise ImportError(LORA_INSTALL_HINT) from e
    return peft


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every peft LoRA layer in ``model``, outermost first.

    Does not import peft: if it was never imported, no adapter can exist, and every checkpoint
    export of a plain run (which asks this) should not pay peft's import time or need it installed.
    """
    lora = sys.modules.get("peft.tuners.lora")
    if lora is None:
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, lora.LoraLayer)]


@dataclass
class LoRAConfig:
    """LoRA settings of a run; stored with the run (``to_dict``) so a resume can re-apply them.

    targets: fnmatch globs over module names; every ``nn.Linear`` below a match gets an adapter.
    train_also: globs over parameter names (as in a plain checkpoint) kept trainable besides the
    adapters (e.g. the new head).
    rank_pattern / alpha_pattern: {module glob: rank / alpha} overriding ``rank`` / ``alpha`` for the
    targeted modules they match, first match wins (openpi's π0 LoRA: rank 16 on the backbone, 32 on
    the action expert; see :func:`lora_preset`).
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["transformer.*"])
    train_also: list[str] = field(default_factory=list)
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"LoRAConfig.{fld}={getattr(self, fld)!r}: {msg}")

        if not isinstance(self.rank, int) or self.rank < 1:
            raise bad("rank", "must be an int >= 1 (typical: 8-64; --lora-rank)")
        if not self.alpha > 0:
            raise bad("alpha", "must be > 0 (the update is scaled by alpha / rank; --lora-alpha)")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        for fld in ("targets", "train_also"):
            value = getattr(self, fld)
            if isinstance(value, str):
                raise bad(fld, f"must be a list of globs; write [{value!r}]")
            setattr(self, fld, list(value))
        if not self.targets:
            raise bad("targets", "is empty: name at least one module glob, e.g. ['transformer.*']")
        self.rank_pattern, self.alpha_pattern = dict(self.rank_pattern), dict(self.alpha_pattern)
        if any(not isinstance(r, int) or r < 1 for r in self.rank_pattern.values()):
            raise bad("rank_pattern", "ranks must be ints >= 1")
        if any(not a > 0 for a in self.alpha_pattern.values()):
            raise bad("alpha_pattern", "alphas must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply(self, policy: nn.Module) -> list[str]:
        """:func:`apply_lora` with these settings (e.g. re-applied on resume from ``to_dict()``)."""
        return apply_lora(
            policy,
            self.targets,
            rank=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            train_also=self.train_also,
            rank_pattern=self.rank_pattern,
            alpha_pattern=self.alpha_pattern,
        )


def apply_lora(
    policy: nn.Module,
    patterns: Sequence[str] = ("transformer.*",),
    *,
    rank: int = 16,
    alpha: float = 16.0,
    dropout: float = 0.0,
    train_also: Sequence[str] = (),
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
) -> list[str]:
    """Give every ``nn.Linear`` whose module name matches a glob a peft LoRA adapter; returns their names.

    The globs are resolved here to the exact module names, and peft gets those names as one
    anchored regex: a plain ``target_modules`` list would also match any module whose name merely
    *ends* with ``"." + name``. Afterwards only the adapters and the parameters matching
    ``train_also`` (globs over the plain names, resolved before wrapping) are trainable.

    Apply it after :func:`load_pretrained`: while adapters are attached, the base weights are named
    ``<layer>.base_layer.weight`` (peft's layout), so a plain checkpoint no longer fits the policy.
    """
    cfg = LoRAConfig(
        rank,
        alpha,
        dropout,
        patterns,
        train_also,
        rank_pattern or {},
        alpha_pattern or {},  # type: ignore[arg-type]
    )  # validated there
    already = [n for n, _ in lora_layers(policy)]
    if already or hasattr(policy, "peft_config"):
        raise ValueError(f"policy already has LoRA adapters on {already[:4]}; merge_lora(policy) first")
    # Everything is resolved before the model changes, so a bad pattern leaves it untouched.
    linears = sorted(n for n, m in policy.named_modules() if isinstance(m, nn.Linear))
    if not linears:
        raise ValueError(f"{type(policy).__name__} has no nn.Linear modules to adapt")
    targets = sorted(_match_patterns(linears, cfg.targets, "nn.Linear module", "--lora-targets"))
    names = [n for n, _ in policy.named_parameters()]
    keep = (
        _match_patterns(names, cfg.train_also, "parameter", "--lora-train-also") if cfg.train_also else set()
    )
    keep_ids = {id(p) for n, p in policy.named_parameters() if n in keep}  # peft keeps the Parameter objects

    # Per-module rank/alpha: resolve the globs to exact names here too (peft matches its pattern keys
    # as regexes anchored at the end of the module name: an escaped full name picks that module only).
    ranks = _per_module(targets, cfg.rank_pattern, "rank_pattern")
    alphas = _per_module(targets, cfg.alpha_pattern, "alpha_pattern")

    peft = _peft()
    peft_cfg = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules="|".join(re.escape(n) for n in targets),  # re.fullmatch'ed against each module name
        rank_pattern={re.escape(n): r for n, r in ranks.items()},
        alpha_pattern={re.escape(n): a for n, a in alphas.items()},
    )
    peft.inject_adapter_in_model(peft_cfg, policy, adapter_name=ADAPTER)
    wrapped = sorted(n for n, _ in lora_layers(policy))
    if wrapped != targets:  # would mean peft matched differently than documented
        raise RuntimeError(f"peft wrapped {wrapped[:6]}..., expected exactly {targets[:6]}...")

    adapter_ids = {
        id(p) for _, m in lora_layers(policy) for p in (*m.lora_A.parameters(), *m.lora_B.parameters())
    }
    for p in policy.parameters():
        p.requires_grad_(id(p) in adapter_ids or id(p) in keep_ids)
    return targets


def _per_module(targets: Sequence[str], pattern: dict[str, Any], what: str) -> dict[str, Any]:
    """{glob: value} -> {target module name: value}, first matching glob wins; a glob matching no target
    is an error (a typo would otherwise silently keep the default rank)."""
    out: dict[str, Any] = {}
    for glob, value in pattern.items():
        hits = [n for n in targets if _matches(n, glob)]
        if not hits:
            raise ValueError(
                f"LoRA {what} glob {glob!r} matches none of the adapted modules ({_prefixes(targets)})"
            )
        for n in hits:
            out.setdefault(n, value)
    return out


def lora_preset(policy: nn.Module) -> LoRAConfig:
    """The published LoRA recipe of the policy's family (``vlaforge train --lora``).

    * π0 / π0.5 (openpi's ``gemma_2b_lora`` + ``gemma_300m_lora``): adapters on the attention and MLP
      linear layers of the backbone's blocks with rank 16, alpha 16, and of the action expert's with
      rank 32, alpha 32 (π0.5's adaRMS modulations stay frozen, as openpi's LoRA covers only attention
      and feed-forward); like openpi's freeze filter, only the language-model weights are frozen, so the vision
      tower, projector and the state/action/time projections keep training fully.
    * π0-FAST (``gemma_2b_lora``): rank 16, alpha 16 on the backbone's blocks; vision tower and projector train.
    * OpenVLA / OpenVLA-OFT / RT-2 (OpenVLA's ``finetune.py``): rank 32, alpha ``min(rank, 16) = 16``, dropout
      0, on all linear layers of the vision tower, projector and language-model blocks (peft's
      "all-linear": not the output head); OFT's own modules (action head, proprio projector, FiLM)
      train fully, as in OFT.
    """

    preset = family_of(policy).capabilities.lora_preset  # declared by the policy class
    if preset is None:
        raise ValueError(
            f"no published LoRA recipe for {type(policy).__name__} (octo-style recipes): give the settings "
            "yourself, e.g. --lora-rank 16 --lora-targets 'transformer.*' --lora-train-also 'head.*'"
        )
    names = [n for n, _ in policy.named_parameters()]
    present = [g for g in preset.get("train_also", ()) if any(_matches(n, g) for n in names)]
    return LoRAConfig(
        **{**copy.deepcopy(dict(preset)), "train_also": present}  # e.g. OFT's modules only in OFT
    )


def _merged_weight(
    weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float
) -> torch.Tensor:
    """``W + scaling * B A`` with peft's arithmetic, so it equals peft's in-place merge bit for bit.

    Mirrors ``peft.tuners.lora.Linear.get_delta_weight`` (fp16/bf16 adapters on the CPU multiply
    in float32 and cast back) followed by ``merge``'s ``base_layer.weight.data += delta``.
    weight: (out, in); lora_a: (r, in); lora_b: (out, r).
    """
    cast = lora_b.device.type == "cpu" and lora_b.dtype in (torch.float16, torch.bfloat16)
    a, b = (lora_a.float(), lora_b.float()) if cast else (lora_a, lora_b)
    delta = (b @ a) * scaling  # (out, in)
    if cast:
        delta = delta.to(lora_b.dtype)
    merged = weight.detach().clone()
    merged += delta
    return merged


@torch.no_grad()
def merge_lora(policy: nn.Module) -> list[str]:
    """Fold every adapter into its base weight (W += alpha/r * B A) and put the plain ``nn.Linear`` back.

    What peft's ``merge_and_unload`` does, without needing the ``PeftModel`` wrapper:
    afterwards ``policy.state_dict()`` has the original keys again and ``policy.save()`` writes an
    ordinary checkpoint that ``Policy.load`` reads, with the same predictions as the adapted
    policy (up to float rounding). Returns the merged names.
    """
    lora = lora_layers(policy)
    if not lora:
        raise ValueError("merge_lora: the policy has no LoRA adapters (apply_lora was not called)")
    for name, module in lora:
        module.merge(adapter_names=[ADAPTER])  # the base layer's weight += get_delta_weight(ADAPTER)
        parent_name, _, child = name.rpartition(".")
        setattr(policy.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(policy, "peft_config"):  # set by inject_adapter_in_model; peft's unload removes it too
        del policy.peft_config
    return [n for n, _ in lora]


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


# ================================================================================================ export


@torch.no_grad()
def export_state_dict(
    policy: nn.Module, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The policy's weights as a plain checkpoint: LoRA adapters folded into their base weights.

    Training keeps the adapters (resume needs them); everything written as a *policy* — periodic
    checkpoints and the final `policy/` — goes through here, so `Policy.load` always reads it.
    For each adapted layer ``x`` the peft keys ``x.base_layer.weight``, ``x.base_layer.bias``,
    ``x.lora_A.default.weight`` and ``x.lora_B.default.weight`` become ``x.weight`` (merged with
    the arithmetic of :func:`merge_lora`, so both agree bit for bit) and ``x.bias``; key order is kept.

    state: merge this full state dict (same keys as ``policy.state_dict()``) instead of the live
    weights. The trainer passes EMA weights this way, and under FSDP, where the live parameters are
    shards, the full weights gathered to rank 0; the modules only supply the names and LoRA scaling.
    """
    state = policy.state_dict() if state is None else state
    renamed: dict[str, str] = {}  # peft key -> plain key
    merged: dict[str, torch.Tensor] = {}  # plain weight key -> merged weight
    dropped: set[str] = set()  # adapter keys
    for name, module in lora_layers(policy):
        prefix = f"{name}." if name else ""
        if list(module.lora_A) != [ADAPTER]:
            raise ValueError(
                f"{name} has LoRA adapters {list(module.lora_A)}; export_state_dict handles the single "
                f"adapter {ADAPTER!r} that apply_lora attaches"
            )
        key_a, key_b = f"{prefix}lora_A.{ADAPTER}.weight", f"{prefix}lora_B.{ADAPTER}.weight"
        base = f"{prefix}base_layer."
        own = [k for k in state if k.startswith(prefix)]
        unknown = [k for k in own if k not in (key_a, key_b) and not k.startswith(base)]
        if unknown or key_a not in state or key_b not in state:
            raise KeyError(
                f"state dict does not have the layout of peft's LoRA layer {name!r}: expected {key_a}, "
                f"{key_b} and {base}*, got {own}"
            )
        renamed.update({k: prefix + k[len(base) :] for k in own if k.startswith(base)})
        dropped.update((key_a, key_b))
        weight = state[f"{base}weight"]  # (out, in)
        merged[f"{prefix}weight"] = _merged_weight(
            weight, state[key_a], state[key_b], module.scaling[ADAPTER]
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in dropped:
            continue
        plain = renamed.get(key, key)
        out[plain] = merged.get(plain, value) if key in renamed else value
    return out


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
