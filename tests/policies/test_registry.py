"""The family registry: every recipe in one family, what each class declares is true of it, and old
checkpoints of the pretrained-LM families (config.json with the retired `augment` / `head`) still load."""

import json

import numpy as np
import pytest
import torch

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.policies.base import checkpoint_class
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.policies.registry import FAMILIES, all_recipe_names, capabilities_of, family_of, recipe_family
from vlaforge.types import Observation

TINY = {
    "octo": "octo-tiny",
    "vla": "openvla-oft-tiny",
    "pi0": "pi0-tiny",
    "pi0-fast": "pi0-fast-tiny",
    "pi05": "pi05-tiny",
}


def _build(family: str):
    torch.manual_seed(0)
    recipe = TINY[family]
    history = get_recipe(recipe).model.get("history", 1)
    ds = TinyDataset(n=8, history=history, chunk=get_recipe(recipe).model.get("chunk", 4))
    return make_policy(recipe, ds)


def test_every_recipe_has_one_family_and_every_family_a_tiny_recipe():
    names = [n for f in FAMILIES.values() for n in f.recipes]
    assert sorted(names) == all_recipe_names() and len(set(names)) == len(names)
    assert set(TINY) == set(FAMILIES)
    for name, family in FAMILIES.items():
        assert family.name == name == family.policy_class.family
        assert all(recipe_family(r) is family for r in family.recipes)
        label = family.policy_class.policy_class  # None: the Octo layout (no "policy_class" in config.json)
        assert checkpoint_class({} if label is None else {"policy_class": label}) in (
            None,
            family.policy_class,
        )
    with pytest.raises(ValueError, match="available recipes"):
        recipe_family("octo-huge")


@pytest.mark.parametrize("family", sorted(TINY))
def test_declared_capabilities_hold(family):
    policy = _build(family)
    f = family_of(policy)
    caps = f.capabilities
    assert (
        f.name == family and isinstance(policy, f.policy_class) and isinstance(policy.config, f.config_class)
    )
    assert capabilities_of(policy) is caps and capabilities_of(object()) is None
    assert (caps.rtc == "own") == callable(getattr(policy, "predict_rtc", None))
    assert caps.bf16_weights == callable(getattr(policy, "cast_for_inference", None))
    assert (caps.compile == "sampling") == callable(getattr(policy, "compile_sampling", None))
    policy.set_gradient_checkpointing(True)  # every family can
    if caps.lora_preset is not None:  # the preset's targets exist in the module tree
        from vlaforge.train.freeze import _matches
        from vlaforge.train.lora import lora_preset

        cfg = lora_preset(policy)
        modules = [n for n, _ in policy.named_modules()]
        assert all(any(_matches(n, g) for n in modules) for g in cfg.targets)


@pytest.mark.parametrize("recipe", ["pi0-tiny", "openvla-tiny"])
def test_old_lm_checkpoint_with_cli_only_fields_loads_with_same_actions(tmp_path, recipe):
    """config.json written before the registry held `augment` / `head`: dropped on loading."""
    torch.manual_seed(0)
    policy = make_policy(recipe, TinyDataset(n=8, history=1, chunk=get_recipe(recipe).model.get("chunk", 1)))
    policy.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    head = "flow" if recipe.startswith("pi0") else "tokens"
    meta["config"].update(augment=False, head=head)
    (tmp_path / "p" / "config.json").write_text(json.dumps(meta))
    loaded = Policy.load(tmp_path / "p")
    assert type(loaded) is type(policy) and not hasattr(loaded.config, "augment")
    rng = np.random.default_rng(0)
    obs = Observation(
        images={c: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for c in ("front", "wrist")},
        state=rng.normal(size=3).astype(np.float32),
        instruction=TASKS[0],
    )
    a = policy.predict(obs, generator=torch.Generator().manual_seed(1)).actions
    b = loaded.predict(obs, generator=torch.Generator().manual_seed(1)).actions
    np.testing.assert_array_equal(a, b)


def test_fixed_head_families_refuse_head_and_augmentation():
    ds = TinyDataset(n=4, history=1, chunk=8)
    with pytest.raises(ValueError, match="fixed action head"):
        make_policy("pi0-tiny", ds, head="diffusion")
    with pytest.raises(ValueError, match="augmentation"):
        make_policy("pi0-tiny", ds, augment=True)
    assert not hasattr(make_policy("pi0-tiny", ds, head=None, augment=False).config, "head")
