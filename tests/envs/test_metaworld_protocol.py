"""LeRobot's Meta-World protocol: difficulty groups, protocol table, seeded layouts, the corner2 camera,
step limit and instruction, record checks. The env tests replay LeRobot's own call sequence
(src/lerobot/envs/metaworld.py `_ensure_env` + `reset`) on a raw Meta-World env and compare."""

from __future__ import annotations

import numpy as np
import pytest

from tests.extras import require
from vlaforge.envs.protocol import LEROBOT_INSTRUCTIONS, PROTOCOLS, get_protocol
from vlaforge.envs.tasks import DIFFICULTY_GROUPS, MT50, difficulty_of, resolve_tasks


def test_difficulty_groups_partition_mt50():
    sizes = {group: len(tasks) for group, tasks in DIFFICULTY_GROUPS.items()}
    assert sizes == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    members = [t for tasks in DIFFICULTY_GROUPS.values() for t in tasks]
    assert sorted(members) == sorted(MT50)  # every task in exactly one group
    assert difficulty_of("pick-place") == "hard" and difficulty_of("shelf-place-v3") == "very_hard"
    assert resolve_tasks("very_hard") == list(DIFFICULTY_GROUPS["very_hard"])
    assert resolve_tasks("hard,reach") == [*DIFFICULTY_GROUPS["hard"], "reach-v3"]


def test_protocol_table_and_errors():
    lerobot = get_protocol("LeRobot")
    assert (lerobot.cameras, lerobot.image_size, lerobot.episodes, lerobot.seed0) == (
        ("corner2",),
        (480, 480),
        10,
        1000,
    )
    assert not lerobot.splits and PROTOCOLS["vlaforge"].splits
    assert lerobot.instruction("push") == "Push the puck to a goal"
    assert PROTOCOLS["vlaforge"].instruction("push") is None  # ours: a phrasing per seed
    assert set(LEROBOT_INSTRUCTIONS) == set(MT50) and all(LEROBOT_INSTRUCTIONS.values())
    with pytest.raises(ValueError, match="unknown protocol 'openpi'; choose one of: vlaforge, lerobot"):
        get_protocol("openpi")
    with pytest.raises(ValueError, match="observes camera corner2 only; the policy reads corner, gripper"):
        lerobot.check_cameras(("corner", "gripper"))
    lerobot.check_cameras(["corner2"])
    PROTOCOLS["vlaforge"].check_cameras(("gripper",))  # ours: any camera


def test_record_config_follows_the_protocol():
    from vlaforge.envs.record import RecordConfig

    config = RecordConfig(tasks=("reach",), episodes_per_task=5, protocol="lerobot")
    assert config.cameras == ("corner2",) and config.protocol == "lerobot"
    with pytest.raises(ValueError, match="observes camera corner2 only"):
        RecordConfig(tasks=("reach",), episodes_per_task=5, protocol="lerobot", cameras=("corner",))
    with pytest.raises(ValueError, match=r"seeds 990..1004 overlap the evaluation seeds .* \(1000..1049\)"):
        RecordConfig(tasks=("reach",), episodes_per_task=5, protocol="lerobot", seed=990)
    with pytest.raises(ValueError, match="split does not apply"):
        RecordConfig(tasks=("reach",), episodes_per_task=5, protocol="lerobot", split="eval")
    with pytest.raises(ValueError, match="unknown protocol"):
        RecordConfig(tasks=("reach",), episodes_per_task=5, protocol="nope")


# ------------------------------------------------------------------------------------- simulator


def _lerobot_env(task: str):
    """A raw Meta-World env set up as LeRobot's MetaworldEnv._ensure_env does."""
    import metaworld

    mt1 = metaworld.MT1(task, seed=42)
    env = mt1.train_classes[task]()
    env.set_task(mt1.train_tasks[0])
    env.model.cam_pos[2] = [0.75, 0.075, 0.7]  # LeRobot moves camera 2 (corner2)
    env.reset()
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    return env


def _lerobot_reset(env, seed: int) -> np.ndarray:
    env.seed(seed)  # LeRobot's MetaworldEnv.reset(seed): self._env.seed(seed); self._env.reset(seed=seed)
    obs, _ = env.reset(seed=seed)
    return np.asarray(obs)


@pytest.fixture(scope="module")
def push_lerobot():
    require("metaworld", "sim")
    from vlaforge.envs.metaworld_env import make_env

    env = make_env("push", protocol="lerobot", image_size=64)
    yield env
    env.close()


def test_seeds_draw_the_layouts_as_lerobot_does(push_lerobot):
    env = push_lerobot
    reference = _lerobot_env("push-v3")
    try:
        for seed in (1000, 1001, 7):
            obs = env.reset(seed)
            np.testing.assert_array_equal(env.privileged_state, _lerobot_reset(reference, seed))
            np.testing.assert_array_equal(obs.state, env.privileged_state[:4].astype(np.float32))
            assert env.config_id == seed
        env.reset(1000)
        first = env.config_fingerprint
        env.reset(1001)
        assert env.config_fingerprint != first  # each seed its own layout
        env.reset(1000)
        assert env.config_fingerprint == first  # and the same one again
    finally:
        reference.close()


def test_camera_instruction_and_step_limit_are_lerobots(push_lerobot):
    from vlaforge.envs.render import CameraDef, CameraRenderer

    env = push_lerobot
    assert env.cameras == {"corner2": (64, 64)} and env.protocol == "lerobot"
    assert env.max_steps == 500 and env.fps == pytest.approx(80.0)  # LeRobot: _max_episode_steps = 500
    obs = env.reset(1000)
    assert obs.instruction == "Push the puck to a goal" == env.instruction
    # our corner2 (MuJoCo corner4, turned 180°) is LeRobot's moved corner2, pixel for pixel
    reference = _lerobot_env("push-v3")
    try:
        _lerobot_reset(reference, 1000)
        moved = CameraRenderer(
            reference.model, {"c": (64, 64)}, camera_defs={"c": CameraDef("corner2", True, "")}
        )
        try:
            np.testing.assert_array_equal(obs.images["corner2"], moved.render(reference.data, "c"))
        finally:
            moved.close()
    finally:
        reference.close()
    from tests.envs.test_metaworld_env import _table_is_at_bottom

    assert _table_is_at_bottom(obs.images["corner2"])  # upright, as LeRobot's flip leaves it


def test_expert_episode_ends_at_first_success_on_the_protocol():
    require("metaworld", "sim")
    from vlaforge.eval.expert import ExpertPolicy
    from vlaforge.eval.rollout import evaluate

    report = evaluate(
        ExpertPolicy(cameras=("corner2",), image_size=(32, 32)),
        ["reach"],
        episodes=2,
        seed0=1000,
        videos_per_task=0,
        progress=False,
        protocol="lerobot",
    )
    (task,) = report.tasks
    assert task.successes == 2 and task.seeds == [1000, 1001]
    assert all(e.length < 500 for e in report.episodes)  # stopped at the first success
    assert task.instruction == "Reach a goal position" and report.config["protocol"] == "lerobot"


@pytest.mark.slow
@pytest.mark.timeout(900)  # 50 Meta-World models (~1 min unloaded)
def test_lerobots_moved_corner2_is_corner4_in_every_mt50_model():
    """Camera 2 is corner2 and, once moved, corner4's pose in every task's model (all include xyz_base.xml).
    (That every task builds and resets on the protocol is what benchmarks/bench_metaworld_experts.py runs.)"""
    require("metaworld", "sim")
    import metaworld.env_dict
    import mujoco

    for task in MT50:
        raw = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
        m = raw.model
        corner4 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "corner4")
        assert mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, 2) == "corner2", task
        np.testing.assert_allclose(m.cam_pos[corner4], [0.75, 0.075, 0.7])
        np.testing.assert_allclose(m.cam_quat[corner4], m.cam_quat[2])
        assert m.cam_fovy[corner4] == m.cam_fovy[2]
        raw.close()


@pytest.mark.slow
@pytest.mark.timeout(900)  # gymnasium's first render builds its own GL context (slow on llvmpipe)
def test_corner2_matches_lerobots_gymnasium_render_path():
    """LeRobot renders through gymnasium (480x480, its default lighting) and flips both axes; ours is
    the same view (shading differs: no shadows or multisampling), not its mirror image."""
    require("metaworld", "sim")
    import metaworld

    from vlaforge.envs.metaworld_env import make_env

    mt1 = metaworld.MT1("push-v3", seed=42)
    gym_env = mt1.train_classes["push-v3"](render_mode="rgb_array", camera_name="corner2")
    gym_env.set_task(mt1.train_tasks[0])
    gym_env.model.cam_pos[2] = [0.75, 0.075, 0.7]
    gym_env.reset()
    gym_env._freeze_rand_vec, gym_env.seeded_rand_vec = False, True
    _lerobot_reset(gym_env, 1000)
    theirs = np.flip(gym_env.render(), (0, 1)).astype(np.int32)
    gym_env.close()
    env = make_env("push", protocol="lerobot")  # 480x480
    ours = env.reset(1000).images["corner2"].astype(np.int32)
    env.close()
    same = np.abs(ours - theirs).mean()
    mirrored = np.abs(ours[::-1, ::-1] - theirs).mean()
    assert same < 15 and mirrored > 2 * same, (same, mirrored)


def test_in_training_evaluation_takes_the_protocol_on_validation_seeds():
    from vlaforge.envs.protocol import LEROBOT_EVAL_SEEDS
    from vlaforge.train.config import TrainConfig

    lerobot = get_protocol("lerobot")
    assert lerobot.validation_seed0 >= LEROBOT_EVAL_SEEDS.stop  # never the test seeds
    assert PROTOCOLS["vlaforge"].validation_seed0 == 0  # ours: unchanged (the eval split's seeds)
    assert TrainConfig(eval_every=10, eval_tasks="mt50", eval_protocol="lerobot").eval_protocol == "lerobot"
    with pytest.raises(ValueError, match="TrainConfig.eval_protocol='nope': unknown protocol"):
        TrainConfig(eval_protocol="nope")
