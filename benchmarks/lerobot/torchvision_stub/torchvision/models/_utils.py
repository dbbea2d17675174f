"""IntermediateLayerGetter: run a model's children in order and return chosen intermediate outputs.

ACT wraps its ResNet as ``IntermediateLayerGetter(model, return_layers={"layer4": "feature_map"})``
and reads ``out["feature_map"]``; children after the last requested one (avgpool, fc) are dropped.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class IntermediateLayerGetter(nn.ModuleDict):
    """Keeps the top-level children of `model` up to the last name in `return_layers`.

    return_layers: child name -> key under which its output is returned. Only direct children can be
    requested, and the model must apply its children in registration order (true for ResNet).
    """

    def __init__(self, model: nn.Module, return_layers: dict[str, str]) -> None:
        names = [name for name, _ in model.named_children()]
        missing = sorted(set(return_layers) - set(names))
        if missing:
            raise ValueError(f"return_layers {missing} are not children of the model (children: {names})")
        wanted = dict(return_layers)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        remaining = set(wanted)
        for name, module in model.named_children():
            layers[name] = module
            remaining.discard(name)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = wanted

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


__all__ = ["IntermediateLayerGetter"]
