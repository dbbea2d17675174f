"""vlaforge: Vision-Language-Action robot policies in one PyTorch code base."""

__version__ = "0.1.0"
