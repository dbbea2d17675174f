"""`torchvision.transforms.v2.functional`: imported by LeRobot (as F) but only called by its
SharpnessJitter augmentation, which this benchmark does not enable; no kernels are provided."""

__all__: list[str] = []
