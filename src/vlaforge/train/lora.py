"""LoRA adapters through ``peft``: attach (:func:`apply_lora`), the family presets, merge and export.

LoRA goes through ``peft`` (``inject_adapter_in_model``; an optional dependency, ``vlaforge[lora]``,
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
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlaforge.policies.registry import family_of
from vlaforge.train.freeze import _match_patterns, _matches, _prefixes

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
