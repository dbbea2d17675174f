"""LiberoEnv: names, LeRobot/openpi layout, official and sampled layouts, lazy frames, bad input.

The fast suite builds one LIBERO environment (module fixture, ~3 s); the comparison with robosuite's
own renderer builds a second one and is marked slow.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.extras import require

require("libero", "libero")

from vlaforge.envs import family_of, make_env, resolve_tasks  # noqa: E402
from vlaforge.envs.libero.env import LazyFrames, LiberoEnv, quat_to_axis_angle  # noqa: E402
from vlaforge.envs.libero.suites import MAX_STEPS, get_task, load_init_states, suite_tasks  # noqa: E402
from vlaforge.types import Env, Observation  # noqa: E402

TASK = "libero_goal/put_the_bowl_on_the_plate"


@pytest.fixture(scope="module")
def env():
    env = LiberoEnv(TASK, split="eval", image_size=(64, 64))
    yield env
    env.close()


def test_suites_and_task_names():
    goal = resolve_tasks("libero_goal")
    assert len(goal) == 10 and goal[8] == TASK
    assert resolve_tasks("libero_goal/8") == [TASK] == resolve_tasks("libero_goal:8")
    assert get_task(TASK).language == "put the bowl on the plate"
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
        assert len(suite_tasks(suite)) == 10
    assert len(load_init_states(get_task(TASK))) == 50
    with pytest.raises(ValueError, match="libero_spatial, libero_object, libero_goal"):
        resolve_tasks("libero_nope")
    with pytest.raises(ValueError, match="put_the_bowl_on_the_plate"):  # the error lists the tasks
        resolve_tasks("libero_goal/open_the_fridge")
    with pytest.raises(ValueError, match="has 10 tasks"):
        get_task("libero_goal/12")
    with pytest.raises(ValueError, match="tasks mix simulators"):
        from vlaforge.envs.record import RecordConfig

        RecordConfig(tasks=("reach-v3", TASK), episodes_per_task=1)


def test_layout_matches_lerobot_and_openpi(env):
    assert isinstance(env, Env)
    family = family_of(TASK)
    assert family.default_cameras == ("image", "wrist_image") and family.robot_type == "panda"
    assert (env.state_dim, env.action_dim, env.fps, env.max_steps) == (8, 7, 20.0, MAX_STEPS["libero_goal"])
    obs = env.reset(seed=3)
    assert isinstance(obs, Observation) and obs.instruction == "put the bowl on the plate"
    assert set(obs.images) == {"image", "wrist_image"}
    for image in obs.images.values():
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 10
    raw = env.raw_observation
    expected = np.concatenate([raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]),
                               raw["robot0_gripper_qpos"]])  # fmt: skip
    np.testing.assert_allclose(obs.state, expected, rtol=1e-6)
    assert obs.state.shape == (8,) and obs.state.dtype == np.float32
    # the gripper points down at the start: axis-angle of a half turn about ~x
    assert abs(np.linalg.norm(obs.state[3:6]) - np.pi) < 0.2
    # image = robosuite's raw (bottom-row-first) frame turned 180 degrees: the robot base is at the top
    front = obs.images["image"].astype(np.float32)
    assert front[:16].std() != pytest.approx(front[-16:].std())


def test_official_states_and_reproducible_episodes(env):
    states = load_init_states(get_task(TASK))

    def run() -> tuple[np.ndarray, np.ndarray]:
        obs = env.reset(seed=53)  # 53 % 50 = official state 3
        start = env.sim.data.qpos.copy()
        for t in range(4):
            obs, _, _, info = env.step(np.array([0.4, -0.2, 0.1, 0, 0, 0.1, -1.0 if t < 2 else 1.0]))
        return start, np.concatenate([env.sim.data.qpos, obs.images["image"].ravel()])

    env.reset(seed=0)  # a different episode first: nothing may carry over (e.g. the gripper command)
    env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    a_start, a_end = run()
    b_start, b_end = run()
    assert env.config_id == 3
    np.testing.assert_array_equal(a_end, b_end)
    # the settling steps move the objects a little, the robot hardly at all
    assert np.abs(a_start[:7] - states[3][1:8]).max() < 0.05


def test_lazy_frames_render_the_state_they_belong_to(env):
    obs0 = env.reset(seed=1)
    assert isinstance(obs0.images, LazyFrames)
    later = [env.step(np.array([0.6, 0, 0, 0, 0, 0, -1.0]))[0] for _ in range(3)]
    old = obs0.images["wrist_image"]  # read after the env moved on
    env.eager_render = True
    try:
        eager = env.reset(seed=1).images["wrist_image"]
    finally:
        env.eager_render = False
    np.testing.assert_array_equal(old, eager)
    assert not np.array_equal(later[-1].images["wrist_image"], eager)  # the arm moved


def test_bad_input_is_refused(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected shape \(7,\)"):
        env.step(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="do not exist in LIBERO"):
        LiberoEnv(TASK, cameras=("corner",))
    with pytest.raises(ValueError, match="split"):
        LiberoEnv(TASK, split="test")


def test_sampled_layouts_are_seeded_and_not_official(env):
    env.split = "train"  # the same env: the fast suite builds one LIBERO scene
    try:
        env.reset(seed=11)
        a = env.sim.data.qpos.copy()
        env.reset(seed=12)
        b = env.sim.data.qpos.copy()
        env.reset(seed=11)
        np.testing.assert_array_equal(a, env.sim.data.qpos)
        assert np.abs(a - b).max() > 1e-3
        official = load_init_states(get_task(TASK))[:, 1 + 9 : 1 + len(a)]
        assert np.abs(official - a[9:]).max(axis=1).min() > 1e-3  # no official state reproduced
        assert env.config_id == 11
    finally:
        env.split = "eval"


@pytest.mark.slow
def test_frames_match_robosuites_renderer_turned_180_degrees():
    """Our renderer (full meshes) vs robosuite's OffScreenRenderEnv on the same state: the same picture
    once robosuite's raw frame is turned 180 degrees (as openpi and LeRobot do), not in any other flip."""
    import contextlib
    import io

    from libero.libero.envs import OffScreenRenderEnv

    spec = get_task(TASK)
    ours = make_env(TASK, split="eval", image_size=64, mesh_cells=None)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = OffScreenRenderEnv(bddl_file_name=spec.bddl_file, camera_heights=64, camera_widths=64)
        theirs.seed(0)
        theirs.reset()
    try:
        ours.reset(seed=0)
        raw = theirs.set_init_state(ours.sim.get_state().flatten())
        for name, key in (("image", "agentview_image"), ("wrist_image", "robot0_eye_in_hand_image")):
            mine = ours.render()[name].astype(np.float32)
            flips = {
                "rot180": raw[key][::-1, ::-1],
                "raw": raw[key],
                "flipud": raw[key][::-1],
                "fliplr": raw[key][:, ::-1],
            }
            errors = {k: float(np.abs(mine - v.astype(np.float32)).mean()) for k, v in flips.items()}
            assert errors["rot180"] < 6.0, errors
            assert errors["rot180"] < 0.5 * min(v for k, v in errors.items() if k != "rot180"), errors
    finally:
        ours.close()
        theirs.close()


def test_cli_lists_suites_and_tasks(capsys):
    from vlaforge.cli import main

    assert main(["libero", "list", "libero_goal_lan"]) == 0
    out = capsys.readouterr().out
    assert "libero_goal_lan/turn_on_the_stove" in out and '"switch on the stove"' in out  # the paraphrase
    assert main(["libero", "list", "libero_nope"]) == 1
    assert "unknown LIBERO suite" in capsys.readouterr().err


def test_watched_goals_report_other_tasks(env):
    others = [t for t in resolve_tasks("libero_goal") if t != TASK]
    watching = env._watched_goals(others)
    assert set(watching) == set(others)
    assert watching["libero_goal/turn_on_the_stove"] == [["turnon", "flat_stove_1"]]
    # A goal whose objects are not in this scene (LIBERO-Object's groceries) cannot be done here: not watched.
    soup = "libero_object/pick_up_the_alphabet_soup_and_place_it_in_the_basket"
    assert soup not in env._watched_goals([soup, *others]) and set(others) <= set(
        env._watched_goals([soup, *others])
    )
    saved = env._watched
    env._watched = watching
    try:
        env.reset(seed=0)
        env.step(np.zeros(7))
        assert env.episode_outcomes() == {"goals_reached": [], "goals_watched": sorted(others)}
    finally:
        env._watched = saved
    assert env.episode_outcomes() is None


def test_twin_goals_swap_one_object_for_another_of_its_kind():
    """LIBERO-Spatial: the goal "bowl 1 on the plate" reached with bowl 2 is the spatial-language mistake."""
    scene = SimpleNamespace(
        task="libero_spatial/x",
        problem=SimpleNamespace(
            objects_dict=dict.fromkeys(["akita_black_bowl_1", "akita_black_bowl_2", "plate_1"])
        ),
    )
    goal = [["on", "akita_black_bowl_1", "plate_1"]]
    assert LiberoEnv._twin_goals(scene, goal) == {
        "libero_spatial/x:akita_black_bowl_1->akita_black_bowl_2": [["on", "akita_black_bowl_2", "plate_1"]]
    }
    assert (
        LiberoEnv._twin_goals(scene, [["open", "wooden_cabinet_1_top_region"]]) == {}
    )  # fixtures have no twins


def test_fast_physics_follows_robosuites_step(env):
    """`physics="fast"` drops robosuite's redundant forward pass per substep and gives the controller
    only the forward stages it reads: the same trajectory to the constraint solver's tolerance (not
    bit for bit: the solver's warm start differs) over 120 steps of random actions with gripper
    changes."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (120, 7))
    actions[:, 6] = np.sign(actions[:, 6])
    ends = {}
    saved = env.physics
    try:
        for physics in ("robosuite", "fast"):
            env.physics = physics
            env.reset(seed=2)
            for a in actions:
                obs, *_ = env.step(a)
            ends[physics] = (env.sim.data.qpos.copy(), obs.state)
    finally:
        env.physics = saved
    assert np.abs(ends["fast"][0] - ends["robosuite"][0]).max() < 1e-8
    np.testing.assert_allclose(ends["fast"][1], ends["robosuite"][1], atol=1e-6)


def test_the_controllers_forward_computes_what_mj_forward_does_for_what_it_reads(env):
    """`physics="fast"` gives robosuite's controller kinematics, comPos, crb, comVel and rne instead of a
    full `mj_forward`: the fields the controller reads must be bit-identical."""
    import mujoco

    env.reset(seed=1)
    for a in np.random.default_rng(3).uniform(-1, 1, (6, 7)):
        env.step(a)
    model, live = env.sim.model._model, env.sim.data._data
    full = mujoco.MjData(model)
    for field in ("qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "qacc_warmstart"):
        getattr(full, field)[:] = getattr(live, field)
    full.time = live.time
    mujoco.mj_forward(model, full)
    env._controller_forward()
    for field in ("site_xpos", "site_xmat", "xpos", "xmat", "qM", "qfrc_bias", "cdof", "subtree_com", "cvel"):
        np.testing.assert_array_equal(getattr(live, field), getattr(full, field), err_msg=field)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "gripper0_grip_site")
    assert site >= 0
    jac = [np.zeros((3, model.nv)) for _ in range(4)]
    mujoco.mj_jacSite(model, live, jac[0], jac[1], site)
    mujoco.mj_jacSite(model, full, jac[2], jac[3], site)
    np.testing.assert_array_equal(jac[0], jac[2])
    np.testing.assert_array_equal(jac[1], jac[3])


@pytest.mark.slow
def test_sampled_layouts_keep_objects_on_fixtures():
    """A bowl that starts on the cabinet (LIBERO-Spatial) rests there in sampled layouts too; LIBERO's
    own soft reset drops it from a metre above (the fixture's offset counted twice)."""
    import mujoco

    with LiberoEnv("libero_spatial/3", split="train", cameras=("image",), image_size=32) as env:
        env.render_images = False
        model, data = env.sim.model._model, env.sim.data._data
        top = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "wooden_cabinet_1_top_side")
        bowl = model.jnt_qposadr[
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "akita_black_bowl_2_joint0")
        ]
        for seed in (0, 1):
            env.reset(seed=seed)
            assert abs(data.qpos[bowl + 2] - data.site_xpos[top][2]) < 0.02  # on the cabinet, not fallen
            assert np.abs(data.qvel[9:]).max() < 0.05  # every object at rest after settling
            assert env._layout_is_at_rest()
