"""`torchvision.ops`: only `misc.FrozenBatchNorm2d` (LeRobot's ACT backbone norm layer)."""

from torchvision.ops import misc
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["FrozenBatchNorm2d", "misc"]
