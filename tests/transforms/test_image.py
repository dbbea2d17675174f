import pytest
import torch

from vlaforge.transforms.image import AugmentConfig, augment, resize, to_float_image


def test_to_float_image_layout_and_range():
    img = torch.zeros(2, 8, 6, 3, dtype=torch.uint8)
    img[..., 0] = 255
    x = to_float_image(img)
    assert x.shape == (2, 3, 8, 6)
    assert x[:, 0].eq(1).all() and x[:, 1:].eq(0).all()
    with pytest.raises(TypeError):
        to_float_image(img.float())


def test_augment_keeps_shape_range_and_varies_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = augment(x, AugmentConfig(), generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y[0], x[0])
    y2 = augment(x, AugmentConfig(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, y2)  # deterministic given the generator


def test_identity_augment_is_identity():
    x = torch.rand(2, 3, 16, 16)
    cfg = AugmentConfig(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0.0, contrast=(1, 1), saturation=(1, 1)
    )
    assert torch.allclose(augment(x, cfg), x, atol=1e-5)


def test_resize_and_config_validation():
    assert resize(torch.rand(1, 3, 16, 16), (8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))


def test_resize_with_pad_top_left_keeps_the_aspect_and_pads_top_and_left_with_black():
    from vlaforge.models.vision.preprocess import ImagePreprocess, preprocess_images
    from vlaforge.transforms.image import resize_with_pad_top_left

    g = torch.Generator().manual_seed(0)
    wide = torch.rand(2, 3, 24, 32, generator=g)  # fits the width: 8 black rows on top, pixels unchanged
    out = resize_with_pad_top_left(wide, (32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[..., :8, :], torch.zeros(2, 3, 8, 32))
    torch.testing.assert_close(out[..., 8:, :], wide, rtol=0, atol=1e-6)
    tall = torch.rand(1, 3, 64, 40, generator=g)  # halved to 32 x 20: 12 black columns on the left
    out = resize_with_pad_top_left(tall, (32, 32))
    assert torch.equal(out[..., :12], torch.zeros(1, 3, 32, 12))
    ref = torch.nn.functional.interpolate(tall, size=(32, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[..., 12:], ref, rtol=0, atol=0)
    # through a tower's preprocessing: black padding is -1 after SigLIP's (x - 0.5) / 0.5
    spec = ImagePreprocess(32, (0.5,) * 3, (0.5,) * 3, resize="pad-top-left")
    px = preprocess_images(torch.full((1, 16, 32, 3), 255, dtype=torch.uint8), spec)  # (1, 3, 32, 32)
    assert torch.equal(px[..., :16, :], -torch.ones(1, 3, 16, 32)) and torch.equal(
        px[..., 16:, :], torch.ones(1, 3, 16, 32)
    )
    with pytest.raises(ValueError, match="resize must be one of"):
        ImagePreprocess(32, (0.5,) * 3, (0.5,) * 3, resize="crop")


def test_resize_with_pad_centred_splits_the_black_padding_and_leaves_frames_of_the_size_alone():
    from vlaforge.models.vision.preprocess import ImagePreprocess, preprocess_images
    from vlaforge.transforms.image import resize_with_pad_centred

    g = torch.Generator().manual_seed(0)
    wide = torch.rand(2, 3, 48, 64, generator=g)  # halved to 24 x 32: 4 black rows above, 4 below
    out = resize_with_pad_centred(wide, (32, 32))
    ref = torch.nn.functional.interpolate(wide, size=(24, 32), mode="bilinear", align_corners=False)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[..., :4, :], torch.zeros(2, 3, 4, 32))
    assert torch.equal(out[..., 28:, :], torch.zeros(2, 3, 4, 32))
    torch.testing.assert_close(out[..., 4:28, :], ref.clamp(0, 1), rtol=0, atol=0)
    tall = torch.rand(1, 3, 64, 42, generator=g)  # halved to 32 x 21: 11 columns, 5 on the left, 6 right
    out = resize_with_pad_centred(tall, (32, 32))
    assert torch.equal(out[..., :5], torch.zeros(1, 3, 32, 5)) and torch.equal(
        out[..., 26:], torch.zeros(1, 3, 32, 6)
    )
    assert out[..., 5:26].abs().sum() > 0
    same = torch.rand(1, 3, 32, 32, generator=g)
    assert resize_with_pad_centred(same, (32, 32)) is same  # openpi resizes only frames of another size
    # through a tower's preprocessing: black padding is -1 after SigLIP's (x - 0.5) / 0.5
    spec = ImagePreprocess(32, (0.5,) * 3, (0.5,) * 3, resize="pad-centre")
    px = preprocess_images(torch.full((1, 16, 32, 3), 255, dtype=torch.uint8), spec)  # (1, 3, 32, 32)
    assert torch.equal(px[..., :8, :], -torch.ones(1, 3, 8, 32))
    assert torch.equal(px[..., 8:24, :], torch.ones(1, 3, 16, 32))
    assert torch.equal(px[..., 24:, :], -torch.ones(1, 3, 8, 32))
