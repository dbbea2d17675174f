"""Every family's recipes by name: `get_recipe`, `make_policy(recipe, dataset)`, `make_mixture_policy`.

A recipe is a named choice of encoders, transformer size and action head. `make_policy("octo-tiny",
dataset, head="flow")` fills the embodiment (cameras, state/action sizes, fps, statistics, vocabulary)
from the dataset and the architecture from the recipe. `make_mixture_policy("octo-tiny",
MixtureDataset(...))` does the same for a cross-embodiment mixture: padded sizes, one set of statistics
per dataset. The Octo recipes are in `policies/octo/recipes.py`, the VLA ones (`openvla`, `openvla-oft`,
`rt2` and their `-tiny` variants) in `policies/vla/recipes.py`, the π0 family's (π0, π0-FAST, π0.5) in
`policies/pi0/recipes.py`; this table sits above all of them and nothing in the families imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.policies.embodiment import gripper_dims, task_texts
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.octo.recipes import RECIPES, Recipe, octo_config_from_dataset, policy_from_config
from vlaforge.policies.pi0.recipes import PI0_RECIPES, make_pi0_policy
from vlaforge.policies.vla.recipes import VLA_RECIPES, make_vla_policy


def is_vla_recipe(name: str) -> bool:
    """RT-2 / OpenVLA / OFT recipes (policies/vla): kept apart from the Octo RECIPES, whose `model` dicts
    are PolicyConfig fields; `get_recipe` and `make_policy` find both. The π0 recipes (policies/pi0) count too."""
    return name in VLA_RECIPES or name in PI0_RECIPES


def all_recipe_names() -> list[str]:
    return sorted([*RECIPES, *VLA_RECIPES, *PI0_RECIPES])


def get_recipe(name: str) -> Recipe:
    if is_vla_recipe(name):
        r = VLA_RECIPES[name] if name in VLA_RECIPES else PI0_RECIPES[name]
        return Recipe(name, r.description, r.model, r.train)  # model: VLAConfig / Pi0Config fields
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}'; available recipes: {all_recipe_names()}")
    return RECIPES[name]


def config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> PolicyConfig:
    """PolicyConfig for the Octo `recipe` with the embodiment read from a `vlaforge.data.Dataset`."""
    if is_vla_recipe(recipe):
        raise ValueError(
            f"recipe '{recipe}' is a VLA recipe: use vlaforge.policies.vla.recipes.vla_config_from_dataset"
        )
    get_recipe(recipe)  # unknown name -> the list of every family's recipes
    return octo_config_from_dataset(recipe, dataset, **overrides)


def make_mixture_policy(recipe: str, mixture: Any, **overrides: Any) -> Policy:
    """Build an untrained policy for a `vlaforge.data.MixtureDataset` (padded sizes, per-dataset statistics).

    The padded state/action sizes are the mixture's; build the mixture with `state_dim=` / `action_dim=`
    to reserve room for embodiments added later.
    """
    if is_vla_recipe(recipe):
        raise ValueError(
            f"recipe '{recipe}' (VLA) does not support dataset mixtures yet; train on one dataset"
        )
    for fld in ("state_dim", "action_dim", "datasets", "dataset_dims"):
        if overrides.get(fld) is not None:
            raise ValueError(f"make_mixture_policy: '{fld}' comes from the mixture; set it on MixtureDataset")
    cfg = config_from_dataset(recipe, mixture, **overrides)
    cfg = cfg.replace(
        datasets=list(mixture.datasets),
        dataset_dims={n: [int(s), int(a)] for n, (s, a) in mixture.dataset_dims.items()},
        unnormalized_action_dims=[],  # per dataset, in the normalizer's masks
    )
    masks = {}
    for name, ds in mixture.datasets.items():
        masks[name] = np.ones(cfg.action_dim, dtype=bool)
        masks[name][gripper_dims(ds.features)] = False
    return policy_from_config(cfg, mixture.stats, task_texts(mixture), action_masks=masks)


def make_policy(recipe: str, dataset: Any, **overrides: Any) -> Policy:
    """Build an untrained policy for `dataset` (statistics, vocabulary and sizes come from it)."""
    if recipe in PI0_RECIPES:
        return make_pi0_policy(recipe, dataset, **overrides)
    if is_vla_recipe(recipe):
        return make_vla_policy(recipe, dataset, **overrides)
    cfg = config_from_dataset(recipe, dataset, **overrides)
    return policy_from_config(cfg, dataset.stats, task_texts(dataset))
