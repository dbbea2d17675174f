"""Normalization of state and action vectors — the one implementation used in training and serving.

The statistics travel with the checkpoint (`Normalizer.state_dict()` -> safetensors), so a policy
always acts with the statistics it was trained with. A missing statistic is an error, never a
silent pass-through (a known LeRobot pitfall).

Formulas (REFERENCE.md):
    mean_std:  (x - mean) / (std + eps)
    quantile:  2 (x - q01) / (q99 - q01 + eps) - 1, clipped to [-1, 1] when `clip` (tokenizers need it)
    min_max:   2 (x - min) / (max - min + eps) - 1
Dimensions whose `mask` entry is False are left unnormalized (Octo/OpenVLA leave the gripper alone).
The scale is floored at MIN_SCALE so constant dimensions stay finite.

Per-dataset statistics (cross-embodiment mixtures, OpenVLA's `unnorm_key`): a feature may be held
once per dataset under the key `<feature>@<dataset>` (e.g. `action@bridge`). Such keys live in the
same `features` dict, so `state_dict()/describe()/from_state()` carry them unchanged. Ask for one
with `normalize("action", x, dataset="bridge")`, or per sample with a list of names (one per row);
without a name the plain key is used, or the only dataset's key; several datasets -> error.
Vectors padded to a mixture's maximum size get neutral statistics (`pad_stats`) so padding stays 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

EPS = 1e-8
# Floor on the scale: a constant dimension (std 0, e.g. a gripper that never moves in the data) must not
# turn a tiny deviation at inference into a huge normalized value.
MIN_SCALE = 1e-3
MODES = ("mean_std", "quantile", "min_max", "identity")
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")
DATASET_SEP = "@"  # `<feature>@<dataset>`: feature keys never contain it
# Statistics that make every mode the identity on a padded dimension: mean 0 / std 1, and
# quantile / min-max ranges of [-1, 1] (offset 0, scale 1).
NEUTRAL_STATS = {
    "mean": 0.0,
    "std": 1.0,
    "min": -1.0,
    "max": 1.0,
    "q01": -1.0,
    "q10": -1.0,
    "q50": 0.0,
    "q90": 1.0,
    "q99": 1.0,
}
_REQUIRED = {
    "mean_std": ("mean", "std"),
    "quantile": ("q01", "q99"),
    "min_max": ("min", "max"),
    "identity": (),
}


@dataclass
class FeatureNorm:
    """How one feature (e.g. `action`) is normalized. `mask[i] == False` leaves dimension i untouched."""

    mode: str
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None
    clip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalization mode '{self.mode}' is unknown; use one of {MODES}")
        for k in _REQUIRED[self.mode]:
            if k not in self.stats:
                raise ValueError(
                    f"normalization mode '{self.mode}' needs statistic '{k}' but only {sorted(self.stats)} "
                    "are available; recompute the dataset statistics (meta/stats.json)"
                )
        # Keep only per-dimension statistics (datasets also store e.g. a frame `count`).
        self.stats = {
            k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in self.stats.items() if k in STAT_NAMES
        }
        dims = {k: v.shape[0] for k, v in self.stats.items()}
        if len(set(dims.values())) > 1:
            raise ValueError(f"statistics disagree on the feature dimension: {dims}")

    @property
    def dim(self) -> int | None:
        return next(iter(self.stats.values())).shape[0] if self.stats else None


def _check_finite(key: str, fn: FeatureNorm) -> None:
    """A NaN or Inf in a statistic the mode uses would turn every normalized value into NaN: refuse it,
    naming the feature, the statistic and the dimensions (masked-out dimensions are never read)."""
    for name in _REQUIRED[fn.mode]:
        bad = ~np.isfinite(fn.stats[name])
        if fn.mask is not None and fn.mask.shape == bad.shape:
            bad &= np.asarray(fn.mask, dtype=bool)
        if bad.any():
            dims = np.flatnonzero(bad).tolist()
            raise ValueError(
                f"normalization statistic '{key}' {name} is not finite at dimension(s) {dims[:8]} "
                f"({fn.stats[name][dims[:8]].tolist()}); recompute the dataset statistics (meta/stats.json)"
            )


class Normalizer:
    """Normalizes / unnormalizes named features with torch ops (works on any leading shape)."""

    def __init__(self, features: dict[str, FeatureNorm]):
        for key, fn in features.items():
            _check_finite(key, fn)
        self.features = features

    def _params(
        self, key: str, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, FeatureNorm]:
        if key not in self.features:
            raise KeyError(f"no normalization statistics for '{key}' (have {sorted(self.features)})")
        fn = self.features[key]
        dim = fn.dim
        if dim is not None and x.shape[-1] != dim:
            raise ValueError(f"'{key}': last dimension is {x.shape[-1]} but the statistics have {dim}")

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=x.dtype, device=x.device)

        s = fn.stats
        if fn.mode == "mean_std":
            offset, scale = t(s["mean"]), t(s["std"]) + EPS
        elif fn.mode == "quantile":
            offset, scale = (t(s["q01"]) + t(s["q99"])) / 2, (t(s["q99"]) - t(s["q01"])) / 2 + EPS
        elif fn.mode == "min_max":
            offset, scale = (t(s["min"]) + t(s["max"])) / 2, (t(s["max"]) - t(s["min"])) / 2 + EPS
        else:
            offset = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
            scale = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
        mask = None if fn.mask is None else torch.as_tensor(fn.mask, dtype=torch.bool, device=x.device)
        return offset, scale.clamp(min=MIN_SCALE), mask, fn

    # --- per-dataset keys --------------------------------------------------------------------------
    @property
    def datasets(self) -> list[str]:
        """Names of the datasets that have their own statistics (sorted; empty for a single dataset)."""
        return sorted({k.split(DATASET_SEP, 1)[1] for k in self.features if DATASET_SEP in k})

    def resolve(self, key: str, dataset: str | None = None) -> str:
        """The `features` key that normalizes `key` for `dataset`; errors name the available datasets."""
        prefix = key + DATASET_SEP
        names = sorted(k[len(prefix) :] for k in self.features if k.startswith(prefix))
        if dataset is not None:
            full = f"{key}{DATASET_SEP}{dataset}"
            if full in self.features:
                return full
            raise KeyError(
                f"no normalization statistics for '{key}' of dataset '{dataset}'; "
                + (
                    f"datasets with statistics: {names}"
                    if names
                    else "this normalizer has one set of statistics"
                )
            )
        if key in self.features:
            return key
        if len(names) == 1:
            return f"{key}{DATASET_SEP}{names[0]}"
        if names:
            raise ValueError(
                f"'{key}' has statistics for several datasets {names}: say which one "
                "(e.g. predict(..., dataset=NAME)), as OpenVLA's unnorm_key"
            )
        raise KeyError(f"no normalization statistics for '{key}' (have {sorted(self.features)})")

    def normalize(
        self, key: str, x: torch.Tensor, dataset: str | Sequence[str] | None = None
    ) -> torch.Tensor:
        """dataset: None, one name, or one name per row of `x` (x.shape[0] == len(dataset))."""
        if dataset is None or isinstance(dataset, str):
            return self._normalize(self.resolve(key, dataset), x)
        return self._per_row(key, x, dataset, self._normalize)

    def unnormalize(
        self, key: str, y: torch.Tensor, dataset: str | Sequence[str] | None = None
    ) -> torch.Tensor:
        if dataset is None or isinstance(dataset, str):
            return self._unnormalize(self.resolve(key, dataset), y)
        return self._per_row(key, y, dataset, self._unnormalize)

    def _per_row(self, key: str, x: torch.Tensor, names: Sequence[str], fn) -> torch.Tensor:
        names = list(names)
        if len(names) != x.shape[0]:
            raise ValueError(f"'{key}': {len(names)} dataset names for a batch of {x.shape[0]} rows")
        out = torch.empty_like(x)
        for name in sorted(set(names)):
            rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=x.device)  # (b,)
            out[rows] = fn(self.resolve(key, name), x[rows])
        return out

    def _normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        offset, scale, mask, fn = self._params(key, x)
        y = (x - offset) / scale
        if fn.clip:
            y = y.clamp(-1.0, 1.0)
        return y if mask is None else torch.where(mask, y, x)

    def _unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        offset, scale, mask, _ = self._params(key, y)
        x = y * scale + offset
        return x if mask is None else torch.where(mask, x, y)

    @classmethod
    def combine(cls, per_dataset: dict[str, Normalizer]) -> Normalizer:
        """One normalizer holding each dataset's features under `<feature>@<dataset>`."""
        feats: dict[str, FeatureNorm] = {}
        for name, norm in per_dataset.items():
            if not name or DATASET_SEP in name:
                raise ValueError(
                    f"dataset name {name!r} must be non-empty and must not contain '{DATASET_SEP}'"
                )
            for key, fn in norm.features.items():
                if DATASET_SEP in key:
                    raise ValueError(f"normalizer of dataset '{name}' is already per-dataset (key '{key}')")
                feats[f"{key}{DATASET_SEP}{name}"] = fn
        return cls(feats)

    # --- serialization: flat tensors for safetensors + a JSON-able description -------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, fn in self.features.items():
            for stat, v in fn.stats.items():
                out[f"{key}/{stat}"] = torch.from_numpy(np.ascontiguousarray(v))
            if fn.mask is not None:
                out[f"{key}/__mask__"] = torch.from_numpy(np.asarray(fn.mask, dtype=np.uint8))
        return out

    def describe(self) -> dict[str, dict]:
        return {k: {"mode": fn.mode, "clip": fn.clip} for k, fn in self.features.items()}

    @classmethod
    def from_state(cls, describe: dict[str, dict], tensors: dict[str, torch.Tensor]) -> Normalizer:
        feats: dict[str, FeatureNorm] = {}
        for key, d in describe.items():
            # rsplit: a dataset name may contain "/", a statistic name never does.
            stats = {
                name.rsplit("/", 1)[1]: t.numpy()
                for name, t in tensors.items()
                if name.rsplit("/", 1)[0] == key and not name.endswith("/__mask__")
            }
            mask_t = tensors.get(f"{key}/__mask__")
            feats[key] = FeatureNorm(
                d["mode"],
                stats,
                None if mask_t is None else mask_t.numpy().astype(bool),
                d.get("clip", False),
            )
        return cls(feats)

    @classmethod
    def from_dataset_stats(
        cls,
        stats: dict[str, dict[str, np.ndarray]],
        modes: dict[str, str],
        masks: dict[str, np.ndarray | None] | None = None,
        clip: bool = False,
    ) -> Normalizer:
        feats = {}
        for key, mode in modes.items():
            if key not in stats:
                raise ValueError(
                    f"dataset statistics have no entry for '{key}' (have {sorted(stats)}); "
                    "the dataset's meta/stats.json is incomplete — re-finalize or recompute it"
                )
            mask = None if masks is None else masks.get(key)
            feats[key] = FeatureNorm(mode, dict(stats[key]), mask, clip and mode == "quantile")
        return cls(feats)


def pad_stats(stats: dict[str, np.ndarray], dim: int) -> dict[str, np.ndarray]:
    """Per-dimension statistics padded to `dim` with NEUTRAL_STATS, so padded (zero) dimensions stay zero.

    Scalars such as a frame `count` pass through unchanged.
    """
    out: dict[str, np.ndarray] = {}
    for k, v in stats.items():
        v = np.asarray(v, dtype=np.float32)
        if k not in NEUTRAL_STATS or v.ndim == 0:
            out[k] = v
            continue
        v = v.reshape(-1)
        if v.shape[0] > dim:
            raise ValueError(f"statistic '{k}' has {v.shape[0]} dimensions, more than the padded size {dim}")
        out[k] = np.concatenate([v, np.full(dim - v.shape[0], NEUTRAL_STATS[k], np.float32)])
    return out
