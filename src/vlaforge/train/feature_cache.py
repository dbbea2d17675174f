"""Training with a frozen pretrained image encoder: its tokens computed once per dataset frame.

`attach_feature_caches(policy, dataset)` finds the policy's frozen EfficientNet-Lite0 towers
(`pi0-smol`, `pi05-smol`, `openvla-smol`, `octo-lite0` without augmentation), encodes every distinct
frame of the training data's cached cameras once (`models/vision/token_cache.py`, stored beside the
frame cache in ``<dataset>/.cache/features/<encoder>/``) and lets each tower read its tokens from there.
`detach_feature_caches` undoes it; `train()` does both (`TrainConfig.cache_features`, CLI
``--no-feature-cache``).

Nothing is cached where it would not be used: a trainable tower, augmented frames (Octo's default:
every sample's crop differs), or data without a frame cache (``--no-cache``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlaforge.models.vision import Lite0ImageEncoder
from vlaforge.models.vision.token_cache import TokenCache, build_token_cache


def frozen_towers(policy: torch.nn.Module) -> list[Lite0ImageEncoder]:
    """The policy's frozen Lite0 towers (usually one, shared by the cameras)."""
    return [m for m in policy.modules() if isinstance(m, Lite0ImageEncoder) and m.frozen]


def frame_datasets(dataset: Any) -> list[Any]:
    """The `vlaforge.data.Dataset`s under a training dataset (a mixture's members, co-training's robot
    part, word dropout's wrapped dataset), in a fixed order."""
    if hasattr(dataset, "cached_frames"):
        return [dataset]
    if hasattr(dataset, "datasets"):  # MixtureDataset
        return [d for name in sorted(dataset.datasets) for d in frame_datasets(dataset.datasets[name])]
    for attr in ("robot", "dataset"):  # CoTrainingDataset, WordDropoutDataset
        if hasattr(dataset, attr):
            return frame_datasets(getattr(dataset, attr))
    return []


def attach_feature_caches(policy: torch.nn.Module, dataset: Any, *, progress: bool = False) -> str | None:
    """Give each frozen Lite0 tower of `policy` the tokens of `dataset`'s frames; -> a one-line summary,
    or None where nothing applies (see the module docstring)."""
    towers = frozen_towers(policy)
    if not towers:
        return None
    config = getattr(policy, "config", None)
    if getattr(config, "augment", False):
        return "frozen Lite0 tokens not cached: augmentation changes every frame (--no-augment to cache them)"
    sources = [(ds, ds.cached_frames()) for ds in frame_datasets(dataset)]
    sources = [(ds, found) for ds, found in sources if found is not None]
    if not sources:
        return None
    lines = []
    for tower in towers:
        fingerprint = tower.cache_fingerprint()
        key = fingerprint["weights_sha256"][:16] + f"-{tower.image_size}-{tower.features}"
        cache = TokenCache()
        for ds, (cameras, frames_fp) in sources:
            directory = Path(ds.root) / ".cache" / "features" / key
            digests, tokens = build_token_cache(
                tower._encode, cameras, directory, {**fingerprint, "frames": frames_fp}, progress=progress
            )
            cache.add(digests, tokens)
        tower.token_cache = cache
        gb = len(cache) * tower.num_tokens * tower.out_channels * 4 / 1e9
        lines.append(f"frozen Lite0 tokens cached: {len(cache)} distinct frames ({gb:.1f} GB on disk)")
    return "; ".join(lines)


def detach_feature_caches(policy: torch.nn.Module) -> dict[str, int]:
    """Remove the caches; -> {"hits", "misses"} over all towers (frames looked up while attached)."""
    hits = misses = 0
    for tower in frozen_towers(policy):
        if tower.token_cache is not None:
            hits, misses = hits + tower.token_cache.hits, misses + tower.token_cache.misses
            tower.token_cache = None
    return {"hits": hits, "misses": misses}
