"""rollout: history padding, chunk execution in the loop, success/length, instruction override."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fakes import MAX_STEPS, ConstantPolicy, ReachEnv, expected_length, make_fake_env

from vlaforge.eval.expert import ExpertPolicy
from vlaforge.eval.rollout import EpisodeJob, EpisodeRunner, ObservationHistory, RunSettings, rollout
from vlaforge.runtime import ExecutorConfig
from vlaforge.types import Observation


def test_history_pads_by_repeating_the_first_observation():
    def obs(i: int) -> Observation:
        return Observation(images={}, state=np.array([i], dtype=np.float32), instruction="x")

    h = ObservationHistory(3)
    h.reset(obs(0))
    assert [int(o.state[0]) for o in h.observations()] == [0, 0, 0]
    h.append(obs(1))
    assert [int(o.state[0]) for o in h.observations()] == [0, 0, 1]
    for i in (2, 3):
        h.append(obs(i))
    assert [int(o.state[0]) for o in h.observations()] == [1, 2, 3]


def test_rollout_replans_every_k_steps_with_the_last_t_observations():
    policy = ConstantPolicy(history=3, chunk=4)
    res = rollout(ReachEnv("reach-mixed"), policy, seed=1, executor=ExecutorConfig(execute=2))  # target 0.6
    assert (res.success, res.length) == (True, 6)
    # calls at steps 0, 2, 4; the first history is the reset observation repeated (edge padding)
    assert policy.calls == [[0, 0, 0], [0, 1, 2], [2, 3, 4]]
    assert len(res.latencies_s) == 3 and all(x >= 0 for x in res.latencies_s)
    assert res.instruction == "move the gripper to the reach-mixed target"
    assert res.frames is None
    # each episode gets a seeded generator, so sampling policies are reproducible
    assert policy.generators[0].initial_seed() == 1


def test_rollout_failure_runs_to_max_steps_and_records_frames():
    policy = ConstantPolicy(history=1, chunk=4)
    res = rollout(ReachEnv("reach-mixed"), policy, seed=2, record_video=True)  # target 0.9: unreachable
    assert (res.success, res.length) == (False, MAX_STEPS)
    assert len(policy.calls) == 2  # whole chunks of 4: steps 0 and 4
    assert len(res.frames) == MAX_STEPS + 1  # reset frame + one per step
    assert [int(f["gripper"][0, 0, 0]) for f in res.frames] == list(range(MAX_STEPS + 1))


def test_rollout_refuses_a_step_limit_above_the_envs():
    """The env ends its episode at its own limit: a longer --max-steps would be cut short without a word."""
    with pytest.raises(ValueError, match=f"above the step limit of reach-mixed \\({MAX_STEPS}\\)"):
        rollout(ReachEnv("reach-mixed"), ConstantPolicy(history=1, chunk=4), seed=0, max_steps=MAX_STEPS + 1)


def test_rollout_with_temporal_ensembling_calls_the_policy_every_step():
    policy = ConstantPolicy(history=2, chunk=4)
    res = rollout(ReachEnv("reach-easy"), policy, seed=0, executor=ExecutorConfig(mode="ensemble"))
    assert (res.success, res.length) == (True, 3)
    assert policy.calls == [[0, 0], [0, 1], [1, 2]]


def test_expert_policy_solves_the_fake_env():
    for seed in range(3):
        res = rollout(ReachEnv("reach-mixed"), ExpertPolicy(), seed=seed)
        assert (res.success, res.length) == expected_length("reach-mixed", seed)


def test_instruction_override_reaches_env_and_policy():
    policy = ConstantPolicy()
    settings = RunSettings(
        split="eval",
        executor=ExecutorConfig(),
        max_steps=None,
        instructions={"reach-easy": "touch the red dot"},
        env_factory=make_fake_env,
    )
    runner = EpisodeRunner(policy, settings)
    res = runner.run(EpisodeJob("reach-easy", 0, record_video=False))
    assert res.instruction == "touch the red dot"
    assert set(policy.instructions) == {"touch the red dot"}
    assert runner.env("reach-easy").split == "eval"
    runner.close()


def test_bad_policy_output_and_bad_env_info_fail_loudly():
    class WrongDim(ConstantPolicy):
        def predict(self, observations, **kwargs):
            out = super().predict(observations, **kwargs)
            out.actions = np.zeros((4, 3), dtype=np.float32)
            return out

    with pytest.raises(ValueError, match=r"expected \(H, 1\)"):
        rollout(ReachEnv(), WrongDim(), seed=0)

    class NoSuccess(ReachEnv):
        def step(self, action):
            obs, r, done, _ = super().step(action)
            return obs, r, done, {}

    with pytest.raises(KeyError, match="no 'success' key"):
        rollout(NoSuccess(), ConstantPolicy(), seed=0)
