"""Fast paths: parsing, int8 and bf16 (autocast, cast weights) give finite chunks, a failing path is reported, not raised."""

import numpy as np
import pytest
import torch

from vlaforge.bench import fastpaths
from vlaforge.bench.embodiment import build_recipe_policy
from vlaforge.bench.runner import bench_policy
from vlaforge.inference.load import example_observations


def _gen(i: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + i)


def test_parse_paths_puts_the_reference_first():
    assert fastpaths.parse_paths("bf16,int8") == ["inference_mode", "bf16", "int8"]
    assert fastpaths.parse_paths("all") == list(fastpaths.PATHS)
    with pytest.raises(ValueError, match="onnx"):
        fastpaths.parse_paths("bf16,onnx")


@pytest.mark.parametrize("name", ["bf16", "bf16-weights", "int8", "prefix-cache"])
def test_path_returns_a_chunk_close_to_the_plain_one(name):
    policy = build_recipe_policy("octo-tiny", "l1", image_size=32)
    obs = example_observations(policy)
    path = fastpaths.prepare_path(name, policy, obs, generator=_gen)
    actions, _ = path.predict(obs, _gen(0))
    ref = policy.predict(obs, generator=_gen(0)).actions
    assert actions.shape == ref.shape == (policy.config.chunk, 4)
    # l1 is one deterministic pass: even the reduced-precision paths stay within their tolerance here
    assert np.abs(actions - ref).max() <= path.spec.tolerance
    if name == "int8":  # the quantized copy is separate: the original keeps its float weights
        assert any(type(m).__name__ == "Linear" for m in policy.transformer.modules())
    if name == "bf16-weights":  # so is the cast copy
        assert policy.transformer.dtype == torch.float32


def test_failing_path_is_reported_and_the_others_still_run(monkeypatch):
    def broken(policy):
        raise RuntimeError("inductor: no C++ compiler found\nlong traceback ...")

    monkeypatch.setattr(fastpaths, "compiled_copy", broken)
    policy = build_recipe_policy("octo-tiny", "l1", image_size=32)
    record = bench_policy(
        policy, paths=["inference_mode", "compile", "prefix-cache"], runs=2, warmup=0, log=lambda s: None
    )
    compiled = record["paths"]["compile"]
    assert compiled["status"] == "error"
    assert compiled["error"] == "RuntimeError: inductor: no C++ compiler found"
    assert record["paths"]["prefix-cache"]["status"] == "ok"
    assert record["paths"]["prefix-cache"]["equal"] is True
    assert record["breakdown_ms"]["matches_predict"] is True


@pytest.mark.slow
def test_compile_path_matches_the_plain_path():
    policy = build_recipe_policy("octo-tiny", "flow", image_size=32)
    obs = example_observations(policy)
    path = fastpaths.prepare_path("compile", policy, obs, generator=_gen)
    actions, _ = path.predict(obs, _gen(0))
    assert np.abs(actions - policy.predict(obs, generator=_gen(0)).actions).max() <= path.spec.tolerance
