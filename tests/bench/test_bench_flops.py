"""FLOP counting: exact on known ops, attention included on CPU, stages adding up to the whole call."""

import torch

from vlaforge.bench.embodiment import build_recipe_policy
from vlaforge.bench.flops import count_flops, count_stage_flops, format_flops
from vlaforge.inference.load import example_observations
from vlaforge.inference.prefix_cache import StagedPredictor


def test_linear_flops_are_exact():
    layer = torch.nn.Linear(8, 16)
    count, out = count_flops(layer, torch.randn(4, 8))
    assert out.shape == (4, 16)
    assert count.total == 2 * 4 * 8 * 16  # one multiply-add per weight per row
    assert count.by_op == {"addmm": 2 * 4 * 8 * 16}


def test_matmul_flops_are_exact():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    count, _ = count_flops(torch.matmul, a, b)
    assert count.total == 2 * 3 * 5 * 7
    batched, _ = count_flops(torch.bmm, torch.randn(2, 3, 5), torch.randn(2, 5, 7))
    assert batched.total == 2 * 2 * 3 * 5 * 7


def test_cpu_attention_is_counted_as_two_matmuls():
    q = torch.randn(1, 2, 5, 8)  # (B, heads, N, head_dim)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    with torch.inference_mode():
        count, _ = count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q, attn_mask=mask)
    assert count.total == 2 * (2 * 2 * 5 * 5 * 8)  # Q K^T and A V, per head


def test_stage_flops_add_up_to_the_full_predict_and_the_prefix_cache_saves_transformer_flops():
    policy = build_recipe_policy("octo-tiny", "flow", image_size=32)
    obs = example_observations(policy)
    full, _ = count_flops(policy.predict, obs, generator=torch.Generator().manual_seed(0))
    stages = count_stage_flops(StagedPredictor(policy), obs, generator=torch.Generator().manual_seed(0))
    assert stages["total"] == full.total
    assert stages["rest"] == 0 and min(stages["tokenize"], stages["transformer"], stages["head"]) > 0
    # flow: 10 Euler steps of the same network, so the head's FLOPs are 10x one evaluation
    one_step = count_stage_flops(StagedPredictor(policy), obs, steps=1)["head"]
    assert stages["head"] == 10 * one_step

    cached = StagedPredictor(policy, prefix_cache=True)
    cached.predict(obs)  # fills the cache for this instruction
    hit = count_stage_flops(cached, obs)
    assert hit["head"] == stages["head"]
    assert 0 < hit["transformer"] < stages["transformer"]


def test_format_flops():
    assert format_flops(1.5e9) == "1.5 G"
    assert format_flops(999) == "999 "
