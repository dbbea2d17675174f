"""Run-time pieces between a policy and the robot: chunk execution, real-time chunking, safety filtering."""

from vlaforge.runtime.executor import ChunkExecutor, ExecutorConfig, ensemble_action, ensemble_weights
from vlaforge.runtime.rtc import aligned_prefix, predict_rtc, rtc_predict, rtc_weights, supports_rtc

__all__ = [
    "ChunkExecutor",
    "ExecutorConfig",
    "aligned_prefix",
    "ensemble_action",
    "ensemble_weights",
    "predict_rtc",
    "rtc_predict",
    "rtc_weights",
    "supports_rtc",
]
