"""`torchvision.models`: the ResNet-18/34 constructors (random initialisation only) and `_utils`."""

from torchvision.models import _utils, resnet
from torchvision.models.resnet import ResNet, resnet18, resnet34

__all__ = ["ResNet", "_utils", "resnet", "resnet18", "resnet34"]
