"""A minimal stand-in for `torchvision`, for the LeRobot side of benchmarks/lerobot/run.py only.

LeRobot 0.3.2 imports torchvision in its dataset code (video decoding, image transforms, PIL -> tensor)
and in its ACT and diffusion policies (ResNet backbones, frozen batch norm, crops). The only torchvision
build on PyPI that matches torch 2.13.0 is a CUDA build that fails to import on this CPU-only machine,
so the comparison environment puts this package first on PYTHONPATH instead. It provides exactly what
those code paths use (benchmarks/lerobot/README.md lists it), implemented for real, not mocked:

* ``set_video_backend`` / ``get_video_backend`` and ``io.VideoReader`` with the "pyav" backend: the
  same PyAV calls torchvision makes (open, keyframe seek, decode, ``to_rgb().to_ndarray()``), so
  LeRobot's ``decode_video_frames_torchvision`` costs what it costs with the real package;
* ``models.resnet18`` / ``resnet34`` (random initialisation only; ``weights`` must be None),
  ``models._utils.IntermediateLayerGetter``, ``ops.misc.FrozenBatchNorm2d``;
* ``transforms.CenterCrop`` / ``RandomCrop`` / ``ToTensor`` and ``transforms.v2.Transform`` /
  ``Identity`` (LeRobot's default, disabled, image-transform pipeline).

Anything else raises AttributeError / ImportError: a benchmark must never silently run a fake.
It is never installed into /work/main/.venv; vlaforge itself does not use torchvision.
"""

from __future__ import annotations

from torchvision import io, models, ops, transforms

__version__ = "0.0.0+vlaforge.benchmark.stub"
IS_STUB = True  # benchmarks/lerobot/run.py checks this before trusting a measurement

_VIDEO_BACKENDS = ("pyav",)
_video_backend = "pyav"


def set_video_backend(backend: str) -> None:
    """Select the video decoding backend; only "pyav" exists here (torchvision also has
    "video_reader" and "cuda", which need its compiled extensions)."""
    global _video_backend
    if backend not in _VIDEO_BACKENDS:
        raise RuntimeError(
            f"torchvision stub: video backend {backend!r} is not available, only {list(_VIDEO_BACKENDS)} "
            "(the real backends need torchvision's compiled video extensions)"
        )
    _video_backend = backend


def get_video_backend() -> str:
    return _video_backend


__all__ = ["IS_STUB", "get_video_backend", "io", "models", "ops", "set_video_backend", "transforms"]
