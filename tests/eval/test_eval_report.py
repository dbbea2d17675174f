"""evaluate end to end on the fake env: eval.json / eval.md / success.png / mp4 content."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from eval_fakes import ConstantPolicy, expected_length, make_fake_env

from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import wilson_interval
from vlaforge.runtime import ExecutorConfig

TASKS = ["reach-easy", "reach-mixed"]
EPISODES = 5


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    report = evaluate(
        ConstantPolicy(history=2, chunk=4),
        TASKS,
        episodes=EPISODES,
        seed0=0,
        instructions={"reach-mixed": "go to the far mark"},
        executor=ExecutorConfig(mode="receding"),
        videos_per_task=1,
        out_dir=out,
        progress=False,
        env_factory=make_fake_env,
        metadata={"policy": "constant"},
    )
    return out, report


def test_eval_json_matches_what_the_fake_env_must_produce(report_dir):
    out, report = report_dir
    data = json.loads((out / "eval.json").read_text())
    for task in TASKS:
        expect = [expected_length(task, s) for s in range(EPISODES)]
        k = sum(ok for ok, _ in expect)
        t = data["tasks"][task]
        assert (t["successes"], t["episodes"]) == (k, EPISODES)
        assert t["rate"] == pytest.approx(k / EPISODES)
        assert (t["wilson_lo"], t["wilson_hi"]) == pytest.approx(wilson_interval(k, EPISODES))
        assert t["mean_length"] == pytest.approx(np.mean([n for _, n in expect]))
        assert t["median_length"] == pytest.approx(np.median([n for _, n in expect]))
        assert t["seeds"] == list(range(EPISODES))
        assert t["decode_failures"] == 0 and t["predict_calls"] == {"reach-easy": 5, "reach-mixed": 8}[task]
    assert data["tasks"]["reach-easy"]["successes"] == 5 and data["tasks"]["reach-mixed"]["successes"] == 4
    assert data["tasks"]["reach-mixed"]["instruction"] == "go to the far mark"
    assert data["tasks"]["reach-easy"]["instruction"] == "move the gripper to the reach-easy target"
    overall = data["overall"]
    assert (overall["successes"], overall["episodes"]) == (9, 10) and overall["decode_failures"] == 0
    assert overall["mean_success"] == pytest.approx(0.9)
    assert (overall["wilson_lo"], overall["wilson_hi"]) == pytest.approx(wilson_interval(9, 10))
    # whole chunks of 4: an episode of n steps makes ceil(n / 4) calls -> 5 x 1 + (1 + 2 + 2 + 1 + 2)
    lat = data["latency"]
    assert lat["calls"] == 13
    assert lat["actions_per_call"] == pytest.approx((5 * 3 + 3 + 6 + 7 + 3 + 6) / 13)
    assert lat["median_ms"] >= 0 and lat["p90_ms"] >= lat["median_ms"]
    cfg = data["config"]
    assert cfg["policy"] == "constant" and cfg["split"] == "eval" and cfg["seeds"] == [0, 4]
    assert cfg["executor"] == {"mode": "receding", "execute": None, "ensemble_decay": 0.01}
    assert cfg["policy_spec"]["history"] == 2 and cfg["policy_spec"]["chunk"] == 4
    assert len(data["episodes"]) == 10 and data["episodes"][2] == {
        "task": "reach-easy",
        "seed": 2,
        "success": True,
        "length": 3,
        "instruction": "move the gripper to the reach-easy target",
        "predict_calls": 1,
        "decode_failures": 0,
        "video": None,
    }
    assert report.files["json"] == str(out / "eval.json")


def test_eval_md_table(report_dir):
    out, report = report_dir
    md = (out / "eval.md").read_text()
    assert "| reach-easy | 5/5 | 100.0% | 56.6%–100.0% | 3.0 | 3.0 |" in md
    assert "| reach-mixed | 4/5 | 80.0% | 37.6%–96.4% | 5.0 | 6.0 | go to the far mark |" in md
    assert "| **mean** | 9/10 | **90.0%** |" in md
    assert "Policy latency: median" in md
    assert report.to_markdown() == md and report.mean_success == pytest.approx(0.9)


def test_success_chart_is_a_png(report_dir):
    out, _ = report_dir
    data = (out / "success.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_one_video_per_task_h264_with_outcome_banner(report_dir):
    out, report = report_dir
    videos = sorted(p.name for p in (out / "videos").iterdir())
    assert videos == ["reach-easy_seed0_success.mp4", "reach-mixed_seed0_success.mp4"]
    assert report.tasks[0].videos == [str(out / "videos" / "reach-easy_seed0_success.mp4")]
    with av.open(str(out / "videos" / "reach-easy_seed0_success.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(frames) == 3 + 1  # reset frame + 3 steps
    h, w, _ = frames[0].shape
    assert w == 2 * 2 * 32  # two 32-px cameras side by side, upscaled 2x
    bottom = frames[-1][-6:, : w // 4].reshape(-1, 3).mean(axis=0)
    assert bottom[1] > bottom[0] + 40  # the SUCCESS banner is green


def test_failed_episode_video_has_a_red_banner(tmp_path):
    evaluate(
        ConstantPolicy(history=1, chunk=2),
        ["reach-mixed"],
        episodes=1,
        seed0=2,  # target 0.9: fails
        out_dir=tmp_path,
        progress=False,
        env_factory=make_fake_env,
    )
    path = tmp_path / "videos" / "reach-mixed_seed2_fail.mp4"
    with av.open(str(path)) as c:
        last = list(c.decode(video=0))[-1].to_ndarray(format="rgb24")
    bottom = last[-6:, : last.shape[1] // 4].reshape(-1, 3).mean(axis=0)
    assert bottom[0] > bottom[1] + 40


def test_evaluate_validates_arguments():
    with pytest.raises(ValueError, match="no tasks"):
        evaluate(ConstantPolicy(), [], progress=False, env_factory=make_fake_env)
    with pytest.raises(ValueError, match="picklable policy factory"):
        evaluate(ConstantPolicy(), ["reach-easy"], workers=2, progress=False, env_factory=make_fake_env)


def test_decode_failures_are_counted_per_task(tmp_path):
    """Chunks the policy flags ``decode_failed`` are counted per episode, per task and overall."""
    report = evaluate(
        ConstantPolicy(history=2, chunk=4, failing_instructions=("go to the far mark",)),
        TASKS,
        episodes=EPISODES,
        seed0=0,
        instructions={"reach-mixed": "go to the far mark"},
        executor=ExecutorConfig(mode="receding"),
        videos_per_task=0,
        out_dir=tmp_path,
        progress=False,
        env_factory=make_fake_env,
        metadata={"policy": "constant"},
    )
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["tasks"]["reach-easy"]["decode_failures"] == 0
    assert (
        data["tasks"]["reach-mixed"]["decode_failures"] == data["tasks"]["reach-mixed"]["predict_calls"] == 8
    )
    assert data["overall"]["decode_failures"] == 8
    assert [e["decode_failures"] for e in data["episodes"] if e["task"] == "reach-mixed"] == [1, 2, 2, 1, 2]
    assert (
        "**Decode failures**: 8 chunks" in report.to_markdown() and "reach-mixed 8/8" in report.to_markdown()
    )
