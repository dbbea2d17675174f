"""benchmarks/compare_evals.py: the paired comparison of two eval reports of the same seeds."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_evals.py"


def _module():
    spec = importlib.util.spec_from_file_location("compare_evals", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(path: Path, outcomes: dict[tuple[str, int], bool]) -> Path:
    tasks = sorted({t for t, _ in outcomes})
    per_task = {}
    for t in tasks:
        wins = [ok for (task, _), ok in outcomes.items() if task == t]
        per_task[t] = {"rate": sum(wins) / len(wins)}
    n, s = len(outcomes), sum(outcomes.values())
    report = {
        "overall": {"mean_success": s / n, "successes": s, "episodes": n, "wilson_lo": 0.0, "wilson_hi": 1.0},
        "tasks": per_task,
        "episodes": [{"task": t, "seed": seed, "success": ok} for (t, seed), ok in outcomes.items()],
        "latency": {"median_ms": 1.0},
        "config": {"policy": str(path)},
    }
    path.mkdir(parents=True)
    (path / "eval.json").write_text(json.dumps(report))
    return path


def test_counts_paired_outcomes(tmp_path, capsys):
    a = {("reach", 0): True, ("reach", 1): False, ("push", 0): True, ("push", 1): True}
    b = {("reach", 0): True, ("reach", 1): True, ("push", 0): False, ("push", 1): True}
    mod = _module()
    out = tmp_path / "cmp.json"
    rc = mod.main([str(_report(tmp_path / "a", a)), str(_report(tmp_path / "b", b)), "--labels", "fp32,bf16",
                   "--out", str(out)])  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["same_outcome_episodes"] == 2 and result["episodes"] == 4
    assert result["only_first_succeeded"] == 1 and result["only_second_succeeded"] == 1
    assert result["per_task"]["reach"] == {"fp32": 0.5, "bf16": 1.0}
    assert "same outcome in 2 of 4 episodes" in capsys.readouterr().out


def test_refuses_reports_of_different_seeds(tmp_path):
    mod = _module()
    a = _report(tmp_path / "a", {("reach", 0): True})
    b = _report(tmp_path / "b", {("reach", 1): True})
    with pytest.raises(SystemExit, match="different"):
        mod.main([str(a), str(b)])
    with pytest.raises(SystemExit, match="no such eval report"):
        mod.main([str(a), str(tmp_path / "missing")])
