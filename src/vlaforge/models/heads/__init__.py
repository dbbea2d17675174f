"""Action heads: features (B, F) -> action chunks (B, H, A) in the normalized action space.

Every head implements :class:`ActionHead` (``loss`` and ``sample``); build one by name with
:func:`make_head` (``diffusion``, ``flow``, ``binned``, ``l1``, ``mse``).
"""

from vlaforge.models.heads.base import ActionHead, masked_mean
from vlaforge.models.heads.binned import BinnedHead, UniformBinner
from vlaforge.models.heads.diffusion import DiffusionHead
from vlaforge.models.heads.flow import FlowHead
from vlaforge.models.heads.registry import HEADS, make_head
from vlaforge.models.heads.regression import RegressionHead
from vlaforge.models.heads.samplers import DDIMSampler, DDPMSampler, EulerSampler
from vlaforge.models.heads.schedules import CosineSchedule, sample_flow_time

__all__ = [
    "ActionHead",
    "BinnedHead",
    "CosineSchedule",
    "DDIMSampler",
    "DDPMSampler",
    "DiffusionHead",
    "EulerSampler",
    "FlowHead",
    "HEADS",
    "RegressionHead",
    "UniformBinner",
    "make_head",
    "masked_mean",
    "sample_flow_time",
]
