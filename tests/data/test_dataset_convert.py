from __future__ import annotations

import numpy as np
import pytest

from vlaforge.cli import main
from vlaforge.data import Dataset, DatasetError, convert_dataset, dataset_summary


def _assert_same_content(a: Dataset, b: Dataset, exact_video: bool = True) -> None:
    assert (len(a), a.num_episodes, a.fps, a.meta.tasks) == (len(b), b.num_episodes, b.fps, b.meta.tasks)
    assert a.features == b.features
    for e in range(a.num_episodes):
        x, y = a.episode(e), b.episode(e)
        assert x.keys() == y.keys() and x["task"] == y["task"]
        for key in x:
            if key == "task":
                continue
            if key.startswith("observation.images.") and not exact_video:
                assert np.abs(x[key].astype(np.float64) - y[key]).mean() < 2.0
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"episode {e} {key}")
        for key, stats in a.meta.episodes[e].stats.items():
            for stat, value in stats.items():
                np.testing.assert_allclose(
                    b.meta.episodes[e].stats[key][stat], value, err_msg=f"{key} {stat}"
                )
    for key, stats in a.stats.items():
        for stat, value in stats.items():
            np.testing.assert_allclose(b.stats[key][stat], value, err_msg=f"{key} {stat}")


def test_v30_to_v21_to_v30_preserves_content_bit_exactly(tmp_path, v30_root):
    v21 = convert_dataset(v30_root, tmp_path / "v21", to="v2.1")
    back = convert_dataset(v21, tmp_path / "v30", to="v3.0")
    assert Dataset(v21).version == "v2.1" and Dataset(back).version == "v3.0"
    assert (v21 / "meta/episodes.jsonl").is_file() and (back / "meta/tasks.parquet").is_file()
    _assert_same_content(Dataset(v30_root), Dataset(v21))  # video re-muxed: identical pixels
    _assert_same_content(Dataset(v30_root), Dataset(back))


def test_reencode_keeps_content_close(tmp_path, v21_root):
    out = convert_dataset(v21_root, tmp_path / "out", to="v3.0", reencode=True)
    _assert_same_content(Dataset(v21_root), Dataset(out), exact_video=False)


def test_convert_rejects_bad_target(tmp_path, v30_root):
    with pytest.raises(DatasetError, match="--to must be one of"):
        convert_dataset(v30_root, tmp_path / "x", to="v4")
    with pytest.raises(DatasetError, match="same directory"):
        convert_dataset(v30_root, v30_root, to="v2.1")


def test_summary_lists_what_matters(v30_root):
    text = dataset_summary(v30_root)
    for needle in (
        "v3.0",
        "fps 10",
        "episodes  3",
        "frames 28",
        "tasks 2",
        "observation.images.corner",
        "32x32x3",
        "h264",
        "observation.state",
        "float32",
        "(4,)",
        "q01",
        "pick up the block",
        "MB",
    ):
        assert needle in text, needle


def test_cli_info_and_convert(tmp_path, v30_root, capsys):
    assert main(["dataset", "info", str(v30_root), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "frames 28" in out and "verify: ok" in out
    assert main(["dataset", "convert", str(v30_root), str(tmp_path / "v21"), "--to", "v2.1"]) == 0
    assert "re-mux (lossless)" in capsys.readouterr().out
    assert Dataset(tmp_path / "v21").version == "v2.1"
    assert main(["dataset", "info", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
