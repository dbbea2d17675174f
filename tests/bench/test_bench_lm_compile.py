"""`vlaforge bench --paths compile` on the pretrained-LM policies.

The token decoders (OpenVLA / RT-2, π0-FAST) run their decode steps through the LM's compiled
static-shape step, π0 its prefix-cache call with `Pi0Policy.compile_sampling()` switched on; OFT, and a
machine without a C++ compiler, get `PathUnavailable` with the reason. The compiled runs (inductor builds C++ kernels: tens of seconds to minutes) are slow tests.
"""

import numpy as np
import pytest
import torch

from vlaforge.bench import fastpaths
from vlaforge.bench.embodiment import build_recipe_policy
from vlaforge.bench.lm_stages import LMStagedPredictor, compiled_decoding
from vlaforge.bench.runner import bench_policy
from vlaforge.inference.load import example_observations

# inductor builds C++ kernels at the first call: minutes on a loaded 2-core machine, past the
# suite's 300 s per-test timeout.
COMPILE_TIMEOUT_S = 1800


def _gen(i: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + i)


@pytest.fixture(scope="module")
def policies():
    recipes = ("pi0-tiny", "openvla-oft-tiny", "openvla-tiny", "pi0-fast-tiny")
    return {r: build_recipe_policy(r, image_size=32, seed=0) for r in recipes}


@pytest.mark.parametrize("recipe", ["pi0-tiny", "openvla-oft-tiny"])
def test_compiled_decoding_is_for_token_decoders_only(policies, recipe):
    policy = policies[recipe]
    if recipe == "openvla-oft-tiny":
        with pytest.raises(fastpaths.PathUnavailable, match="OFT decodes nothing"):
            fastpaths.prepare_path("compile", policy, example_observations(policy), generator=_gen)
    with pytest.raises(ValueError, match="token-decoding families"):
        with compiled_decoding(policy):
            pass
    with pytest.raises(ValueError, match="compile_decoding needs"):
        LMStagedPredictor(policy, compile_decoding=True)


def test_compile_path_without_a_cpp_compiler_is_unavailable(policies, monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def missing() -> str:
        raise RuntimeError("No working C++ compiler found in ('g++',)")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    for recipe in ("openvla-tiny", "pi0-tiny"):
        policy = policies[recipe]
        with pytest.raises(fastpaths.PathUnavailable, match="needs a C\\+\\+ compiler"):
            fastpaths.prepare_path("compile", policy, example_observations(policy), generator=_gen)
    assert not policies["openvla-tiny"].lm.decode_compiled  # nothing was switched on
    assert not policies["pi0-tiny"].sampling_compiled


def test_compiled_decoding_switch_restores_the_previous_state(policies):
    lm = policies["pi0-fast-tiny"].lm
    assert not lm.decode_compiled
    with compiled_decoding(policies["pi0-fast-tiny"]):
        assert lm.decode_compiled  # compilation itself happens at the first decode step, not here
    assert not lm.decode_compiled
    lm.compile_decoding()
    try:
        with compiled_decoding(policies["pi0-fast-tiny"]):
            pass
        assert lm.decode_compiled  # a user's own opt-in survives the bench's switch
    finally:
        lm.compile_decoding(False)


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT_S)
@pytest.mark.parametrize("recipe", ["openvla-tiny", "pi0-fast-tiny"])
def test_compile_path_matches_the_cached_path(policies, recipe):
    policy = policies[recipe]
    obs = example_observations(policy, seed=1)
    path = fastpaths.prepare_path("compile", policy, obs, generator=_gen)
    cached = fastpaths.prepare_path("prefix-cache", policy, obs, generator=_gen)
    assert not policy.lm.decode_compiled  # switched on only inside the compile path's calls
    actions, seconds = path.predict(obs, _gen(0))
    reference, _ = cached.predict(obs, _gen(0))
    np.testing.assert_array_equal(actions, reference)  # greedy: the same tokens, the same chunk
    assert path.staged is not None and cached.staged is not None
    assert path.staged.last_calls == cached.staged.last_calls  # the decode steps still pass the hooks
    assert path.staged.last_calls["decode"] > 0 and seconds["decode"] > 0


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT_S)
def test_bench_record_has_a_compiled_lm_row(policies):
    policy = policies["openvla-tiny"]
    record = bench_policy(
        policy, paths=["inference_mode", "prefix-cache", "compile"], runs=2, warmup=1, log=lambda s: None
    )
    p = record["paths"]
    assert p["compile"]["status"] == "ok", p["compile"]
    assert p["compile"]["equal"] is True
    assert set(p["compile"]["breakdown_ms"]) == {"vision", "prefix", "decode", "rest", "total"}
    assert p["compile"]["flops_per_chunk"] > 0
    assert record["breakdown_ms"]["matches_predict"] is True  # the plain breakdown ran eager again


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT_S)
def test_bench_record_has_a_compiled_pi0_row(policies):
    """π0: the prefix-cache call with compile_sampling() on, the same chunk to float tolerance, the
    prefix-cache path's FLOPs, and the policy left eager for the other paths."""
    policy = policies["pi0-tiny"]
    record = bench_policy(
        policy, paths=["inference_mode", "prefix-cache", "compile"], runs=2, warmup=1, log=lambda s: None
    )
    p = record["paths"]
    assert p["compile"]["status"] == "ok", p["compile"]
    assert p["compile"]["equal"] is True
    assert p["compile"]["flops_per_chunk"] == p["prefix-cache"]["flops_per_chunk"]
    assert p["compile"]["flops_per_chunk"] < p["inference_mode"]["flops_per_chunk"]
    assert not policy.sampling_compiled
