"""FLOPs of one call, counted by `torch.utils.flop_counter.FlopCounterMode`.

The counter sees every aten op the call dispatches and adds a formula for the matmul-like ones:
mm / addmm / bmm / baddbmm (2·M·N·K), convolutions, and attention. Element-wise work (GELU,
LayerNorm, GroupNorm, the image resize, the samplers' arithmetic) is not counted, by the usual
convention: it is memory-bound and small next to the matmuls. A multiply-add is 2 FLOPs.

One gap is filled here: on CPU `scaled_dot_product_attention` runs as
`aten._scaled_dot_product_flash_attention_for_cpu`, which torch's registry does not list (it
lists the CUDA kernels), so the transformer's attention would silently count as zero. It gets
torch's own SDPA formula (QKᵀ and AV as dense bmm's: a masked-out score is still computed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from vlaforge.inference.prefix_cache import STAGES, StagedPredictor, StageTimer
from vlaforge.types import Observation

_aten = torch.ops.aten


def _cpu_sdpa_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any, **kwargs: Any
) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {}
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    EXTRA_FORMULAS[_aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops


@dataclass
class FlopCount:
    """total: FLOPs of the call; by_op: aten op name -> FLOPs; by_module: top-level module name -> FLOPs.

    Module names are the counter's: the class name of the outermost module called, then attribute
    paths (e.g. "BlockTransformer.blocks.0.mlp"); ops outside any module are only in the total.
    """

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_op": self.by_op, "by_module": self.by_module}


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[FlopCount, Any]:
    """Run `fn(*args, **kwargs)` once under the counter -> (FlopCount, fn's result).

    The count is of what this call executes: with a fixed seed and fixed shapes it is exact and
    deterministic (no timing involved), so it can be asserted in tests.
    """
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=EXTRA_FORMULAS)
    with counter:
        result = fn(*args, **kwargs)
    counts = counter.get_flop_counts()
    by_op: dict[str, int] = {}
    for op, n in counts.get("Global", {}).items():
        name = str(getattr(op, "__name__", op)).split(".")[-1] if not isinstance(op, str) else op
        by_op[name] = by_op.get(name, 0) + int(n)
    by_module = {
        name: int(sum(ops.values())) for name, ops in counts.items() if name != "Global" and "." not in name
    }
    return FlopCount(total=int(counter.get_total_flops()), by_op=by_op, by_module=by_module), result


def format_flops(n: float) -> str:
    """1.23e9 -> '1.23 G'."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} "


class _FlopMarks(StageTimer):
    """A stage timer that charges FLOPs instead of seconds: the counter's total since the last mark."""

    def __init__(self, counter: FlopCounterMode, device: torch.device, stages: Sequence[str] = STAGES):
        super().__init__(device, stages)
        self.counter = counter
        self._last_flops = 0

    def mark(self, stage: str) -> None:
        now = int(self.counter.get_total_flops())
        self.seconds[stage] += now - self._last_flops  # FLOPs, in the timer's per-stage slots
        self._last_flops = now


def count_stage_flops(
    staged: StagedPredictor | Any,
    observations: Sequence[Observation],
    *,
    steps: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, int]:
    """FLOPs per stage (tokenize, transformer, head, rest) and "total" of one `StagedPredictor.predict`.

    staged: also an `lm_stages.LMStagedPredictor` (its own stage names, e.g. vision / prefix / decode).
    """
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=EXTRA_FORMULAS)
    marks = _FlopMarks(counter, staged.policy.device, getattr(staged, "stages", STAGES))
    with counter:
        staged.predict(observations, steps=steps, generator=generator, timer=marks)
    return {k: int(v) for k, v in marks.total().items()}
