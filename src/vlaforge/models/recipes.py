"""Named recipes: a recipe is a named choice of encoders, transformer size and action head.

`make_policy("octo-tiny", dataset, head="flow")` fills the embodiment (cameras, state/action
sizes, fps, statistics, vocabulary) from the dataset and the architecture from the recipe.
Sizes of octo-small / octo-base are the published ones (REFERENCE.md); octo-tiny is CPU-sized.
`make_mixture_policy("octo-tiny", MixtureDataset(...))` does the same for a cross-embodiment mixture:
padded sizes, one set of statistics per dataset.
The VLA recipes (`openvla`, `openvla-oft`, `rt2` and their `-tiny` variants, models/vla) are found by
`get_recipe` too, and `make_policy` builds them with `vlaforge.models.vla.recipes.make_vla_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaforge.models.config import PolicyConfig
from vlaforge.models.encoders import WordTokenizer
from vlaforge.models.pi0.recipes import PI0_RECIPES
from vlaforge.models.policy import Policy
from vlaforge.models.vla.recipes import VLA_RECIPES
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for this recipe


_OCTO_TRAIN = {"lr": 3e-4, "weight_decay": 0.1, "warmup_steps": 500, "grad_clip": 1.0, "ema_decay": 0.999}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "octo-tiny",
            "Octo layout at CPU size: width 128, 4 layers; cameras resized to 64x64 -> 16 tokens each; history 1",
            {
                "width": 128,
                "depth": 4,
                "heads": 4,
                "mlp_dim": 512,
                "encoder_image_size": [64, 64],
                "stem_channels": [16, 32, 64, 128],
                "patch": 1,
                "history": 1,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "lr": 1e-3, "batch_size": 64, "warmup_steps": 200},
        ),
        Recipe(
            "octo-small",
            "Octo-Small as published: width 384, 12 layers, MLP 1536, 6 heads (27M with T5 excluded)",
            {
                "width": 384,
                "depth": 12,
                "heads": 6,
                "mlp_dim": 1536,
                "stem_channels": [32, 96, 192, 384],
                "patch": 1,
                "history": 2,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "batch_size": 64},
        ),
        Recipe(
            "octo-base",
            "Octo-Base as published: width 768, 12 layers, MLP 3072, 12 heads (93M)",
            {
                "width": 768,
                "depth": 12,
                "heads": 12,
                "mlp_dim": 3072,
                "stem_channels": [32, 96, 192, 384],
                "patch": 1,
                "history": 2,
                "chunk": 4,
            },
            {**_OCTO_TRAIN, "batch_size": 64},
        ),
    ]
}


def is_vla_recipe(name: str) -> bool:
    """RT-2 / OpenVLA / OFT recipes (models/vla): kept apart from RECIPES, whose `model` dicts are
    PolicyConfig fields; `get_recipe` and `make_policy` find both. The π0 recipes (models/pi0) count too."""
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
    """PolicyConfig for `recipe` with the embodiment read from a `vlaforge.data.Dataset`."""
    if is_vla_recipe(recipe):
        raise ValueError(
            f"recipe '{recipe}' is a VLA recipe: use vlaforge.models.vla.recipes.vla_config_from_dataset"
        )
    r = get_recipe(recipe)
    feats = dataset.features
    cams = {
        k[len(IMAGE_PREFIX) :]: [int(feats[k]["shape"][0]), int(feats[k]["shape"][1])]
        for k in feats
        if k.startswith(IMAGE_PREFIX)
    }
    for key in (STATE_KEY, ACTION_KEY):
        if key not in feats:
            raise ValueError(f"dataset has no '{key}' feature (features: {sorted(feats)})")
    base: dict[str, Any] = {
        "recipe": recipe,
        "cameras": cams,
        "state_dim": int(feats[STATE_KEY]["shape"][0]),
        "action_dim": int(feats[ACTION_KEY]["shape"][0]),
        "fps": float(dataset.fps),
        "unnormalized_action_dims": gripper_dims(feats),
        **r.model,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return PolicyConfig(**base)


def gripper_dims(features: dict[str, dict[str, Any]]) -> list[int]:
    """Action dimensions named like a gripper (left unnormalized, as Octo and OpenVLA do)."""
    action_names = features[ACTION_KEY].get("names") or []
    if isinstance(action_names, dict):  # LeRobot sometimes nests names: {"motors": [...]}
        action_names = next(iter(action_names.values()), [])
    return [i for i, n in enumerate(action_names) if "gripper" in str(n).lower()]


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
        from vlaforge.models.pi0.recipes import make_pi0_policy

        return make_pi0_policy(recipe, dataset, **overrides)
    if is_vla_recipe(recipe):
        from vlaforge.models.vla.recipes import make_vla_policy

        return make_vla_policy(recipe, dataset, **overrides)
    cfg = config_from_dataset(recipe, dataset, **overrides)
    return policy_from_config(cfg, dataset.stats, task_texts(dataset))


def policy_from_config(
    cfg: PolicyConfig,
    stats: dict[str, Any],
    texts: list[str],
    *,
    action_masks: dict[str, np.ndarray] | None = None,
) -> Policy:
    """stats: the dataset's statistics, or for a mixture (cfg.datasets) dataset name -> its padded statistics.

    action_masks: mixtures only, dataset name -> (A,) bool, False = leave unnormalized (default:
    cfg.unnormalized_action_dims for every dataset).
    """
    default_mask = np.ones(cfg.action_dim, dtype=bool)
    for d in cfg.unnormalized_action_dims:
        default_mask[d] = False
    modes = {STATE_KEY: cfg.state_norm, ACTION_KEY: cfg.action_norm}
    if cfg.datasets:
        missing = [n for n in cfg.datasets if n not in stats]
        if missing:
            raise ValueError(f"no statistics for datasets {missing} of the mixture (have {sorted(stats)})")
        masks = action_masks or {}
        normalizer = Normalizer.combine(
            {
                name: Normalizer.from_dataset_stats(
                    stats[name], modes, masks={ACTION_KEY: masks.get(name, default_mask)}, clip=True
                )
                for name in cfg.datasets
            }
        )
    else:
        normalizer = Normalizer.from_dataset_stats(stats, modes, masks={ACTION_KEY: default_mask}, clip=True)
    tokenizer = WordTokenizer.build(texts) if cfg.language == "words" else None
    return Policy(cfg, normalizer, tokenizer)


def task_texts(dataset: Any) -> list[str]:
    tasks = dataset.meta.tasks
    if isinstance(tasks, dict):
        return [str(t) for t in (tasks.values() if all(isinstance(k, int) for k in tasks) else tasks.keys())]
    return [str(t) for t in tasks]
