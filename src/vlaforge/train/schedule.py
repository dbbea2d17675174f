"""Learning-rate schedule: linear warmup then cosine decay over training *progress*.

Progress is a fraction in [0, 1] — steps done / step budget, or elapsed / time budget, whichever
is further along — so a run limited by wall-clock time still gets a complete cosine decay.
"""

from __future__ import annotations

import math


def lr_at(step: int, progress: float, *, base_lr: float, warmup_steps: int, min_ratio: float) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    p = min(max(progress, 0.0), 1.0)
    cosine = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return base_lr * warm * cosine
