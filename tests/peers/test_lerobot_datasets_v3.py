"""Datasets both ways with LeRobot 0.6.1's own code (``lerobot.datasets``, the v3.0 format).

* LeRobot's writer (``LeRobotDataset.create`` → ``add_frame`` with the task in the frame → ``save_episode``
  → ``finalize``: v3.0, two cameras as AV1 video encoded by LeRobot, two episodes with different tasks)
  → vlaforge's ``Dataset`` reads every frame: indices, timestamps, task strings, state and action equal
  (and equal to what went into ``add_frame``), both cameras' images equal to what LeRobot's own reader
  decodes (``video_backend="pyav"``, ``return_uint8=True``; vlaforge with ``accurate_color=False``, PyAV's
  own RGB conversion); the statistics vlaforge loads equal LeRobot's ``meta.stats`` (every feature and
  statistic, quantiles included), and the per-episode statistics LeRobot wrote into
  ``meta/episodes/*.parquet``, as vlaforge parses them, aggregated by LeRobot's ``aggregate_stats`` give
  them back (rtol 1e-6).
* vlaforge's writer (``write_synthetic_dataset``: v3.0, h264 and AV1) → LeRobot's ``LeRobotDataset`` opens
  the directory as written (no conversion): its metadata (codec, cameras, frames, tasks, episode lengths and
  tasks) and every frame equal ours (numbers exactly, images exactly); our ``stats.json`` as LeRobot loads
  it; our state/action min, max, mean, std, count equal LeRobot's ``compute_episode_stats`` +
  ``aggregate_stats`` on the frames LeRobot reads (rtol 1e-6). Quantiles differ by method and are not
  compared with LeRobot's: LeRobot estimates each episode's from a histogram and averages them over episodes
  (weighted by length), ours are the exact quantiles of all frames (checked against ``np.quantile``).
* vlaforge's v2.1 export (``vlaforge dataset convert --to v2.1``) → LeRobot 0.6.1's own v2.1 → v3.0
  converter (``lerobot/scripts/convert_dataset_v21_to_v30.py``, offline) → both readers return the original
  dataset's episodes and frames exactly; state/action min, max, mean, std, count as in the original.

LeRobot 0.6.1 declares PyAV ``>=15,<16`` (its ``lerobot.datasets`` uses ``av.option``, which PyAV 19 does
not have), so this environment has PyAV 15.1; the check found vlaforge's reader passing ``threads=`` to
``VideoReformatter.reformat``, an argument PyAV 15 does not have (fixed in
``vlaforge.data.video.RGBConverter``; ``tests/data/test_dataset_pyav_versions.py``).

Runs where LeRobot 0.6.1 and its ``[dataset]`` requirements are installed (``make test-peers-next``:
Python ≥ 3.12; docs/parity.md); skipped elsewhere, LeRobot 0.3.2's environment (``make test-peers``)
included: ``lerobot.datasets.dataset_writer`` exists from LeRobot 0.4 on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.peers.need import need

# lerobot.datasets.dataset_writer exists from LeRobot 0.4 on (v3.0); 0.3.2 (make test-peers) skips here.
need("lerobot.datasets.dataset_writer", "LeRobot 0.6.1 (Python >= 3.12, [dataset] extra)", "test-peers-next")

from tests.peers.lerobot_data import CAMS, FPS, LENGTHS, TASKS, A, S, lerobot_features, synthetic  # noqa: E402
from vlaforge.data import Dataset  # noqa: E402
from vlaforge.data.synthetic import smooth_frames  # noqa: E402
from vlaforge.data.video import keep_thread_scheduling  # noqa: E402
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY  # noqa: E402


def lerobot_dataset(repo_id: str, root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend="pyav", return_uint8=True)


def image_u8(x: torch.Tensor) -> np.ndarray:
    """LeRobot's uint8 (3, H, W) (``return_uint8=True``) -> (H, W, 3)."""
    assert x.dtype == torch.uint8, x.dtype
    return x.permute(1, 2, 0).numpy()


def assert_same_frames(ours: Dataset, theirs) -> dict[str, float]:
    """Every frame of both readers: numbers exactly, images exactly (same PyAV decoding) -> max diffs."""
    assert len(ours) == len(theirs)
    worst = {"images": 0.0, "state/action": 0.0, "timestamp": 0.0}
    for i in range(len(ours)):
        o, t = ours[i], theirs[i]
        for key in ("index", "episode_index", "frame_index", "task_index"):
            assert int(o[key]) == int(t[key]), (i, key)
        worst["timestamp"] = max(worst["timestamp"], abs(float(o["timestamp"]) - float(t["timestamp"])))
        assert o["task"] == t["task"], i
        for key in (STATE_KEY, ACTION_KEY):
            d = float((o[key] - t[key]).abs().max())
            worst["state/action"] = max(worst["state/action"], d)
        for c in CAMS:
            d = np.abs(
                o[IMAGE_PREFIX + c].numpy().astype(int) - image_u8(t[IMAGE_PREFIX + c]).astype(int)
            ).max()
            worst["images"] = max(worst["images"], float(d))
    assert worst == {"images": 0.0, "state/action": 0.0, "timestamp": 0.0}, worst
    return worst


def write_episodes(writer, g: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """LeRobot 0.6.1's recording loop: ``add_frame`` per frame (the task inside the frame), ``save_episode``
    per episode -> what was written, per key."""
    written: dict[str, list[np.ndarray]] = {STATE_KEY: [], ACTION_KEY: []}
    for e, n in enumerate(LENGTHS):
        frames = {c: smooth_frames(n, 32, 32, phase=e + 0.5 * k) for k, c in enumerate(CAMS)}
        for i in range(n):
            frame = {IMAGE_PREFIX + c: frames[c][i] for c in CAMS}
            frame[STATE_KEY] = g.normal(size=S).astype(np.float32)
            frame[ACTION_KEY] = g.normal(size=A).astype(np.float32)
            frame["task"] = TASKS[e]
            for key in (STATE_KEY, ACTION_KEY):
                written[key].append(frame[key])
            writer.add_frame(frame)
        writer.save_episode()
    return written


def assert_stats_equal(ours: dict, theirs: dict, rtol: float, atol: float, what: str) -> float:
    """The same features and statistics on both sides, each equal within rtol/atol -> max abs difference."""
    assert set(ours) == set(theirs), (what, sorted(ours), sorted(theirs))
    worst = 0.0
    for key in theirs:
        assert set(ours[key]) == set(theirs[key]), (what, key, sorted(ours[key]), sorted(theirs[key]))
        for stat in theirs[key]:
            o = np.asarray(ours[key][stat], dtype=np.float64)
            t = np.asarray(theirs[key][stat], dtype=np.float64)
            assert o.size == t.size, (what, key, stat, o.shape, t.shape)
            np.testing.assert_allclose(
                o.reshape(-1), t.reshape(-1), rtol=rtol, atol=atol, err_msg=f"{what} {key} {stat}"
            )
            worst = max(worst, float(np.abs(o.reshape(-1) - t.reshape(-1)).max()))
    return worst


def test_vlaforge_reads_a_v3_dataset_written_by_lerobot(tmp_path):
    from lerobot.datasets.compute_stats import aggregate_stats
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "by-lerobot"
    writer = LeRobotDataset.create(
        "local/by-lerobot", fps=FPS, features=lerobot_features(), root=root, video_backend="pyav"
    )
    g = np.random.default_rng(0)
    with keep_thread_scheduling():  # SVT-AV1 as root leaves the thread SCHED_FIFO (tests/conftest.py)
        written = write_episodes(writer, g)
        writer.finalize()  # 0.6.1: closes the parquet writers (their footers); the dataset is invalid before

    ours = Dataset(root, accurate_color=False)  # PyAV's own RGB conversion, as LeRobot's reader
    theirs = lerobot_dataset("local/by-lerobot", root)
    assert theirs.meta.info["codebase_version"] == "v3.0"
    assert ours.version == "v3.0" and ours.num_episodes == len(LENGTHS) and len(ours) == sum(LENGTHS)
    assert [ep.length for ep in ours.meta.episodes] == list(LENGTHS)
    assert [ep.tasks for ep in ours.meta.episodes] == [[t] for t in TASKS]
    assert {ours.feature_specs[IMAGE_PREFIX + c].dtype for c in CAMS} == {"video"}
    print("LeRobot -> vlaforge, max abs diff:", assert_same_frames(ours, theirs))
    for key in (STATE_KEY, ACTION_KEY):  # what went into add_frame comes out of our reader, bit for bit
        got = np.stack([ours[i][key].numpy() for i in range(len(ours))])
        np.testing.assert_array_equal(got, np.stack(written[key]), err_msg=key)
    # meta/stats.json as each side loads it: every feature (cameras, state, action, indices), every statistic
    d_json = assert_stats_equal(ours.stats, theirs.meta.stats, rtol=1e-6, atol=1e-7, what="stats.json")
    # the per-episode statistics LeRobot wrote into meta/episodes/*.parquet (stats/<key>/<stat> columns, the
    # cameras' (3, 1, 1) arrays included) as our reader parses them, aggregated by LeRobot's own code,
    # give LeRobot's stats.json back
    per_episode = [ep.stats for ep in ours.meta.episodes]
    assert all(per_episode)
    d_eps = assert_stats_equal(
        aggregate_stats(per_episode), theirs.meta.stats, rtol=1e-6, atol=1e-7, what="episodes"
    )
    print(f"stats.json {d_json:.2e}, aggregated per-episode stats {d_eps:.2e}")


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_lerobot_reads_a_v3_dataset_written_by_vlaforge(tmp_path, codec):
    from lerobot.datasets.compute_stats import aggregate_stats, compute_episode_stats

    with keep_thread_scheduling():
        src = synthetic(tmp_path / "v3", codec=codec)
    ours = Dataset(src, accurate_color=False)
    theirs = lerobot_dataset("local/by-vlaforge", src)  # as written: no conversion
    assert theirs.meta.info["codebase_version"] == "v3.0"
    assert theirs.meta.info["features"][IMAGE_PREFIX + CAMS[0]]["info"]["video.codec"] == codec
    assert theirs.num_episodes == 3 and theirs.meta.camera_keys == [IMAGE_PREFIX + c for c in CAMS]
    assert theirs.meta.total_frames == len(ours)
    assert list(theirs.meta.tasks.index) == ours.meta.tasks
    lengths = [ep.length for ep in ours.meta.episodes]
    assert list(theirs.meta.episodes["length"]) == lengths
    assert [list(t) for t in theirs.meta.episodes["tasks"]] == [ep.tasks for ep in ours.meta.episodes]
    print(f"vlaforge ({codec}) -> LeRobot, max abs diff:", assert_same_frames(ours, theirs))
    # our stats.json as LeRobot loads it
    d_json = assert_stats_equal(ours.stats, theirs.meta.stats, rtol=1e-6, atol=1e-7, what="stats.json")
    # our state/action statistics vs LeRobot's own computation (compute_episode_stats per episode,
    # aggregate_stats) on the frames LeRobot reads. Quantiles are left out: LeRobot estimates each
    # episode's from a histogram and averages them over episodes (weighted by length); ours are exact
    # quantiles over all frames (docs/parity.md).
    spec = {k: theirs.meta.features[k] for k in (STATE_KEY, ACTION_KEY)}
    frames = [theirs[i] for i in range(len(theirs))]
    per_episode, start = [], 0
    for n in lengths:
        ep = {k: torch.stack([f[k] for f in frames[start : start + n]]).numpy() for k in spec}
        per_episode.append(compute_episode_stats(ep, spec))
        start += n
    recomputed = aggregate_stats(per_episode)
    worst = {"min/max/mean/std/count": 0.0, "quantiles (not compared)": 0.0}
    for key in spec:
        for stat in recomputed[key]:
            o = np.asarray(ours.stats[key][stat], dtype=np.float64).reshape(-1)
            t = np.asarray(recomputed[key][stat], dtype=np.float64).reshape(-1)
            d = float(np.abs(o - t).max())
            if stat.startswith("q"):
                worst["quantiles (not compared)"] = max(worst["quantiles (not compared)"], d)
                continue
            np.testing.assert_allclose(o, t, rtol=1e-6, atol=1e-7, err_msg=f"{key} {stat}")
            worst["min/max/mean/std/count"] = max(worst["min/max/mean/std/count"], d)
    for key in spec:  # ours are the exact quantiles of all frames (numpy's linear definition)
        frames_k = torch.stack([f[key] for f in frames]).numpy().astype(np.float64)
        for stat in (k for k in ours.stats[key] if k.startswith("q")):
            want = np.quantile(frames_k, int(stat[1:]) / 100, axis=0)
            np.testing.assert_allclose(
                ours.stats[key][stat], want, rtol=1e-6, atol=1e-7, err_msg=f"{key} {stat}"
            )
    print(f"stats.json {d_json:.2e}; ours vs LeRobot's compute_episode_stats + aggregate_stats: {worst}")


def test_lerobots_v21_to_v30_converter_takes_our_v21_export(tmp_path):
    """vlaforge v3.0 → ``vlaforge dataset convert --to v2.1`` → LeRobot 0.6.1's own converter
    (``lerobot/scripts/convert_dataset_v21_to_v30.py``, offline: ``root=``, ``push_to_hub=False``) → v3.0
    that both readers read as the original."""
    from lerobot.scripts.convert_dataset_v21_to_v30 import convert_dataset as lerobot_v21_to_v30

    from vlaforge.data.convert import convert_dataset

    with keep_thread_scheduling():
        src = synthetic(tmp_path / "v3")
    v21 = convert_dataset(src, tmp_path / "v21", to="v2.1")
    # rewrites the directory in place (the v2.1 files move to v21_old)
    lerobot_v21_to_v30("local/v21", root=v21, push_to_hub=False)
    back = Dataset(v21, accurate_color=False)
    assert back.version == "v3.0"
    original = Dataset(src, accurate_color=False)
    assert back.meta.tasks == original.meta.tasks and back.num_episodes == original.num_episodes
    for e in range(original.num_episodes):  # whole episodes: every column and both cameras' frames, exactly
        got, want = back.episode(e), original.episode(e)
        assert set(got) == set(want) and got["task"] == want["task"], e
        for key in (k for k in want if k != "task"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"episode {e} {key}")
    for key in (STATE_KEY, ACTION_KEY):  # LeRobot's converter aggregates our v2.1 per-episode statistics
        for stat in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(
                np.asarray(back.stats[key][stat], dtype=np.float64).reshape(-1),
                np.asarray(original.stats[key][stat], dtype=np.float64).reshape(-1),
                rtol=1e-6,
                atol=1e-7,
                err_msg=f"{key} {stat}",
            )
    theirs = lerobot_dataset("local/v21", v21)
    print("our v2.1 through LeRobot's converter, max abs diff:", assert_same_frames(original, theirs))
