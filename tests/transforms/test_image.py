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
