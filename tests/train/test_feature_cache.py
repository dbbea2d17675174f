"""Training with a frozen Lite0 tower reads its tokens from the per-frame cache (train/feature_cache.py):
the same training as without it up to float rounding, bit-exact across a resume, skipped where the
frames change every sample (augmentation)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.policies.test_pretrained_recipes import SMALL, _package_keys
from vlaforge.data import Dataset, write_synthetic_dataset
from vlaforge.models.vision import EfficientNetLite0
from vlaforge.policies.recipes import make_policy
from vlaforge.train import feature_cache, trainer
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train


@pytest.fixture(scope="module")
def lite0_pth(tmp_path_factory):
    torch.manual_seed(0)
    net = EfficientNetLite0("logits")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):  # tokens of O(1), not PyTorch's fading default init
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5)
    path = tmp_path_factory.mktemp("lite0") / "lite0.pth"
    torch.save(_package_keys(net), path)
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ds"
    return write_synthetic_dataset(root, episodes=2, length=10, length_jitter=0, height=32, width=32)


def _dataset(root):
    ds = Dataset(root, history=1, chunk=4)
    ds.cache_frames()
    return ds


def _policy(ds, pth, **overrides):
    torch.manual_seed(0)
    return make_policy("octo-lite0", ds, pretrained={"vision": str(pth)}, vision=SMALL, **overrides)


def _cfg(**kw):
    base = dict(steps=4, batch_size=4, warmup_steps=1, num_workers=0, log_every=1, save_every=2, ema_decay=0)
    return TrainConfig(**{**base, **kw})


def _weights(run):
    return load_file(str(run / "policy" / "model.safetensors"))


def test_training_reads_each_frame_once_and_matches_the_live_tower(
    data_root, lite0_pth, tmp_path, monkeypatch
):
    ds = _dataset(data_root)
    counts = {}

    def detach(policy):
        counts.update(feature_cache.detach_feature_caches(policy))
        return counts

    monkeypatch.setattr(trainer, "detach_feature_caches", detach)
    cached = train(_policy(ds, lite0_pth, augment=False), ds, _cfg(), tmp_path / "cached", progress=False)
    assert counts["hits"] == 4 * 4 * 2 and counts["misses"] == 0  # steps x batch x cameras, all cached
    (manifest,) = (data_root / ".cache" / "features").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["unique"] <= 2 * 20  # every frame of both cameras, once

    live = train(_policy(ds, lite0_pth, augment=False), ds, _cfg(cache_features=False), tmp_path / "live",
                 progress=False)  # fmt: skip
    assert live.final_loss == pytest.approx(cached.final_loss, rel=1e-4)
    a, b = _weights(tmp_path / "cached"), _weights(tmp_path / "live")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert feature_cache.frozen_towers(_policy(ds, lite0_pth))[0].token_cache is None


def test_a_resumed_run_with_cached_tokens_is_bit_exact(data_root, lite0_pth, tmp_path):
    ds = _dataset(data_root)
    full, split = tmp_path / "full", tmp_path / "split"
    train(_policy(ds, lite0_pth, augment=False), ds, _cfg(), full, progress=False)
    # the run as a kill after step 2 leaves it: checkpoint 2, nothing later
    shutil.copytree(full, split)
    shutil.rmtree(split / "checkpoints" / "00000004")
    shutil.rmtree(split / "policy")
    train(_policy(ds, lite0_pth, augment=False), ds, _cfg(), split, progress=False, resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nothing_is_cached_where_frames_change_or_no_frame_cache(data_root, lite0_pth):
    ds = _dataset(data_root)
    augmented = _policy(ds, lite0_pth)  # octo-lite0 augments by default
    assert "augmentation" in feature_cache.attach_feature_caches(augmented, ds)
    assert feature_cache.frozen_towers(augmented)[0].token_cache is None
    plain = _policy(ds, lite0_pth, augment=False)
    assert feature_cache.attach_feature_caches(plain, Dataset(data_root, history=1, chunk=4)) is None
    from vlaforge.data import MixtureDataset

    mixture = MixtureDataset({"a": ds, "b": _dataset(data_root)}, None, seed=0)
    assert feature_cache.frame_datasets(mixture) == [mixture.datasets["a"], mixture.datasets["b"]]
