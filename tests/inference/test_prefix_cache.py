"""The staged predict is the same computation as Policy.predict_batch; the prefix cache matches it too."""

import numpy as np
import pytest
import torch

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.bench.embodiment import build_recipe_policy
from vlaforge.inference.load import example_observations
from vlaforge.inference.prefix_cache import STAGES, StagedPredictor
from vlaforge.policies.recipes import make_policy


def _policies():
    yield "octo-tiny 32px", lambda head: build_recipe_policy("octo-tiny", head, image_size=32)
    # history 2, patch 2, other cameras: the TINY test config
    yield "tiny history 2", lambda head: make_policy("octo-tiny", TinyDataset(), head=head, **TINY).eval()


@pytest.mark.parametrize("head", ["diffusion", "flow", "binned", "l1"])
@pytest.mark.parametrize("which", [name for name, _ in _policies()])
def test_staged_actions_equal_predict_batch(head, which):
    torch.manual_seed(0)
    policy = dict(_policies())[which](head)
    batch = policy.observations_to_batch(example_observations(policy, seed=1))
    ref = policy.predict_batch(batch, generator=torch.Generator().manual_seed(7))  # (1, H, A)
    staged, seconds = StagedPredictor(policy).predict_batch(batch, generator=torch.Generator().manual_seed(7))
    assert torch.equal(staged, ref)  # same ops in the same order: bit-identical
    assert set(seconds) == {*STAGES, "total"} and seconds["total"] == pytest.approx(
        sum(seconds[s] for s in STAGES)
    )

    cached = StagedPredictor(policy, prefix_cache=True)
    for _ in range(2):  # miss (computes the task keys/values), then hit
        actions, _ = cached.predict_batch(batch, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(actions, ref, atol=1e-5, rtol=0)
    assert cached.cached_instructions == 1


def test_predict_returns_numpy_chunk_and_cache_is_per_instruction():
    policy = build_recipe_policy("octo-tiny", "l1", image_size=32)
    obs = example_observations(policy)
    actions, seconds = StagedPredictor(policy).predict(obs)
    np.testing.assert_array_equal(actions, policy.predict(obs).actions)
    assert actions.dtype == np.float32 and seconds["total"] > 0

    cached = StagedPredictor(policy, prefix_cache=True, max_cached=1)
    cached.predict(obs)
    other = example_observations(policy, instruction="reach the goal position")
    np.testing.assert_allclose(cached.predict(other)[0], policy.predict(other).actions, atol=1e-5)
    assert cached.cached_instructions == 1  # the least recently used instruction was dropped
    cached.clear_cache()
    assert cached.cached_instructions == 0


def test_bad_batch_is_named():
    policy = build_recipe_policy("octo-tiny", "l1", image_size=32)
    batch = policy.observations_to_batch(example_observations(policy))
    del batch["observation.images.corner"]
    with pytest.raises(KeyError, match="observation.images.corner"):
        StagedPredictor(policy).predict_batch(batch)
