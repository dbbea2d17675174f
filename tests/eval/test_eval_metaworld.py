"""The scripted expert on the real Meta-World env (1 episode of reach-v3), through `vlaforge eval`'s path."""

from __future__ import annotations

import json

import pytest

from tests.extras import require
from vlaforge.eval import ExpertPolicy, evaluate


@pytest.mark.slow
def test_expert_solves_reach_on_the_eval_split(tmp_path):
    require("metaworld", "sim")
    require("vlaforge.envs", "sim")
    report = evaluate(
        ExpertPolicy,
        ["reach-v3"],
        episodes=1,
        instructions={"reach-v3": "touch the goal"},
        out_dir=tmp_path,
        progress=False,
    )
    task = report.tasks[0]
    assert (task.successes, task.episodes) == (1, 1)
    assert 0 < task.mean_length < 500 and task.instruction == "touch the goal"
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["config"]["policy_spec"]["fps"] == pytest.approx(80.0)
    assert data["latency"]["env_fps"] == pytest.approx(80.0)
    assert (tmp_path / "videos" / "reach-v3_seed0_success.mp4").stat().st_size > 10_000


@pytest.mark.slow
def test_short_task_names_resolve_to_full_names(tmp_path):
    """`evaluate(policy, ["reach"])` with the default env factory: the report uses "reach-v3", and an
    instruction given under the short name applies."""
    require("metaworld", "sim")
    report = evaluate(
        ExpertPolicy,
        ["reach"],
        episodes=1,
        instructions={"reach": "touch it"},
        progress=False,
        videos_per_task=0,
    )
    assert [t.task for t in report.tasks] == ["reach-v3"]
    assert report.tasks[0].instruction == "touch it" and report.tasks[0].successes == 1
