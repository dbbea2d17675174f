"""Fine-tuning a pretrained policy: init-from, freezing, LoRA (with merge), and a parameter table.

The workflow users run (Octo's "fine-tune on your own robot", openpi's LoRA configs):

    policy, report = finetune_policy("runs/pretrain", new_dataset)   # architecture from the checkpoint,
    print(report.format())                                          # embodiment from the new data
    apply_lora(policy, ["transformer.*"], rank=16, train_also=["head.*"])   # or freeze(...)
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
* :class:`LoRALinear` is a few lines of torch instead of ``peft`` (which pulls accelerate and
  huggingface_hub). It subclasses ``nn.Linear`` and keeps the base ``weight``/``bias`` under their
  original names, so state-dict keys of the base model do not change: a pretrained checkpoint loads
  into a LoRA-wrapped policy and vice versa, and :func:`merge_lora` gives back plain ``nn.Linear``
  modules whose checkpoint ``Policy.load`` reads with its strict key check.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.models.encoders import LanguageEncoder, WordTokenizer
from vlaforge.models.policy import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, Policy, resolve_checkpoint

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
    d, tensors, meta = _read_checkpoint(checkpoint)
    report = InitReport(checkpoint=d, config_changes=_config_changes(meta.get("config"), policy.config))
    own = policy.state_dict(keep_vars=True)  # name -> the live Parameter / buffer
    report.unexpected = sorted(k for k in tensors if k not in own)
    if report.unexpected and not allow_unknown:
        hint = ""
        if any("lora_" in k for k in report.unexpected):
            hint = " The checkpoint holds LoRA adapters: merge them first (merge_lora; every policy vlaforge train writes is merged)."
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
    from vlaforge.models.recipes import config_from_dataset, policy_from_config, task_texts

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
        raise ValueError("freeze_all_but: no patterns given, which would freeze everything; e.g. ['head.*']")
    keep = _match_patterns(names, patterns, "parameter", "freeze_all_but")
    frozen = []
    for name, p in policy.named_parameters():
        p.requires_grad_(name in keep)
        if name not in keep:
            frozen.append(name)
    return frozen


# ================================================================================================ LoRA


class LoRALinear(nn.Linear):
    """``y = x W^T + b + (alpha / r) * dropout(x) A^T B^T``: W, b frozen; A (r, in), B (out, r) trained.

    Built from an existing ``nn.Linear`` without copying: ``weight`` and ``bias`` are the base
    layer's own Parameter objects under their original names (so checkpoint keys do not change).
    B starts at zero, so wrapping never changes the model's output (LoRA paper, section 4.1);
    A gets the Kaiming-uniform init of ``nn.Linear`` (as peft does).
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0):
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate and initialise a new weight
        if type(base) is not nn.Linear:
            raise TypeError(f"LoRALinear wraps a plain nn.Linear, got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in), frozen
        self.bias = base.bias  # (out,) or None, frozen
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        z = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        return y + F.linear(z, self.lora_B) * self.scaling  # (..., out)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / r) B A, computed in float32 and cast back: (out, in)."""
        delta = self.lora_B.float() @ self.lora_A.float()  # (out, in)
        return (self.weight.float() + delta * self.scaling).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


@dataclass
class LoRAConfig:
    """LoRA settings of a run; stored with the run (``to_dict``) so a resume can re-apply them.

    targets: fnmatch globs over module names; every ``nn.Linear`` below a match gets an adapter.
    train_also: globs over parameter names kept trainable besides the adapters (e.g. the new head).
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["transformer.*"])
    train_also: list[str] = field(default_factory=list)

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
        )


def apply_lora(
    policy: nn.Module,
    patterns: Sequence[str] = ("transformer.*",),
    *,
    rank: int = 16,
    alpha: float = 16.0,
    dropout: float = 0.0,
    train_also: Sequence[str] = (),
) -> list[str]:
    """Wrap every ``nn.Linear`` whose module name matches a glob in :class:`LoRALinear`; returns their names.

    Afterwards only the adapters (``lora_A``/``lora_B``) and parameters matching ``train_also``
    are trainable; everything else is frozen. Apply it after :func:`load_pretrained` (or before:
    base weight keys are unchanged, adapters then show up as "missing").
    """
    cfg = LoRAConfig(rank, alpha, dropout, patterns, train_also)  # type: ignore[arg-type]  # validated there
    linears = {n: m for n, m in policy.named_modules() if isinstance(m, nn.Linear)}
    already = sorted(n for n, m in linears.items() if isinstance(m, LoRALinear))
    if already:
        raise ValueError(f"policy already has LoRA adapters on {already[:4]}; merge_lora(policy) first")
    if not linears:
        raise ValueError(f"{type(policy).__name__} has no nn.Linear modules to adapt")
    targets = sorted(_match_patterns(sorted(linears), cfg.targets, "nn.Linear module", "--lora-targets"))
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = policy.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(linears[name], rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout))

    names = [n for n, _ in policy.named_parameters()]
    keep = (
        _match_patterns(names, cfg.train_also, "parameter", "--lora-train-also") if cfg.train_also else set()
    )
    for name, p in policy.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        p.requires_grad_(leaf in ("lora_A", "lora_B") or name in keep)
    return targets


@torch.no_grad()
def merge_lora(policy: nn.Module) -> list[str]:
    """Fold every adapter into its base weight (W += alpha/r * B A) and restore plain ``nn.Linear`` modules.

    After this ``policy.save()`` writes an ordinary checkpoint that ``Policy.load`` reads, with
    the same predictions as the adapted policy (up to float rounding). Returns the merged names.
    """
    lora = [(n, m) for n, m in policy.named_modules() if isinstance(m, LoRALinear)]
    if not lora:
        raise ValueError("merge_lora: the policy has no LoRA adapters (apply_lora was not called)")
    for name, m in lora:
        linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        linear.weight = nn.Parameter(m.merged_weight(), requires_grad=m.weight.requires_grad)  # (out, in)
        linear.bias = m.bias
        linear.train(m.training)
        parent_name, _, child = name.rpartition(".")
        setattr(policy.get_submodule(parent_name), child, linear)
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

    state: merge this full state dict (same keys as ``policy.state_dict()``) instead of the live
    weights. The trainer passes EMA weights this way, and under FSDP, where the live parameters are
    shards, the full weights gathered to rank 0; the modules only supply the names and LoRA scaling.
    """
    state = dict(policy.state_dict() if state is None else state)
    for name, module in policy.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f"{name}." if name else ""
            weight = state[f"{prefix}weight"]  # (out, in)
            delta = state.pop(f"{prefix}lora_B").float() @ state.pop(f"{prefix}lora_A").float()  # (out, in)
            # The same arithmetic as LoRALinear.merged_weight (float32, cast back), so both agree bit for bit.
            state[f"{prefix}weight"] = (weight.float() + delta * module.scaling).to(weight.dtype)
    return state


def apply_finetune_setup(policy: nn.Module, setup: dict[str, Any]) -> None:
    """Re-apply freezing and LoRA recorded in a run's train_config.json ("finetune" section)."""
    if setup.get("freeze"):
        freeze(policy, setup["freeze"])
    if setup.get("lora"):
        LoRAConfig(**setup["lora"]).apply(policy)
