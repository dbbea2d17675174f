"""The policy families: one line each, name -> config class, policy class, recipes and their builder.

A family is a folder under `policies/` (config, policy class, recipes) plus one line in `FAMILIES`. The
policy class declares the rest itself: ``family`` (its name here), ``config_class``, ``capabilities``
(`policies.base.Capabilities`: RTC, KV cache, compile, bf16 weights, int8, LoRA preset, gradient
checkpointing, ...), and, for a class with its own checkpoint layout, ``policy_class`` with
`register_policy_class` (the loader's table in `policies/base.py`, which `Policy.load` reads without
importing any family). Loading, the fast paths, serving, benchmarking, LoRA and the trainer ask
`family_of(policy)` / `recipe_family(name)` / `capabilities_of(policy)`, never which class they hold.

The recipe lookup over every family (`get_recipe`, `make_policy`, ...) is `policies/recipes.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vlaforge.policies.base import Capabilities, checkpoint_class
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.octo.recipes import RECIPES as OCTO_RECIPES
from vlaforge.policies.octo.recipes import make_octo_policy
from vlaforge.policies.pi0.fast_policy import Pi0FastPolicy
from vlaforge.policies.pi0.fast_recipes import PI0_FAST_RECIPES, make_pi0_fast_policy
from vlaforge.policies.pi0.pi05_policy import Pi05Policy
from vlaforge.policies.pi0.pi05_recipes import PI05_RECIPES, make_pi05_policy
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.policies.pi0.recipes import PI0_RECIPES, make_pi0_policy
from vlaforge.policies.vla.policy import VLAPolicy
from vlaforge.policies.vla.recipes import VLA_RECIPES, make_vla_policy


@dataclass(frozen=True)
class Family:
    """A policy family: its policy class (which names its config class and capabilities), its recipes
    (name -> recipe record) and the builder ``build(recipe, dataset, **overrides)`` of an untrained policy."""

    policy_class: type
    recipes: Mapping[str, Any]
    build: Callable[..., Any]

    @property
    def name(self) -> str:
        return self.policy_class.family  # type: ignore[attr-defined,no-any-return]

    @property
    def config_class(self) -> type:
        return self.policy_class.config_class  # type: ignore[attr-defined,no-any-return]

    @property
    def capabilities(self) -> Capabilities:
        return self.policy_class.capabilities  # type: ignore[attr-defined,no-any-return]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(Policy, OCTO_RECIPES, make_octo_policy),
        Family(VLAPolicy, VLA_RECIPES, make_vla_policy),
        Family(Pi0Policy, PI0_RECIPES, make_pi0_policy),
        Family(Pi0FastPolicy, PI0_FAST_RECIPES, make_pi0_fast_policy),
        Family(Pi05Policy, PI05_RECIPES, make_pi05_policy),
    ]
}

_RECIPE_FAMILY: dict[str, Family] = {}
for _family in FAMILIES.values():
    for _name in _family.recipes:
        if _name in _RECIPE_FAMILY:
            raise ValueError(
                f"recipe {_name!r} is in two families ({_RECIPE_FAMILY[_name].name}, {_family.name})"
            )
        _RECIPE_FAMILY[_name] = _family
    # The loader's table (base.register_policy_class) and this one agree: a class with its own
    # checkpoint layout reads the checkpoints its family writes.
    _label = _family.policy_class.policy_class  # type: ignore[attr-defined]  # None: the Octo layout
    if _label is not None and checkpoint_class({"policy_class": _label}) is not _family.policy_class:
        raise ValueError(f"family {_family.name!r}: {_family.policy_class.__name__} is not registered")


def all_recipe_names() -> list[str]:
    return sorted(_RECIPE_FAMILY)


def recipe_family(recipe: str) -> Family:
    """The family a recipe name belongs to; an unknown name is a ValueError listing every recipe."""
    if recipe not in _RECIPE_FAMILY:
        raise ValueError(f"unknown recipe '{recipe}'; available recipes: {all_recipe_names()}")
    return _RECIPE_FAMILY[recipe]


def family_of(policy: Any) -> Family:
    """The family of a vlaforge policy (its class says ``family``)."""
    return FAMILIES[type(policy).family]


def capabilities_of(policy: Any) -> Capabilities | None:
    """What a vlaforge policy supports; None for any other `PolicyLike` (a remote or ONNX policy, a
    wrapper, a test double), which gets the plain `predict` path only."""
    name = getattr(type(policy), "family", None)
    return FAMILIES[name].capabilities if name in FAMILIES else None
