"""Every family's recipes behind one lookup: `get_recipe`, `make_policy(recipe, dataset)`, `make_mixture_policy`.

A recipe is a named choice of encoders, transformer size and action head. `make_policy("octo-tiny",
dataset, head="flow")` fills the embodiment (cameras, state/action sizes, fps, statistics, vocabulary)
from the dataset and the architecture from the recipe. `make_mixture_policy("octo-tiny",
MixtureDataset(...))` does the same for a cross-embodiment mixture: padded sizes, one set of statistics
per dataset. Each family keeps its recipes in its folder (`policies/octo/recipes.py`, `vla/recipes.py`,
`pi0/recipes.py`, `pi0/fast_recipes.py`, `pi0/pi05_recipes.py`); `policies/registry.py` says which
family a name belongs to, and this module sits above all of them (nothing in the families imports it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.policies.embodiment import gripper_dims, task_texts
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.octo.recipes import Recipe, octo_config_from_dataset, policy_from_config
from vlaforge.policies.pretrained import load_pretrained_parts
from vlaforge.policies.registry import all_recipe_names, recipe_family

__all__ = [
    "all_recipe_names",
    "config_from_dataset",
    "family_overrides",
    "get_recipe",
    "make_mixture_policy",
    "make_policy",
]


def get_recipe(name: str) -> Recipe:
    """The recipe record: description, `model` (its family's config fields) and `train` (TrainConfig defaults)."""
    r = recipe_family(name).recipes[name]
    return Recipe(r.name, r.description, r.model, r.train)


def config_from_dataset(recipe: str, dataset: Any, **overrides: Any) -> PolicyConfig:
    """PolicyConfig for the Octo `recipe` with the embodiment read from a `vlaforge.data.Dataset`."""
    family = recipe_family(recipe)  # unknown name -> the list of every family's recipes
    if family.name != "octo":
        raise ValueError(f"recipe '{recipe}' is a {family.name} recipe, not an Octo one: use make_policy")
    return octo_config_from_dataset(recipe, dataset, **overrides)


def make_mixture_policy(recipe: str, mixture: Any, **overrides: Any) -> Policy:
    """Build an untrained policy for a `vlaforge.data.MixtureDataset` (padded sizes, per-dataset statistics).

    The padded state/action sizes are the mixture's; build the mixture with `state_dim=` / `action_dim=`
    to reserve room for embodiments added later. Only the Octo recipes support mixtures.
    """
    family = recipe_family(recipe)
    if family.name != "octo":
        raise ValueError(
            f"recipe '{recipe}' ({family.name}) does not support dataset mixtures yet; train on one dataset"
        )
    for fld in ("state_dim", "action_dim", "datasets", "dataset_dims", "dataset_fps", "dataset_cameras"):
        if overrides.get(fld) is not None:
            raise ValueError(f"make_mixture_policy: '{fld}' comes from the mixture; set it on MixtureDataset")
    cfg = config_from_dataset(recipe, mixture, **overrides)
    cfg = cfg.replace(
        datasets=list(mixture.datasets),
        dataset_dims={n: [int(s), int(a)] for n, (s, a) in mixture.dataset_dims.items()},
        dataset_fps={
            n: float(r)
            for n, r in getattr(mixture, "dataset_fps", {}).items()
            if float(r) != float(mixture.fps)
        },
        dataset_cameras={n: dict(cams) for n, cams in getattr(mixture, "camera_maps", {}).items() if cams},
        unnormalized_action_dims=[],  # per dataset, in the normalizer's masks
    )
    masks = {}
    for name, ds in mixture.datasets.items():
        masks[name] = np.ones(cfg.action_dim, dtype=bool)
        masks[name][gripper_dims(ds.features)] = False
    policy = policy_from_config(cfg, mixture.stats, task_texts(mixture), action_masks=masks)
    load_pretrained_parts(cfg.pretrained, vision=policy.image_backbone)  # octo-lite0: ImageNet weights
    return policy


def family_overrides(recipe: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` without the options the recipe's family does not have (`vlaforge train` passes
    ``head`` and ``augment`` for every recipe): a head asked of a family with one fixed head is a
    ValueError; ``augment=False`` where there is no augmentation is dropped, ``augment=True`` an error."""
    family = recipe_family(recipe)
    out = dict(overrides)
    if not family.capabilities.head_choice and "head" in out:
        if out.pop("head") is not None:
            raise ValueError(
                f"recipe '{recipe}' has a fixed action head ({family.name}); head= / --head applies to the Octo recipes"
            )
    if not family.capabilities.augmentation and "augment" in out:
        if out.pop("augment"):
            raise ValueError(
                f"recipe '{recipe}': image augmentation is not implemented for {family.name} yet"
            )
    return out


def make_policy(recipe: str, dataset: Any, **overrides: Any) -> Any:
    """Build an untrained policy for `dataset` (statistics, vocabulary and sizes come from it).

    overrides: config fields of the recipe's family (None values are ignored), or the builder's own
    options (the pretrained-LM families: ``tokenizer_dir=``, ``camera_names=[...]``).
    """
    return recipe_family(recipe).build(recipe, dataset, **family_overrides(recipe, overrides))
