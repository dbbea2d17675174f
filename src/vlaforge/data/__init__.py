"""LeRobot-format datasets: write (v3.0 native, v2.1), read with history/chunk windows, convert, summarize.

Public API:
    DatasetWriter(root, *, fps, features, robot_type="unknown", version="v3.0", codec="h264", ...)
        .add_episode(frames: dict[str, (T, ...) array], task: str) -> int;  .finalize() -> Path
    Dataset(root, *, history=1, chunk=1, cameras=None, video_backend="pyav")
        ds[i] -> dict of tensors;  ds.episode(e);  ds.meta;  ds.stats;  ds.cache_frames()
    WindowSampler(episode_starts, episode_ends).window(index, offsets) -> (indices, is_pad)
    MixtureDataset({name: Dataset}, {name: weight}, *, state_dim=None, action_dim=None, seed=0)
        cross-embodiment mixture: weighted sampling, zero-padded state/action + dim masks, per-dataset stats
    convert_dataset(src, dst, to="v2.1" | "v3.0");  dataset_summary(root) -> str
    DatasetError (ValueError): every problem with a dataset on disk, naming the file/key.
"""

from __future__ import annotations

from vlaforge.data.convert import convert_dataset
from vlaforge.data.dataset import Dataset
from vlaforge.data.errors import DatasetError, DatasetIndexError
from vlaforge.data.format import DEFAULT_FEATURES, SUPPORTED_VERSIONS, V21, V30
from vlaforge.data.meta import DatasetMeta, EpisodeRecord, load_meta
from vlaforge.data.mixture import MixtureDataset
from vlaforge.data.sampler import WindowSampler
from vlaforge.data.stats import QUANTILE_KEYS, STAT_KEYS
from vlaforge.data.summary import dataset_summary
from vlaforge.data.synthetic import write_synthetic_dataset
from vlaforge.data.writer import DatasetWriter

__all__ = [
    "DEFAULT_FEATURES",
    "QUANTILE_KEYS",
    "STAT_KEYS",
    "SUPPORTED_VERSIONS",
    "V21",
    "V30",
    "Dataset",
    "DatasetError",
    "DatasetIndexError",
    "DatasetMeta",
    "DatasetWriter",
    "EpisodeRecord",
    "MixtureDataset",
    "WindowSampler",
    "convert_dataset",
    "dataset_summary",
    "load_meta",
    "write_synthetic_dataset",
]
