"""Name -> action head. Recipes and checkpoints refer to heads by these names."""

from __future__ import annotations

import inspect
from typing import Any

from vlaforge.models.heads.base import ActionHead
from vlaforge.models.heads.binned import BinnedHead
from vlaforge.models.heads.diffusion import DiffusionHead
from vlaforge.models.heads.flow import FlowHead
from vlaforge.models.heads.regression import RegressionHead

# name -> (class, fixed keyword arguments)
HEADS: dict[str, tuple[type[ActionHead], dict[str, Any]]] = {
    "diffusion": (DiffusionHead, {}),
    "flow": (FlowHead, {}),
    "binned": (BinnedHead, {}),
    "l1": (RegressionHead, {"loss": "l1"}),
    "mse": (RegressionHead, {"loss": "mse"}),
}


def make_head(name: str, feature_dim: int, horizon: int, action_dim: int, **kw: Any) -> ActionHead:
    """Build the head registered as ``name``; ``kw`` are that head's hyperparameters (see its docstring)."""
    if name not in HEADS:
        raise ValueError(f"unknown action head {name!r}; valid heads: {sorted(HEADS)}")
    cls, fixed = HEADS[name]
    params = inspect.signature(cls.__init__).parameters
    allowed = sorted(p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY and p not in fixed)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(f"action head {name!r} got unknown option(s) {unknown}; valid options: {allowed}")
    return cls(feature_dim, horizon, action_dim, **fixed, **kw)
