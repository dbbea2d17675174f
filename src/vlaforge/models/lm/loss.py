"""Next-token cross-entropy of the LM policies: the ONE per-sample implementation (π0-FAST's and
π0.5's FAST / subtask tokens: mean over each sample's trained tokens, then over the batch, as openpi).

The RT-2 / OpenVLA token loss (`policies/vla`) is a different average on purpose: a mean over every
action token of the batch (`heads.base.masked_mean`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, V) and targets (N,) at the N True entries of mask (B, S) -> cross-entropy (B, S)
    (0 where mask is False) and hits (B, S) bool (arg-max == target)."""
    ce = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device)  # (B, S)
    ce[mask] = F.cross_entropy(logits, targets, reduction="none")
    hit = torch.zeros_like(mask)  # (B, S)
    hit[mask] = logits.argmax(-1) == targets
    return ce, hit


def per_sample_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, S) over each row's True mask entries (B,); 0 for a row without any."""
    return (values * mask).sum(1) / mask.sum(1).clamp(min=1)
