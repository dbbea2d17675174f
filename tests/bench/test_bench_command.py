"""`vlaforge bench` end to end at a tiny size: the JSON has the documented keys, the PNG exists."""

import json

import pytest

from vlaforge.cli import main

TOP_KEYS = {
    "schema", "vlaforge", "created", "command", "machine", "device", "threads", "embodiment", "runs",
    "warmup", "steps", "paths", "load_average", "notes", "roofline", "results",
}  # fmt: skip
RESULT_KEYS = {
    "recipe", "checkpoint", "head", "sampler", "head_steps", "model", "params", "flops", "breakdown_ms", "paths",
}  # fmt: skip
PATH_KEYS = {
    "status", "summary", "tolerance", "setup_s", "setup_memory", "median_ms", "p90_ms", "min_ms", "control_hz",
    "speedup", "max_abs_diff", "mean_abs_diff", "equal", "memory", "flops_per_chunk",
}  # fmt: skip


def test_bench_recipe_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        ["bench", "--recipe", "octo-tiny", "--runs", "3", "--warmup", "1", "--image-size", "32",
         "--paths", "inference_mode,prefix-cache", "--out", str(out), "--note", "test run"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    assert TOP_KEYS <= set(report)
    assert report["runs"] == 3 and report["paths"] == ["inference_mode", "prefix-cache"]
    assert "test run" in report["notes"] and report["roofline"] is None
    (result,) = report["results"]
    assert RESULT_KEYS <= set(result)
    assert result["recipe"] == "octo-tiny" and result["head"] == "diffusion" and result["head_steps"] == 20
    assert result["flops"]["per_chunk"] > 0 and result["flops"]["stages_match_predict"] is True
    assert result["breakdown_ms"]["matches_predict"] is True
    for name in ("inference_mode", "prefix-cache"):
        p = result["paths"][name]
        assert PATH_KEYS <= set(p), name
        assert p["median_ms"] > 0 and p["p90_ms"] >= p["median_ms"] and p["equal"] is True
        # control_hz is rounded to 0.1 Hz: with a slow median (a loaded machine) that is more than 1 %
        assert p["control_hz"] == pytest.approx(4 / (p["median_ms"] / 1000), rel=0.01, abs=0.051)
    assert out.with_suffix(".png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| octo-tiny/diffusion | 2.66M | inference_mode |" in printed


def test_bad_options_are_named(tmp_path):
    with pytest.raises(SystemExit, match="octo-huge"):
        main(["bench", "--recipe", "octo-huge", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--paths"):
        main(["bench", "--recipe", "octo-tiny", "--paths", "onnx", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--head and --image-size"):
        main(["bench", "--checkpoint", str(tmp_path), "--head", "flow"])


def test_bench_checkpoint(tmp_path):
    from vlaforge.bench.embodiment import build_recipe_policy

    build_recipe_policy("octo-tiny", "l1", image_size=32).save(tmp_path / "run" / "policy")
    out = tmp_path / "bench.json"
    rc = main(
        ["bench", "--checkpoint", str(tmp_path / "run"), "--runs", "2", "--warmup", "0",
         "--paths", "inference_mode", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["checkpoint"] == str(tmp_path / "run") and result["head"] == "l1"
    assert result["recipe"] == "octo-tiny" and result["sampler"] == "one pass"
    assert result["model"]["cameras"] == {"corner": [32, 32], "gripper": [32, 32]}
