"""Every kind of bad input raises DatasetError naming the file or key and what was expected."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import FPS

from vlaforge.data import Dataset, DatasetError, DatasetWriter
from vlaforge.data.synthetic import synthetic_features
from vlaforge.types import FeatureSpec


def _edit_info(root, fn):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))


def _truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_missing_data_parquet(copy_of, any_root):
    root = copy_of(any_root)
    path = sorted((root / "data").rglob("*.parquet"))[0]
    path.unlink()
    with pytest.raises(DatasetError, match=rf"missing parquet file .*{path.name}"):
        Dataset(root)


def test_truncated_data_parquet(copy_of, any_root):
    root = copy_of(any_root)
    path = sorted((root / "data").rglob("*.parquet"))[-1]
    _truncate(path)
    with pytest.raises(DatasetError, match=rf"cannot read parquet file .*{path.name}.*truncated or corrupt"):
        Dataset(root)


def test_missing_video(copy_of, any_root):
    root = copy_of(any_root)
    path = sorted((root / "videos").rglob("*.mp4"))[0]
    path.unlink()
    with pytest.raises(DatasetError, match=rf"missing video file .*{path.name}"):
        Dataset(root)


def test_truncated_video_fails_on_access_naming_the_file(copy_of, v30_root):
    root = copy_of(v30_root)
    path = root / "videos/observation.images.corner/chunk-000/file-000.mp4"
    _truncate(path, 0.6)
    ds = Dataset(root)  # existence is checked up front, content on access (or with verify())
    with pytest.raises(DatasetError, match=r"file-000\.mp4"):
        ds[len(ds) - 1]
    with pytest.raises(DatasetError, match=r"file-000\.mp4"):
        Dataset(root).verify()


def test_video_shorter_than_metadata(copy_of, v21_root, tmp_path):
    root = copy_of(v21_root)
    short = root / "videos/chunk-000/observation.images.corner/episode_000001.mp4"
    short.write_bytes((root / "videos/chunk-000/observation.images.corner/episode_000000.mp4").read_bytes())
    ds = Dataset(root)  # episode 0 has 7 frames, episode 1 claims 12
    with pytest.raises(DatasetError, match=r"episode_000001\.mp4 has no frame at position"):
        ds.episode(1)


def test_unknown_codebase_version(copy_of, v30_root):
    root = copy_of(v30_root)
    _edit_info(root, lambda i: i.update(codebase_version="v1.6"))
    with pytest.raises(DatasetError, match=r"info\.json: unknown codebase_version 'v1\.6'.*v3\.0"):
        Dataset(root)


@pytest.mark.parametrize("key", ["fps", "features", "data_path", "total_frames"])
def test_info_missing_keys(copy_of, v30_root, key):
    root = copy_of(v30_root)
    _edit_info(root, lambda i: i.pop(key))
    with pytest.raises(DatasetError, match=rf"info\.json: missing required key\(s\) \['{key}'\]"):
        Dataset(root)


def test_info_not_json(copy_of, v30_root):
    root = copy_of(v30_root)
    (root / "meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"info\.json: not valid JSON"):
        Dataset(root)


def test_totals_disagree_with_episodes(copy_of, v21_root):
    root = copy_of(v21_root)
    _edit_info(root, lambda i: i.update(total_frames=999))
    with pytest.raises(DatasetError, match=r"total_frames is 999 but the episodes hold 28"):
        Dataset(root)


def test_rows_disagree_with_episode_metadata(copy_of, v21_root):
    root = copy_of(v21_root)
    eps = (root / "meta/episodes.jsonl").read_text().splitlines()
    first = json.loads(eps[0])
    first["length"] += 1
    eps[0] = json.dumps(first)
    (root / "meta/episodes.jsonl").write_text("\n".join(eps))
    _edit_info(root, lambda i: i.update(total_frames=i["total_frames"] + 1))
    with pytest.raises(
        DatasetError, match=r"episode_000000\.parquet: rows do not match the episode metadata"
    ):
        Dataset(root)


def test_missing_episode_metadata(copy_of, v30_root):
    root = copy_of(v30_root)
    (root / "meta/episodes/chunk-000/file-000.parquet").unlink()
    with pytest.raises(DatasetError, match="missing episode metadata"):
        Dataset(root)


def test_index_out_of_range(v30_root):
    ds = Dataset(v30_root)
    with pytest.raises(DatasetError, match=rf"frame index {len(ds)} out of range .* {len(ds)} frames"):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds[-1]
    with pytest.raises(DatasetError, match="episode 3 out of range"):
        ds.episode(3)
    assert sum(1 for _ in Dataset(v30_root, cameras=[])) == len(ds)  # iteration stops at IndexError


def test_bad_constructor_arguments(v30_root):
    with pytest.raises(DatasetError, match="history must be an integer >= 1"):
        Dataset(v30_root, history=0)
    with pytest.raises(DatasetError, match="video_backend must be one of"):
        Dataset(v30_root, video_backend="torchcodec")
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(v30_root / "nope")


def test_writer_rejects_bad_episodes(tmp_path, episodes):
    w = DatasetWriter(tmp_path / "ds", fps=FPS, features=synthetic_features())
    ep = dict(episodes[0])
    with pytest.raises(DatasetError, match=r"missing \['action'\]"):
        w.add_episode({k: v for k, v in ep.items() if k != "action"}, "t")
    with pytest.raises(DatasetError, match=r"unexpected \['extra'\]"):
        w.add_episode({**ep, "extra": ep["action"]}, "t")
    with pytest.raises(DatasetError, match=r"'observation.state': expected shape \(T, 4\)"):
        w.add_episode({**ep, "observation.state": ep["observation.state"][:, :3]}, "t")
    with pytest.raises(
        DatasetError, match=r"same number of frames T, got \{'action': 5, 'observation.images"
    ):
        w.add_episode({**ep, "action": ep["action"][:5]}, "t")
    with pytest.raises(DatasetError, match="images must be uint8"):
        w.add_episode(
            {**ep, "observation.images.corner": ep["observation.images.corner"].astype(np.float32)}, "t"
        )
    bad = ep["action"].copy()
    bad[3, 1] = np.nan
    with pytest.raises(DatasetError, match="'action': NaN or Inf at frame 3"):
        w.add_episode({**ep, "action": bad}, "t")
    with pytest.raises(DatasetError, match="task must be a non-empty string"):
        w.add_episode(ep, "")
    assert w.num_episodes == 0
    with pytest.raises(DatasetError, match="no episodes were added"):
        w.finalize()


def test_writer_rejects_bad_features(tmp_path):
    with pytest.raises(DatasetError, match="even height and width"):
        DatasetWriter(
            tmp_path / "a", fps=FPS, features={"observation.images.x": FeatureSpec("video", (31, 32, 3))}
        )
    with pytest.raises(DatasetError, match="added by the writer"):
        DatasetWriter(tmp_path / "b", fps=FPS, features={"timestamp": FeatureSpec("float32", (1,))})
    with pytest.raises(DatasetError, match="must not contain '/'"):
        DatasetWriter(tmp_path / "c", fps=FPS, features={"a/b": FeatureSpec("float32", (1,))})
    with pytest.raises(DatasetError, match="codec must be one of"):
        DatasetWriter(tmp_path / "d", fps=FPS, features=synthetic_features(), codec="vp9")
