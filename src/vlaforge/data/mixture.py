"""MixtureDataset: several datasets (embodiments) behind one torch Dataset, sampled by weight.

    mix = MixtureDataset({"arm": Dataset(a, chunk=4), "biarm": Dataset(b, chunk=4)}, {"arm": 3, "biarm": 1},
                         state_dim=None, action_dim=None, seed=0)
    item = mix[i]
    item["observation.state"]     # float32 (T, S_max) zero-padded   ((S_max,) when history == 1)
    item["action"]                # float32 (H, A_max) zero-padded   ((A_max,) when chunk == 1)
    item["state_dim_mask"]        # bool (S_max,) True on the dataset's real state dimensions
    item["action_dim_mask"]       # bool (A_max,) True on the dataset's real action dimensions
    item["dataset_name"], item["dataset_index"]

Sampling: one "virtual epoch" of `len(mix)` slots holds each dataset in proportion to its weight
(largest-remainder rounding, so the proportions are exact per epoch). Within a dataset, slots walk
through fresh seeded permutations of its frames, and the virtual epoch is long enough by default that
every frame of every dataset appears at least once. The slot table is shuffled with `seed`, so
`mix[i]` is a pure function of (i, seed): the trainer's step-indexed batch order stays reproducible
across resumes and ranks. Memory: 5 bytes per slot, built on first access.

Cameras must match (same names and sizes) across datasets — a policy has one set of image encoders;
narrow a dataset with `Dataset(root, cameras=[...])`, and give datasets whose cameras are named
differently a camera map: `cameras={"mt10": {"corner": "image", "gripper": "wrist_image"}}` reads
Meta-World's corner camera as the mixture's "image" (Octo's per-dataset observation keys).
Control rates may differ (Meta-World 80 Hz, LIBERO 20 Hz; Octo mixes 3–15 Hz datasets unresampled):
`dataset_fps` keeps each one's rate, which a mixture policy acts at for that dataset, and `fps` is
the first dataset's. Other features that are not in every
dataset with the same shape are dropped from items (default_collate needs identical keys). For the same
reason the subtask labels ("subtask", "subtask_index") are kept only when every dataset has them; a mixture
of labelled and unlabelled datasets drops them (with a warning) rather than inventing labels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vlaforge.data.errors import DatasetError, DatasetIndexError
from vlaforge.data.format import SUBTASK_INDEX
from vlaforge.transforms.normalize import pad_stats
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

PADDED_KEYS = (STATE_KEY, ACTION_KEY)


class MixtureMeta:
    """The slice of `DatasetMeta` a policy reads from a mixture: task texts (union, first-seen order), fps,
    and subtask texts (union, first-seen order; None unless every dataset has subtask labels)."""

    def __init__(self, tasks: list[str], fps: float, subtasks: list[str] | None = None):
        self.tasks, self.fps, self.subtasks = tasks, fps, subtasks


class MixtureDataset(torch.utils.data.Dataset):
    """datasets: name -> dataset (a `vlaforge.data.Dataset` or anything with the same item layout,
    `.features`, `.stats`, `.fps`, `.meta.tasks`, `num_episodes`).
    weights: name -> sampling weight (> 0; normalized); None = proportional to dataset size.
    state_dim / action_dim: padded sizes; None = the largest of the datasets (a recipe may ask for more).
    epoch_length: slots per virtual epoch; None = just long enough that every frame appears once.
    cameras: dataset name -> {its camera name: the mixture's camera name}, for datasets whose cameras
        are named differently (unmapped cameras keep their names).
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        weights: Mapping[str, float] | None = None,
        *,
        state_dim: int | None = None,
        action_dim: int | None = None,
        seed: int = 0,
        epoch_length: int | None = None,
        cameras: Mapping[str, Mapping[str, str]] | None = None,
    ):
        if not datasets:
            raise DatasetError("MixtureDataset needs at least one dataset")
        self.datasets: dict[str, Any] = dict(datasets)
        self.names = list(self.datasets)
        for name, ds in self.datasets.items():
            if not isinstance(name, str) or not name or "@" in name or "," in name:
                raise DatasetError(f"dataset name {name!r} must be a non-empty string without '@' or ','")
            if len(ds) < 1:
                raise DatasetError(f"dataset '{name}' is empty")
        self.weights = self._normalized_weights(weights)
        self.seed = seed
        self.camera_maps = self._camera_maps(
            cameras or {}
        )  # name -> {its camera: the mixture's}, renames only
        self._renames = {  # the same as feature keys
            n: {IMAGE_PREFIX + a: IMAGE_PREFIX + b for a, b in m.items()} for n, m in self.camera_maps.items()
        }
        self.dataset_fps = {n: float(ds.fps) for n, ds in self.datasets.items()}
        self.fps = self.dataset_fps[self.names[0]]
        self.dataset_dims: dict[str, tuple[int, int]] = {
            name: (self._dim(name, STATE_KEY), self._dim(name, ACTION_KEY)) for name in self.names
        }
        self.state_dim = self._padded_dim("state_dim", state_dim, 0)
        self.action_dim = self._padded_dim("action_dim", action_dim, 1)
        self._check_windows()
        self._features, self._dropped = self._common_features()
        self._masks = {
            name: (
                torch.arange(self.state_dim) < s,  # (S_max,)
                torch.arange(self.action_dim) < a,  # (A_max,)
            )
            for name, (s, a) in self.dataset_dims.items()
        }
        tasks: dict[str, None] = {}
        for ds in self.datasets.values():
            tasks.update(dict.fromkeys(_task_list(ds)))
        self.has_subtasks = self._subtask_labels()
        # subtask_index in items indexes the union list (meta.subtasks), not each dataset's own list
        self._subtask_ids: dict[str, np.ndarray] = {}
        subtasks: dict[str, int] = {}
        if self.has_subtasks:
            for name, ds in self.datasets.items():
                ids = [subtasks.setdefault(text, len(subtasks)) for text in ds.meta.subtasks]
                self._subtask_ids[name] = np.array(ids, np.int64)  # dataset's index -> union index
        self.meta = MixtureMeta(list(tasks), self.fps, list(subtasks) if self.has_subtasks else None)
        self.epoch_length = epoch_length or self._default_epoch_length()
        if self.epoch_length < len(self.names):
            raise DatasetError(
                f"epoch_length={self.epoch_length} is shorter than the number of datasets ({len(self.names)})"
            )
        self._table: tuple[np.ndarray, np.ndarray] | None = None  # (dataset id (N,), frame (N,))

    # ------------------------------------------------------------------------------------ validation

    def _normalized_weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        if weights is None:
            raw = {n: float(len(ds)) for n, ds in self.datasets.items()}
        else:
            unknown = sorted(set(weights) - set(self.names))
            missing = [n for n in self.names if n not in weights]
            if unknown or missing:
                raise DatasetError(
                    f"weights must name exactly the datasets {self.names}: unknown {unknown}, missing {missing}"
                )
            raw = {n: float(weights[n]) for n in self.names}
        for n, w in raw.items():
            if not math.isfinite(w) or w <= 0:
                raise DatasetError(f"weight of dataset '{n}' is {w}; weights must be finite and > 0")
        total = sum(raw.values())
        return {n: w / total for n, w in raw.items()}

    def _camera_maps(self, cameras: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """Each dataset's {camera name: the mixture's camera name} for its renamed cameras, checked."""
        unknown = sorted(set(cameras) - set(self.names))
        if unknown:
            raise DatasetError(f"camera map names unknown datasets {unknown}; the mixture has {self.names}")
        out: dict[str, dict[str, str]] = {}
        for name in self.names:
            mapping = dict(cameras.get(name, {}))
            have = sorted(
                k.removeprefix(IMAGE_PREFIX)
                for k in self.datasets[name].features
                if k.startswith(IMAGE_PREFIX)
            )
            missing = sorted(set(mapping) - set(have))
            if missing:
                raise DatasetError(
                    f"camera map for '{name}' names cameras {missing} it lacks (it has {have})"
                )
            targets = [mapping.get(c, c) for c in have]
            if len(set(targets)) != len(targets):
                raise DatasetError(
                    f"camera map for '{name}' gives two cameras one name: {dict(zip(have, targets))}"
                )
            out[name] = {a: b for a, b in mapping.items() if a != b}
        return out

    def _renamed(self, name: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """`mapping` (features, statistics or an item) with dataset `name`'s cameras under the mixture's
        names (an item's "<camera>_is_pad" too)."""
        rename = self._renames[name]
        if not rename:
            return dict(mapping)
        out = {}
        for key, value in mapping.items():
            base, pad = (key[: -len("_is_pad")], "_is_pad") if key.endswith("_is_pad") else (key, "")
            out[rename.get(base, base) + pad] = value
        return out

    def _dim(self, name: str, key: str) -> int:
        feats = self.datasets[name].features  # state and action: never renamed
        if key not in feats:
            raise DatasetError(f"dataset '{name}' has no '{key}' feature (features: {sorted(feats)})")
        shape = tuple(feats[key]["shape"])
        if len(shape) != 1:
            raise DatasetError(f"dataset '{name}': '{key}' must be a vector, got shape {shape}")
        return int(shape[0])

    def _padded_dim(self, arg: str, requested: int | None, which: int) -> int:
        largest = max(d[which] for d in self.dataset_dims.values())
        if requested is None:
            return largest
        if requested < largest:
            too_big = {n: d[which] for n, d in self.dataset_dims.items() if d[which] > requested}
            raise DatasetError(f"{arg}={requested} is smaller than the datasets' sizes {too_big}")
        return int(requested)

    def _check_windows(self) -> None:
        for attr in ("history", "chunk"):
            values = {n: getattr(ds, attr) for n, ds in self.datasets.items() if hasattr(ds, attr)}
            if len(set(values.values())) > 1:
                raise DatasetError(f"datasets disagree on {attr} {values}; build them with the same {attr}")

    def _common_features(self) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
        first_name = self.names[0]
        features = {n: self._renamed(n, ds.features) for n, ds in self.datasets.items()}
        first = features[first_name]
        cams = {k: tuple(v["shape"]) for k, v in first.items() if k.startswith(IMAGE_PREFIX)}
        for name in self.names[1:]:
            feats = features[name]
            other = {k: tuple(v["shape"]) for k, v in feats.items() if k.startswith(IMAGE_PREFIX)}
            for key in sorted(set(cams) | set(other)):
                if key not in other or key not in cams:
                    has, lacks = (first_name, name) if key not in other else (name, first_name)
                    raise DatasetError(
                        f"camera '{key.removeprefix(IMAGE_PREFIX)}' is in dataset '{has}' but not in '{lacks}'; "
                        "mixed datasets need the same cameras (select them with Dataset(root, cameras=[...]) "
                        "or rename them with a camera map)"
                    )
                if cams[key] != other[key]:
                    raise DatasetError(
                        f"camera '{key.removeprefix(IMAGE_PREFIX)}' is {other[key]} in dataset '{name}' but "
                        f"{cams[key]} in '{first_name}'; resize one of them (all (H, W, 3) must match)"
                    )
        common: dict[str, dict[str, Any]] = {}
        for key, spec in first.items():
            if key in PADDED_KEYS:
                size = self.state_dim if key == STATE_KEY else self.action_dim
                common[key] = {"dtype": spec["dtype"], "shape": (size,), "names": None}
            elif all(
                key in feats and tuple(feats[key]["shape"]) == tuple(spec["shape"])
                for feats in features.values()
            ):
                common[key] = dict(spec)
        dropped = {n: set(feats) - set(common) for n, feats in features.items()}
        return common, dropped

    def _subtask_labels(self) -> bool:
        """True when every dataset has subtask labels; warns when only some have them (they are dropped)."""
        labelled = {n: getattr(ds.meta, "subtasks", None) is not None for n, ds in self.datasets.items()}
        if any(labelled.values()) and not all(labelled.values()):
            warnings.warn(
                f"MixtureDataset: datasets {[n for n, v in labelled.items() if not v]} have no subtask labels, "
                f"so the labels of {[n for n, v in labelled.items() if v]} are dropped from the mixture's items; "
                "label them all (`vlaforge dataset add-subtasks`) to train on subtasks",
                stacklevel=3,
            )
        return all(labelled.values())

    # -------------------------------------------------------------------------------------- sampling

    def _default_epoch_length(self) -> int:
        """Smallest N with N * weight_d >= len(d) for every d: each frame appears at least once."""
        return max(math.ceil(len(ds) / self.weights[n] - 1e-9) for n, ds in self.datasets.items())

    def counts(self) -> dict[str, int]:
        """Slots per virtual epoch for each dataset (largest-remainder rounding of N * weight)."""
        n = self.epoch_length
        exact = np.array([n * self.weights[name] for name in self.names])
        base = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - base), kind="stable")
        base[order[: n - int(base.sum())]] += 1
        return {name: int(c) for name, c in zip(self.names, base, strict=True)}

    def _build_table(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0x6D6978])  # "mix"
        ids, frames = [], []
        for d, (name, count) in enumerate(self.counts().items()):
            size = len(self.datasets[name])
            cycles = math.ceil(count / size)
            walk = np.concatenate([rng.permutation(size) for _ in range(cycles)] or [np.zeros(0, np.int64)])
            walk = walk[:count]  # (count,)
            frames.append(walk.astype(np.int64))
            ids.append(np.full(count, d, np.uint8 if len(self.names) < 256 else np.int32))
        order = rng.permutation(self.epoch_length)  # (N,)
        return np.concatenate(ids)[order], np.concatenate(frames)[order]

    def locate(self, i: int) -> tuple[str, int]:
        """Which dataset and frame virtual index `i` reads."""
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise DatasetIndexError(f"mixture index must be an integer, got {type(i).__name__}")
        if not 0 <= i < self.epoch_length:
            raise DatasetIndexError(
                f"mixture index {i} out of range for a virtual epoch of {self.epoch_length}"
            )
        if self._table is None:
            self._table = self._build_table()
        ids, frames = self._table
        return self.names[int(ids[i])], int(frames[i])

    # ---------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return self.epoch_length

    def __getitem__(self, i: int) -> dict[str, Any]:
        name, frame = self.locate(i)
        item = self._renamed(name, self.datasets[name][frame])
        dropped = self._dropped[name]
        out = {k: v for k, v in item.items() if k not in dropped and k.removesuffix("_is_pad") not in dropped}
        if not self.has_subtasks:  # identical keys across datasets (default_collate)
            out.pop("subtask", None)
            out.pop(SUBTASK_INDEX, None)
        elif SUBTASK_INDEX in out:
            out[SUBTASK_INDEX] = torch.tensor(int(self._subtask_ids[name][int(out[SUBTASK_INDEX])]))
        out[STATE_KEY] = _pad_last(item[STATE_KEY], self.state_dim)  # (T, S_max) or (S_max,)
        out[ACTION_KEY] = _pad_last(item[ACTION_KEY], self.action_dim)  # (H, A_max) or (A_max,)
        state_mask, action_mask = self._masks[name]
        out["state_dim_mask"] = state_mask.clone()  # (S_max,)
        out["action_dim_mask"] = action_mask.clone()  # (A_max,)
        out["dataset_name"] = name
        out["dataset_index"] = torch.tensor(self.names.index(name))
        return out

    # ------------------------------------------------------------------------------------ properties

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """Features shared by every dataset; state and action at the padded sizes."""
        return {k: dict(v) for k, v in self._features.items()}

    @property
    def stats(self) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """Per dataset: its statistics, with state and action padded by neutral values (mean 0, std 1)."""
        out = {}
        for name, ds in self.datasets.items():
            stats = self._renamed(name, ds.stats)
            for key, size in ((STATE_KEY, self.state_dim), (ACTION_KEY, self.action_dim)):
                if key not in stats:
                    raise DatasetError(f"dataset '{name}' has no statistics for '{key}' (meta/stats.json)")
                stats[key] = pad_stats(stats[key], size)
            out[name] = stats
        return out

    @property
    def num_episodes(self) -> int:
        return sum(int(ds.num_episodes) for ds in self.datasets.values())

    @property
    def camera_keys(self) -> list[str]:
        return [k for k in self._features if k.startswith(IMAGE_PREFIX)]

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}: {len(ds)} frames, w={self.weights[n]:.3f}, dims={self.dataset_dims[n]}"
            for n, ds in self.datasets.items()
        )
        return f"MixtureDataset({parts}; epoch={self.epoch_length}, state={self.state_dim}, action={self.action_dim})"


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dimension of `x` to `size`."""
    extra = size - x.shape[-1]
    return torch.nn.functional.pad(x, (0, extra)) if extra else x


def _task_list(ds: Any) -> list[str]:
    tasks = ds.meta.tasks
    if isinstance(tasks, dict):
        keys_are_ids = all(isinstance(k, int) for k in tasks)
        return [str(t) for t in (tasks.values() if keys_are_ids else tasks.keys())]
    return [str(t) for t in tasks]
