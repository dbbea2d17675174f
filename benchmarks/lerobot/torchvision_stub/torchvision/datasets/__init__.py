"""`torchvision.datasets`: names only, so that `import timm` works (its ``timm.data.dataset_factory``
imports them at module level; the timm parity check never builds a dataset). Each class raises on use."""

from __future__ import annotations


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"torchvision stub: datasets.{type(self).__name__} is not available (the stub serves the peer "
            "checks and LeRobot benchmarks only)"
        )


class CIFAR10(_Unavailable): ...


class CIFAR100(_Unavailable): ...


class MNIST(_Unavailable): ...


class KMNIST(_Unavailable): ...


class FashionMNIST(_Unavailable): ...


class ImageFolder(_Unavailable): ...


class Places365(_Unavailable): ...


class INaturalist(_Unavailable): ...


class QMNIST(_Unavailable): ...


class ImageNet(_Unavailable): ...
