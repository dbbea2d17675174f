"""What the checkpoint converters share (``vla/convert_openvla.py``, ``pi0/convert_pi0.py``).

A converter turns a downloaded checkpoint directory (safetensors, maybe sharded) into a vlaforge
policy directory. The steps that do not depend on the model are here once:

* :func:`source_index`: tensor name -> shard file and shape, from the safetensors headers only;
* a **plan**: one :class:`Rule` per policy tensor (which source tensor, which shapes it may have,
  how it is transformed), written by each converter;
* :func:`match_plan`: the strict report. Every policy tensor must come from the file with an
  allowed shape, and every file tensor must be used or be a known drop; the problems are collected
  in a :class:`ConversionReport` and raised together by :func:`raise_if_invalid`, so a user sees
  every missing, unexpected and wrongly shaped tensor at once instead of one per run;
* :func:`read_planned`: read the planned tensors shard by shard and apply the rules;
* :func:`parameters_on_meta`: build the policy with shapes only (no random init of billions of weights).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from vlaforge.errors import CheckpointError
from vlaforge.models.lm.checkpoint import LMCheckpointError, weight_files

MAX_LISTED = 25  # entries per category in an error message
CONFIG_FILE = "config.json"  # a source checkpoint's Hugging Face config
REPORT_FILE = "conversion.json"  # provenance written next to the converted policy
# --dtype choices of the converter command lines
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ConversionError(CheckpointError):
    """A checkpoint does not match the policy it should become; lists every missing, unexpected and
    wrongly shaped tensor (also in ``missing`` / ``unexpected`` / ``mismatched``)."""

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


@dataclass
class ConversionReport:
    """What a conversion did. ``missing`` / ``unexpected`` / ``mismatched`` are empty after a
    successful conversion (otherwise a :class:`ConversionError` was raised)."""

    source: str
    output: str
    converted: int = 0  # policy tensors written
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # source tensors of modules the policy does not build
    filled: list[str] = field(default_factory=list)  # policy tensors with no source (zeros)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rule:
    """How one policy tensor is made: from ``source`` (allowed shapes ``shapes``) by ``convert``;
    ``source`` None = filled with zeros."""

    source: str | None
    shapes: tuple[tuple[int, ...], ...]
    convert: Callable[[torch.Tensor], torch.Tensor]
    alternatives: tuple[str, ...] = ()  # other accepted spellings of `source` (exactly one may exist)


def same(x: torch.Tensor) -> torch.Tensor:
    """The identity conversion (most tensors are copied unchanged)."""
    return x


def listing(items: Sequence[str]) -> str:
    """An indented list for error messages, cut at MAX_LISTED entries."""
    shown = list(items[:MAX_LISTED])
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "\n    " + "\n    ".join(shown) + more


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every ``nn.Parameter`` on the meta device (shapes only, no memory, no random init).

    Unlike ``with torch.device("meta")`` this leaves plain tensors real, so the parts of a policy
    that compute with tensors at construction (e.g. an action tokenizer's bin edges) still work.
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def source_index(src: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Tensor name -> safetensors file, and -> shape, for a (sharded) checkpoint (headers only)."""
    try:
        files = weight_files(src)
    except LMCheckpointError as e:
        raise CheckpointError(str(e)) from e
    index: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for file, keys in files.items():
        with safe_open(file, framework="pt") as f:
            for k in keys:
                index[k] = file
                shapes[k] = tuple(f.get_slice(k).get_shape())
    return index, shapes


def match_plan(
    plan: dict[str, Rule],
    index: dict[str, str],
    shapes: dict[str, tuple[int, ...]],
    report: ConversionReport,
    *,
    dropped: Callable[[str], bool],
) -> dict[str, str]:
    """Check ``plan`` against the file; fill the report's missing / unexpected / mismatched / dropped /
    filled lists. Returns policy key -> the source name that exists (for :func:`read_planned`).

    dropped(name): True for a file tensor the policy does not need (a module it does not build, or
    one the converter reads for another purpose); every other unused file tensor is unexpected.
    """
    found: dict[str, str] = {}
    used: set[str] = set()
    for target, rule in plan.items():
        if rule.source is None:
            report.filled.append(target)
            continue
        names = [n for n in (rule.source, *rule.alternatives) if n in index]
        if not names:
            report.missing.append(rule.source)
            continue
        if len(names) > 1:
            report.unexpected.extend(f"{n}  (duplicate of {names[0]})" for n in names[1:])
        name = names[0]
        used.update(names)
        found[target] = name
        if shapes[name] not in rule.shapes and not any(m.startswith(f"{name}:") for m in report.mismatched):
            want = " or ".join(str(list(s)) for s in rule.shapes)
            report.mismatched.append(f"{name}: file has {list(shapes[name])}, {target} needs {want}")
    for name in sorted(set(index) - used):
        if dropped(name):
            report.dropped.append(name)
        else:
            report.unexpected.append(f"{name}  (in {Path(index[name]).name})")
    report.missing = sorted(set(report.missing))
    report.mismatched = sorted(set(report.mismatched))
    return found


def raise_if_invalid(
    report: ConversionReport, title: str, error: type[ConversionError] = ConversionError
) -> None:
    """Raise ``error`` listing every problem of the report (no-op for a clean report)."""
    if report.ok:
        return
    parts = [title]
    if report.missing:
        parts.append(f"  missing {len(report.missing)} tensor(s):{listing(report.missing)}")
    if report.unexpected:
        parts.append(f"  unexpected {len(report.unexpected)} tensor(s):{listing(report.unexpected)}")
    if report.mismatched:
        parts.append(f"  {len(report.mismatched)} shape mismatch(es):{listing(report.mismatched)}")
    raise error(
        "\n".join(parts), missing=report.missing, unexpected=report.unexpected, mismatched=report.mismatched
    )


def read_planned(
    plan: dict[str, Rule],
    found: dict[str, str],
    index: dict[str, str],
    expected: dict[str, tuple[int, ...]],
    dtype: torch.dtype | None,
) -> dict[str, torch.Tensor]:
    """The policy's tensors: each planned source read once per shard, converted, cast to ``dtype``
    (None: as stored). Filled tensors are zeros of the stored dtype (float32 if nothing is read)."""
    weights: dict[str, torch.Tensor] = {}
    by_file: dict[str, list[tuple[str, str, Rule]]] = {}
    for target, rule in plan.items():
        if rule.source is not None:
            name = found[target]
            by_file.setdefault(index[name], []).append((target, name, rule))
    for file, items in by_file.items():
        cache: dict[str, torch.Tensor] = {}  # a tensor feeding several targets (a fused qkv) is read once
        with safe_open(file, framework="pt") as f:
            for target, name, rule in items:
                if name not in cache:
                    cache[name] = f.get_tensor(name)
                t = rule.convert(cache[name])
                weights[target] = (t if dtype is None else t.to(dtype)).contiguous()
    stored = dtype or next((v.dtype for v in weights.values()), torch.float32)
    for target, rule in plan.items():
        if rule.source is None:
            weights[target] = torch.zeros(expected[target], dtype=stored)
    return {k: weights[k] for k in plan}
