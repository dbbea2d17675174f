"""evaluate with 2 worker processes gives the same episodes as in-process evaluation."""

from __future__ import annotations

from eval_fakes import ConstantPolicy, make_fake_env

from vlaforge.eval.rollout import EpisodeJob, _batches, evaluate


def test_batches_group_episodes_by_task():
    jobs = [EpisodeJob(t, s, False) for t in ("a", "b", "c") for s in range(4)]
    assert [[(j.task, j.seed) for j in b] for b in _batches(jobs, 2)] == [
        [("a", s) for s in range(4)],
        [("b", s) for s in range(4)],
        [("c", s) for s in range(4)],
    ]
    # fewer tasks than workers: each task is split so every worker has work
    one = [EpisodeJob("a", s, False) for s in range(5)]
    assert [len(b) for b in _batches(one, 2)] == [3, 2]


def test_two_workers_match_one(tmp_path):
    kwargs = dict(episodes=3, progress=False, env_factory=make_fake_env)
    single = evaluate(ConstantPolicy, ["reach-mixed"], workers=1, **kwargs)
    multi = evaluate(
        ConstantPolicy, ["reach-mixed"], workers=2, out_dir=tmp_path, videos_per_task=1, **kwargs
    )
    key = [(e.task, e.seed, e.success, e.length) for e in single.episodes]
    assert [(e.task, e.seed, e.success, e.length) for e in multi.episodes] == key
    assert multi.tasks[0].successes == 2 and multi.config["policy_spec"]["chunk"] == 4
    assert (tmp_path / "videos" / "reach-mixed_seed0_success.mp4").exists()
