"""The one small contract every action head follows.

A head turns a feature vector per sample (e.g. Octo's mean-pooled readout tokens) into an
action chunk, in the *normalized* action space (the policy's transforms normalize before and
unnormalize after). It knows how to be trained (``loss``) and how to act (``sample``):

    loss(features (B, F), actions (B, H, A), mask (B, H, A) bool | None) -> (loss scalar, metrics)
    sample(features (B, F), *, steps=None, generator=None) -> actions (B, H, A)

``mask`` is False for padded entries (chunk steps past the episode end, padded action dims):
they contribute nothing to the loss. ``loss`` is written once, here: it checks the inputs
(`prepare_targets`) and calls the head's ``objective(features, actions, mask, generator)``. ``steps`` overrides the number of denoising/integration
steps for iterative heads and is ignored by one-shot heads. ``generator`` makes sampling
reproducible; it must live on the features' device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

RNG = torch.Generator | None  # a random source: a generator, or None for torch's global one
LossAndMetrics = tuple[torch.Tensor, dict[str, float]]  # (loss scalar, metrics for the log)


class ActionHead(nn.Module):
    """Base class: stores the sizes, validates inputs, and records hyperparameters for ``config()``."""

    name: str = "base"

    def __init__(self, feature_dim: int, horizon: int, action_dim: int):
        super().__init__()
        for field_name, value in (
            ("feature_dim", feature_dim),
            ("horizon", horizon),
            ("action_dim", action_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {field_name} must be a positive int, got {value!r}")
        self.feature_dim = feature_dim
        self.horizon = horizon  # H
        self.action_dim = action_dim  # A
        self.hparams: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        """JSON-serializable description; ``make_head(**head.config())`` rebuilds the same architecture."""
        return {
            "name": self.name,
            "feature_dim": self.feature_dim,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            **self.hparams,
        }

    # -- input checks shared by every head ---------------------------------------------------------

    def check_features(self, features: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"{type(self).__name__}: features must be (B, {self.feature_dim}), got {tuple(features.shape)}"
            )

    def initial_noise(self, features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The sampling heads' starting point: N(0, I) noise (B, H*A) in the features' dtype and device."""
        b = features.shape[0]
        return torch.randn(
            (b, self.horizon * self.action_dim),
            generator=generator,
            device=features.device,
            dtype=features.dtype,
        )  # (B, H*A)

    def prepare_targets(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes; return (actions with padded entries zeroed (B, H, A), float mask (B, H, A))."""
        self.check_features(features)
        expected = (features.shape[0], self.horizon, self.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: actions must be {expected} (B, H, A), got {tuple(actions.shape)}"
            )
        if mask is None:
            mask = torch.ones(expected, dtype=torch.bool, device=actions.device)  # (B, H, A)
        elif tuple(mask.shape) != expected or mask.dtype != torch.bool:
            raise ValueError(
                f"{type(self).__name__}: mask must be bool {expected} (True = valid), got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        actions = actions.to(features.dtype).masked_fill(~mask, 0.0)  # padding may hold garbage
        if not bool(torch.isfinite(actions).all()):
            raise ValueError(f"{type(self).__name__}: actions contain NaN/Inf at unmasked entries")
        return actions, mask.to(features.dtype)

    # -- the contract --------------------------------------------------------------------------------

    def loss(
        self,
        features: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss over the valid entries -> (loss, metrics): the inputs checked by `prepare_targets`
        (padded entries zeroed), then the head's `objective`."""
        actions, fmask = self.prepare_targets(features, actions, mask)  # (B, H, A), (B, H, A)
        return self.objective(features, actions, fmask, generator)

    def objective(
        self, features: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, generator: RNG
    ) -> LossAndMetrics:
        """The head's loss on checked targets: actions (B, H, A) with padded entries zeroed, mask (B, H, A)
        float 0/1 (1 = valid), generator for the noise of the sampling heads."""
        raise NotImplementedError

    def sample(
        self, features: torch.Tensor, *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``mask`` (same shape, float 0/1) is 1; 0 if none are."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def check_prefix(
    head: ActionHead,
    features: torch.Tensor,
    prefix: torch.Tensor | None,
    weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Validate an inpainting request; returns (prefix (B, H*A), weights (1, H*A)) or None.

    Shared by the flow and diffusion heads (real-time chunking). Raises ValueError naming the
    argument when only one of the two is given, on a wrong shape, non-finite values, or weights
    outside [0, 1].
    """
    name = type(head).__name__
    if prefix is None and weights is None:
        return None
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{name}.sample: guided sampling (prefix=...) needs autograd; call it under torch.no_grad(), "
            "not torch.inference_mode()"
        )
    if prefix is None or weights is None:
        raise ValueError(
            f"{name}.sample: prefix and prefix_weights go together (got only "
            f"{'prefix' if prefix is not None else 'prefix_weights'}); build the weights with "
            "vlaforge.runtime.rtc.rtc_weights(H, d, s)"
        )
    b, h, a = features.shape[0], head.horizon, head.action_dim
    prefix = torch.as_tensor(prefix, device=features.device, dtype=features.dtype)
    weights = torch.as_tensor(weights, device=features.device, dtype=features.dtype)
    if tuple(prefix.shape) != (b, h, a):
        raise ValueError(
            f"{name}.sample: prefix must be (B, H, A) = {(b, h, a)} normalized actions, got {tuple(prefix.shape)}"
        )
    if tuple(weights.shape) != (h,):
        raise ValueError(f"{name}.sample: prefix_weights must be (H,) = ({h},), got {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or bool((weights > 1).any()):
        raise ValueError(
            f"{name}.sample: prefix_weights must be finite and in [0, 1], got {weights.tolist()}"
        )
    used = (weights > 0)[None, :, None].expand(b, h, a)  # (B, H, A) entries the guidance reads
    if not bool(torch.isfinite(prefix[used]).all()):
        raise ValueError(f"{name}.sample: prefix holds NaN/Inf where prefix_weights > 0")
    prefix = torch.where(used, prefix, torch.zeros_like(prefix))  # unused entries may hold anything
    w = weights[:, None].expand(h, a).reshape(1, h * a)  # (1, H*A)
    return prefix.reshape(b, h * a), w
