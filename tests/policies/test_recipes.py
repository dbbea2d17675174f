"""Every named recipe builds at its real size and takes training steps (tiny images keep it fast)."""

import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TinyDataset
from vlaforge.policies.octo.recipes import RECIPES
from vlaforge.policies.recipes import make_policy

# Published sizes (REFERENCE.md): Octo-Small 12 x 384 (MLP 1536, 6 heads), Octo-Base 12 x 768 (MLP 3072, 12 heads).
EXPECTED = {"octo-small": (12, 384, 1536, 6), "octo-base": (12, 768, 3072, 12)}


# Recipes on pretrained parts (octo-lite0) read weight packages: tests/policies/test_pretrained_recipes.py.
SCRATCH = sorted(r for r in RECIPES if "pretrained" not in RECIPES[r].model)


@pytest.mark.parametrize(
    "recipe", [pytest.param(r, marks=pytest.mark.slow) if r == "octo-base" else r for r in SCRATCH]
)
def test_recipe_two_train_steps(recipe):
    torch.manual_seed(0)
    ds = TinyDataset(n=4, history=RECIPES[recipe].model["history"])
    policy = make_policy(recipe, ds, head="l1", encoder_image_size=[16, 16])
    c = policy.config
    if recipe in EXPECTED:
        assert (c.depth, c.width, c.mlp_dim, c.heads) == EXPECTED[recipe]
    batch = default_collate([ds[i] for i in range(2)])
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    before = [p.detach().clone() for p in policy.transformer.parameters()]
    for _ in range(2):
        loss, _ = policy.loss(batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.transformer.parameters()))
