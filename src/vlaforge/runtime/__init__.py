"""Run-time pieces between a policy and the robot: chunk execution (and, later, safety filtering)."""

from vlaforge.runtime.executor import ChunkExecutor, ExecutorConfig, ensemble_action, ensemble_weights

__all__ = ["ChunkExecutor", "ExecutorConfig", "ensemble_action", "ensemble_weights"]
