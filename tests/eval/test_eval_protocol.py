"""Evaluation under a Meta-World protocol: difficulty-group means in the report, and one-line errors
for an unknown protocol, options it does not take, and a policy whose camera is not the protocol's."""

from __future__ import annotations

import pytest
from eval_fakes import ConstantPolicy

import vlaforge.inference.load
from tests.extras import require
from vlaforge.cli import main
from vlaforge.envs.tasks import DIFFICULTY_GROUPS, MT10, MT50
from vlaforge.eval.results import EpisodeResult, EvalReport, markdown_table


def _report(tasks, successes_of) -> EvalReport:
    episodes = [
        EpisodeResult(task=t, seed=1000 + k, success=k < successes_of(t), length=10, instruction="x")
        for t in tasks
        for k in range(10)
    ]
    return EvalReport.from_episodes(list(tasks), episodes, {"protocol": "lerobot", "seeds": [1000, 1009]})


def test_group_means_in_report_and_table():
    # easy tasks 10/10, medium 5/10, hard 2/10, very hard 0/10 except shelf-place 5/10
    rates = {"easy": 10, "medium": 5, "hard": 2, "very_hard": 0}
    group_of = {t: g for g, ts in DIFFICULTY_GROUPS.items() for t in ts}
    report = _report(MT50, lambda t: 5 if t == "shelf-place-v3" else rates[group_of[t]])
    groups = report.groups()
    assert groups is not None
    assert groups["easy"] == pytest.approx(
        {
            "tasks": 28,
            "successes": 280,
            "episodes": 280,
            "rate": 1.0,
            "wilson_lo": groups["easy"]["wilson_lo"],
            "wilson_hi": 1.0,
        }  # fmt: skip
    )
    assert groups["medium"]["rate"] == pytest.approx(0.5) and groups["hard"]["rate"] == pytest.approx(0.2)
    assert groups["very_hard"]["rate"] == pytest.approx(0.1)  # 5 / 50 episodes
    assert groups["mean_of_groups"] == pytest.approx((1.0 + 0.5 + 0.2 + 0.1) / 4)  # the papers' average
    assert report.overall()["mean_success"] == pytest.approx((280 + 55 + 12 + 5) / 500)  # LeRobot's overall
    assert report.to_json()["groups"] == groups
    table = markdown_table(report)
    assert "protocol `lerobot`, " in table and "## Difficulty groups" in table
    assert (
        "| hard | 6 | 12/60 | 20.0% |" in table and "| **mean of the 4 groups** | | | **45.0%** | |" in table
    )


def test_groups_only_for_whole_groups():
    mt10 = _report(MT10, lambda t: 10)
    assert mt10.groups() is None and "Difficulty groups" not in markdown_table(mt10)  # MT10 table unchanged
    hard = _report(DIFFICULTY_GROUPS["hard"], lambda t: 3).groups()
    assert hard is not None and list(hard) == ["hard"]  # no mean of groups without all four


def test_cli_rejects_bad_protocol_input():
    with pytest.raises(
        SystemExit, match="--protocol: unknown protocol 'openpi'; choose one of: vlaforge, lerobot"
    ):
        main(["eval", "--expert", "--protocol", "openpi"])
    with pytest.raises(SystemExit, match="--split does not apply to --protocol lerobot"):
        main(["eval", "--expert", "--protocol", "lerobot", "--split", "train"])
    with pytest.raises(SystemExit, match="--protocol lerobot is Meta-World's; --suite is LIBERO's"):
        main(["eval", "--expert", "--protocol", "lerobot", "--suite", "libero_goal"])


def test_cli_refuses_a_policy_with_other_cameras(tmp_path, monkeypatch):
    require("metaworld", "sim")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(vlaforge.inference.load, "load_policy", lambda path: ConstantPolicy(history=1))
    with pytest.raises(SystemExit) as err:
        main(["eval", str(run_dir), "--protocol", "lerobot", "--tasks", "reach", "--episodes", "1",
              "--videos", "0", "--no-progress"])  # fmt: skip
    message = str(err.value)
    assert "\n" not in message and "observes camera corner2 only; the policy reads corner, gripper" in message


def test_the_expert_is_evaluated_without_rendering_unless_filmed(tmp_path):
    from eval_fakes import ReachEnv, make_fake_env

    from vlaforge.eval.expert import ExpertPolicy
    from vlaforge.eval.rollout import evaluate

    rendered: list[bool] = []

    class WatchedEnv(ReachEnv):
        render_images = True  # the Meta-World / LIBERO switch (images off: physics only)

        def reset(self, seed=None):
            rendered.append(self.render_images)
            return super().reset(seed)

    def factory(task, **kwargs):
        env = make_fake_env(task, **kwargs)
        env.__class__ = WatchedEnv
        return env

    report = evaluate(ExpertPolicy(action_dim=1), ["reach-easy"], episodes=3, videos_per_task=1,
                      env_factory=factory, out_dir=tmp_path, progress=False)  # fmt: skip
    assert rendered == [True, False, False]  # only the filmed episode renders
    assert report.tasks[0].successes == 3 and len(report.tasks[0].videos) == 1
