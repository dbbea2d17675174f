"""SigLIP / DINOv2 towers (tiny random configs), OpenVLA's fused tower + projector, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.extras import require
from vlaforge.errors import CheckpointError
from vlaforge.models.vision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FusedMLPProjector,
    FusedVisionTower,
    LinearProjector,
    VisionEncoder,
    VisionTower,
    dinov2_preprocess,
    preprocess_images,
    prismatic_vision_encoder,
    siglip_preprocess,
    tiny_dinov2_config,
    tiny_siglip_config,
)

transformers = require("transformers", "text")


def _frames(b: int = 2, h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (b, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_preprocessing_ranges_and_resize():
    frames = torch.zeros(2, 40, 48, 3, dtype=torch.uint8)
    frames[1] = 255
    s = preprocess_images(frames, siglip_preprocess(32))
    assert s.shape == (2, 3, 32, 32) and s.dtype == torch.float32
    assert torch.allclose(s[0], torch.full_like(s[0], -1.0)) and torch.allclose(
        s[1], torch.full_like(s[1], 1.0)
    )
    d = preprocess_images(frames.numpy(), dinov2_preprocess(32))  # numpy input too
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    assert torch.allclose(d[0].amax(dim=(1, 2)), -mean / std, atol=1e-6)
    assert torch.allclose(d[1].amin(dim=(1, 2)), (1 - mean) / std, atol=1e-6)
    # a random image stays inside the per-channel range (bicubic overshoot is clamped)
    lo, hi = dinov2_preprocess(32).output_range
    r = preprocess_images(_frames(), dinov2_preprocess(32))
    for c in range(3):
        assert lo[c] - 1e-6 <= r[:, c].min() and r[:, c].max() <= hi[c] + 1e-6
    # already the right size: no resampling, exact affine map of the bytes
    same = _frames(1, 32, 32)
    assert torch.allclose(
        preprocess_images(same, siglip_preprocess(32))[0], same[0].permute(2, 0, 1) / 127.5 - 1
    )
    with pytest.raises(ValueError, match="uint8"):
        preprocess_images(np.zeros((1, 8, 8, 3), np.float32), siglip_preprocess(8))


def test_towers_return_patch_features_of_the_chosen_layer():
    torch.manual_seed(0)
    cfg = tiny_dinov2_config(num_layers=3, num_register_tokens=4)
    ref = transformers.Dinov2WithRegistersModel(cfg).eval()
    tower = VisionTower(ref, kind="dinov2", feature_layer=-2)  # wrapper over a full model: explicit layer
    assert tower.num_prefix_tokens == 5 and tower.grid == (4, 4)
    built = VisionTower.from_config(cfg, feature_layer=-2)
    assert built.model.config.num_hidden_layers == 2  # the unused last layer is not built
    assert not any(p.requires_grad for n, p in built.named_parameters() if n.startswith("model.layernorm"))
    px = preprocess_images(_frames(), tower.preprocess)
    with torch.no_grad():
        hs = ref(pixel_values=px, output_hidden_states=True).hidden_states
        built.model.load_state_dict(ref.state_dict(), strict=False)  # same first two layers
        feats = built(px)
    assert feats.shape == (2, 16, 48)
    assert torch.allclose(feats, hs[-2][:, 5:], atol=1e-6)  # 2nd-to-last layer, CLS + registers dropped
    last = VisionTower.from_config(tiny_siglip_config(), feature_layer=None)
    assert last.encode(_frames()).shape == (2, 16, 32)
    with pytest.raises(ValueError, match="feature_layer"):
        VisionTower.from_config(tiny_siglip_config(num_layers=2), feature_layer=-3)


def test_from_pretrained_local_directory(tmp_path):
    torch.manual_seed(1)
    full = transformers.SiglipModel(
        transformers.SiglipConfig(
            vision_config=tiny_siglip_config(num_layers=3).to_dict(),
            text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
            ),
        )
    ).eval()
    full.save_pretrained(str(tmp_path / "siglip"))  # a full image+text SigLIP: we take its vision half
    tower = VisionTower.from_pretrained(tmp_path / "siglip")
    px = preprocess_images(_frames(), tower.preprocess)
    with torch.no_grad():
        want = full.vision_model(pixel_values=px, output_hidden_states=True).hidden_states[-2]
        assert torch.equal(tower(px), want)
    with pytest.raises(CheckpointError, match="not a local Hugging Face model directory"):
        VisionTower.from_pretrained(tmp_path / "absent")  # never a hub download
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a supported vision tower"):
        VisionTower.from_pretrained(tmp_path / "bert")


def test_from_pretrained_refuses_missing_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    transformers.Dinov2Model(tiny_dinov2_config()).save_pretrained(str(tmp_path))
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["encoder.layer.0.mlp.fc1.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing encoder.layer.0.mlp.fc1.weight"):
        VisionTower.from_pretrained(tmp_path)


def test_openvla_fused_encoder_shapes_and_order():
    torch.manual_seed(2)
    dino = VisionTower.from_config(tiny_dinov2_config(num_register_tokens=4))  # 48 wide
    siglip = VisionTower.from_config(tiny_siglip_config())  # 32 wide
    encoder = prismatic_vision_encoder(dino, siglip, llm_dim=64)
    assert isinstance(encoder.projector, FusedMLPProjector)
    assert encoder.projector.fc1.weight.shape == (4 * 80, 80)  # fused width 48 + 32, expanded 4x
    frames = _frames()
    with torch.no_grad():
        fused = encoder.tower(frames)
        tokens = encoder(frames)
        # per patch: DINOv2 channels first, then SigLIP, each with its own preprocessing
        assert torch.equal(fused[..., :48], dino.encode(frames))
        assert torch.equal(fused[..., 48:], siglip.encode(frames))
    assert fused.shape == (2, 16, 80) and tokens.shape == (2, 16, 64)

    pali = VisionEncoder(siglip, LinearProjector(32, 64))  # π0 / PaliGemma shape
    assert pali(frames).shape == (2, 16, 64)


def test_fusion_refuses_different_patch_grids():
    dino = VisionTower.from_config(tiny_dinov2_config(patch_size=4))  # 32 px / 4 = 8x8
    siglip = VisionTower.from_config(tiny_siglip_config(patch_size=8))  # 32 px / 8 = 4x4
    with pytest.raises(ValueError, match=r"same patch grid.*8x8.*4x4"):
        FusedVisionTower({"dino": dino, "siglip": siglip})
    # DINOv2 interpolates its position embeddings: feeding it 16 px frames gives the 4x4 grid too
    dino16 = VisionTower.from_config(tiny_dinov2_config(patch_size=4), image_size=16)
    fused = FusedVisionTower({"dino": dino16, "siglip": siglip})
    assert fused.grid == (4, 4) and fused(_frames()).shape == (2, 16, 48 + 32)
    with pytest.raises(ValueError, match="position embeddings"):
        VisionTower.from_config(tiny_siglip_config(), image_size=64)
