"""SafetyFilter on the evaluation path: every executed action filtered, interventions in eval.json / eval.md."""

from __future__ import annotations

import json

import pytest
from eval_fakes import ConstantPolicy, make_fake_env
from test_eval_commands import fake_envs  # noqa: F401  (fixture)

from vlaforge.cli import main
from vlaforge.eval.rollout import evaluate
from vlaforge.runtime.safety import SafetyLimits

# ConstantPolicy asks for +0.1 per step; the limits allow 0.04, so reaching 0.3 takes 7 steps instead of 3.
SLOW = {"action_low": [-0.04], "action_high": [0.04]}


def test_evaluate_filters_every_action_and_counts_interventions_per_episode_and_task(tmp_path):
    report = evaluate(
        ConstantPolicy(history=1, chunk=4),
        ["reach-easy"],
        episodes=2,
        safety=SafetyLimits(**SLOW),
        out_dir=tmp_path,
        videos_per_task=0,
        progress=False,
        env_factory=make_fake_env,
    )
    assert [(e.success, e.length) for e in report.episodes] == [(True, 7), (True, 7)]  # the limit acted
    data = json.loads((tmp_path / "eval.json").read_text())
    for ep in data["episodes"]:
        assert ep["safety"]["steps_changed"] == 7 and ep["safety"]["action_bounds"] == 7
        assert ep["safety"]["velocity"] == 0
    task = data["tasks"]["reach-easy"]["safety"]
    assert (task["steps_changed"], task["steps"], task["episodes_changed"], task["episodes"]) == (
        14,
        14,
        2,
        2,
    )
    assert data["safety"]["action_bounds"] == 14
    assert data["config"]["safety"]["action_high"] == [0.04]
    md = (tmp_path / "eval.md").read_text()
    assert "## Safety filter" in md and "| reach-easy | 14/14 | 2/2 | 14 |" in md


def test_without_limits_nothing_is_filtered_or_reported(tmp_path):
    report = evaluate(
        ConstantPolicy(history=1, chunk=4), ["reach-easy"], episodes=1, out_dir=tmp_path, videos_per_task=0,
        progress=False, env_factory=make_fake_env,
    )  # fmt: skip
    assert report.episodes[0].length == 3 and report.safety() is None
    data = json.loads((tmp_path / "eval.json").read_text())
    assert "safety" not in data and "safety" not in data["episodes"][0] and data["config"]["safety"] is None
    assert "Safety filter" not in (tmp_path / "eval.md").read_text()


def test_generous_limits_report_zero_interventions(tmp_path):
    evaluate(
        ConstantPolicy(history=1, chunk=4), ["reach-easy"], episodes=1, out_dir=tmp_path, videos_per_task=0,
        progress=False, env_factory=make_fake_env, safety=SafetyLimits(action_low=[-1.0], action_high=[1.0]),
    )  # fmt: skip
    assert "No interventions in 3 filtered steps (1 episodes)." in (tmp_path / "eval.md").read_text()


def test_cli_safety_option_reads_a_limits_file_and_names_bad_files(fake_envs, tmp_path):  # noqa: F811
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps(SLOW))
    out = tmp_path / "out"
    rc = main(["eval", "--expert", "--tasks", "reach-easy", "--episodes", "1", "--videos", "0",
               "--out", str(out), "--no-progress", "--safety", str(limits)])  # fmt: skip
    assert rc == 0
    assert json.loads((out / "eval.json").read_text())["tasks"]["reach-easy"]["safety"]["action_bounds"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"action_low": [0.0], "max_speed": 1}))
    with pytest.raises(SystemExit, match=r"bad.json.*max_speed"):
        main(["eval", "--expert", "--tasks", "reach-easy", "--episodes", "1", "--safety", str(bad)])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", "--expert", "--tasks", "reach-easy", "--safety", str(tmp_path / "nope.json")])
    with pytest.raises(SystemExit, match="--rtc do not apply to --expert"):
        main(["eval", "--expert", "--tasks", "reach-easy", "--rtc"])
