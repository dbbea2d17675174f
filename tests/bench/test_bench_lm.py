"""`vlaforge bench` on the pretrained-LM recipes (π0, π0-FAST, OpenVLA, OFT, RT-2) at 32 px.

The hook-staged predict must be the policy's own computation (bit-identical actions), its stages and
FLOPs must add up, the fast paths must either match the reference within tolerance or say why they
do not apply, and the CLI must write the same JSON shape as for Octo.
"""

import json

import numpy as np
import pytest
import torch

from vlaforge.bench import fastpaths
from vlaforge.bench.embodiment import build_recipe_policy, parameter_counts
from vlaforge.bench.flops import count_flops, count_stage_flops
from vlaforge.bench.lm_stages import FAMILY_STAGES, LMStagedPredictor
from vlaforge.bench.roofline import MatmulThroughput
from vlaforge.bench.runner import bench_policy
from vlaforge.cli import main
from vlaforge.inference.fastpaths import lm_family
from vlaforge.inference.load import example_observations

LM_RECIPES = {
    "pi0-tiny": "pi0",
    "pi0-fast-tiny": "pi0-fast",
    "openvla-tiny": "vla",
    "openvla-oft-tiny": "oft",
    "rt2-tiny": "vla",
}


def _gen(i: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + i)


@pytest.fixture(scope="module")
def policies():
    return {r: build_recipe_policy(r, image_size=32, seed=0) for r in LM_RECIPES}


@pytest.mark.parametrize("recipe", list(LM_RECIPES))
@pytest.mark.parametrize("use_cache", [True, False])
def test_staged_actions_equal_predict_batch(policies, recipe, use_cache):
    policy = policies[recipe]
    family = LM_RECIPES[recipe]
    assert lm_family(policy) == family
    obs = example_observations(policy, seed=1)
    batch = policy.observations_to_batch(obs)
    ref = policy.predict_batch(batch, generator=_gen(0), use_cache=use_cache)[0].numpy()  # (H, A)
    staged = LMStagedPredictor(policy, use_cache=use_cache)
    actions, seconds = staged.predict(obs, generator=_gen(0))
    np.testing.assert_array_equal(actions, ref)  # the policy's own call, only observed by hooks
    stages = FAMILY_STAGES[family]
    assert set(seconds) == {*stages, "total"}
    assert seconds["total"] == pytest.approx(sum(seconds[s] for s in stages))
    assert all(seconds[s] >= 0 for s in stages)
    calls, c = staged.last_calls, policy.config
    assert calls["vision"] == len(c.cameras)  # one tower call per camera
    if family == "pi0":  # one prefix pass into the cache, then one expert call per Euler step
        assert (calls["backbone"], calls["expert"]) == ((1, c.steps) if use_cache else (0, c.steps))
    elif family == "vla":  # the first action token comes from the prefix pass
        assert calls["prefix"] + calls["decode"] == c.n_action_tokens
    elif family == "oft":
        assert calls["pass"] == 1 and calls["head"] == 1
    else:
        assert calls["prefix"] == int(use_cache)
        assert 1 <= calls["prefix"] + calls["decode"] <= c.max_decode_tokens


@pytest.mark.parametrize("recipe", ["pi0-tiny", "openvla-oft-tiny", "rt2-tiny"])
def test_stage_flops_add_up_to_the_whole_predict(policies, recipe):
    policy = policies[recipe]
    obs = example_observations(policy)
    full, _ = count_flops(policy.predict, obs, generator=_gen(0))
    by_stage = count_stage_flops(LMStagedPredictor(policy), obs, generator=_gen(0))
    assert full.total > 0 and by_stage["total"] == full.total
    assert by_stage["vision"] > 0 and by_stage[FAMILY_STAGES[LM_RECIPES[recipe]][1]] > 0
    counts = parameter_counts(policy)
    assert counts["vision"] > 0 and counts["lm"] > 0
    assert counts["vision"] + counts["lm"] + counts["other"] == counts["total"] == policy.num_parameters()
    # nothing frozen in the tiny recipes but the unused final norms of towers read at layer -2
    assert 0.99 * counts["total"] < counts["trainable"] <= counts["total"]


def test_int8_swap_restores_float_layers(policies):
    policy = policies["openvla-oft-tiny"]
    obs = example_observations(policy)
    path = fastpaths.prepare_path("int8", policy, obs, generator=_gen)
    actions, _ = path.predict(obs, _gen(0))
    ref = policy.predict(obs, generator=_gen(0)).actions
    assert np.abs(actions - ref).max() <= path.spec.tolerance  # OFT: one deterministic pass
    assert all(type(m) is torch.nn.Linear for m in policy.lm.modules() if "Linear" in type(m).__name__)
    with pytest.raises(fastpaths.PathUnavailable, match="sequence length"):
        fastpaths.prepare_path("compile", policy, obs, generator=_gen)
    with pytest.raises(fastpaths.PathUnavailable, match="cast_for_inference"):
        fastpaths.prepare_path("bf16-weights", policy, obs, generator=_gen)


def test_bench_policy_record_for_pi0(policies):
    policy = policies["pi0-tiny"]
    roof = {d: MatmulThroughput(d, "cpu", 1, {64: 10.0}, 10.0, 64) for d in ("fp32", "bf16")}
    paths = [p for p in fastpaths.PATHS if p != "compile"]  # compiled: the slow test in test_bench_lm_compile
    record = bench_policy(policy, paths=paths, runs=2, warmup=1, roofline=roof, log=lambda s: None)
    assert record["family"] == "pi0" and record["head"] == "flow" and record["sampler"] == "euler"
    assert record["stages"] == ["vision", "backbone", "expert", "rest"]
    assert record["flops"]["stages_match_predict"] is True
    b = record["breakdown_ms"]
    assert b["matches_predict"] is True and b["use_cache"] is True
    assert b["calls"]["expert"] == policy.config.steps and b["per_step"] > 0
    p = record["paths"]
    assert "compile" not in p
    for name in ("inference_mode", "bf16", "bf16-weights", "int8", "prefix-cache"):
        assert p[name]["status"] == "ok" and p[name]["equal"] is True, name
        assert p[name]["median_ms"] > 0 and p[name]["flops_per_chunk"] > 0
    # the KV cache skips recomputing the prefix at every Euler step: far fewer FLOPs than the reference
    assert p["prefix-cache"]["flops_per_chunk"] == record["flops"]["per_chunk"]
    assert p["prefix-cache"]["flops_per_chunk"] < p["inference_mode"]["flops_per_chunk"]
    assert set(p["prefix-cache"]["breakdown_ms"]) == {"vision", "backbone", "expert", "rest", "total"}
    assert p["inference_mode"]["roofline"]["multiple"] > 0 and p["bf16"]["roofline"]["dtype"] == "bf16"


def test_cli_bench_lm_recipe_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        ["bench", "--recipe", "rt2-tiny,openvla-oft-tiny", "--runs", "2", "--warmup", "1", "--image-size", "32",
         "--paths", "inference_mode,int8,prefix-cache", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    rt2, oft = report["results"]
    assert (rt2["recipe"], rt2["head"], rt2["family"]) == ("rt2-tiny", "tokens", "vla")
    assert (oft["recipe"], oft["head"], oft["family"]) == ("openvla-oft-tiny", "mlp", "oft")
    assert rt2["model"]["cameras"] == {"corner": [32, 32]}  # RT-2 reads the main camera only
    assert "decode_stats" in rt2 and rt2["breakdown_ms"]["matches_predict"] is True
    assert oft["paths"]["prefix-cache"]["equal"] is True  # OFT decodes nothing: the switch changes nothing
    printed = capsys.readouterr().out
    assert "| rt2-tiny/tokens |" in printed and "LM policies, stage breakdown" in printed
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.slow
def test_pi0_small_is_staged_like_predict():
    policy = build_recipe_policy("pi0-small", image_size=32)  # ~42M parameters: a few seconds to build
    obs = example_observations(policy)
    staged = LMStagedPredictor(policy)
    actions, seconds = staged.predict(obs, generator=_gen(0))
    np.testing.assert_array_equal(actions, policy.predict(obs, generator=_gen(0)).actions)
    assert staged.last_calls["expert"] == policy.config.steps and seconds["backbone"] > 0
