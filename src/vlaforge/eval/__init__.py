"""Closed-loop evaluation: rollouts, success statistics with confidence intervals, reports, videos."""

from vlaforge.eval.expert import ExpertPolicy
from vlaforge.eval.results import EpisodeResult, EvalReport, TaskSummary
from vlaforge.eval.rollout import ObservationHistory, evaluate, rollout
from vlaforge.eval.stats import wilson_interval

__all__ = [
    "EpisodeResult",
    "EvalReport",
    "ExpertPolicy",
    "ObservationHistory",
    "TaskSummary",
    "evaluate",
    "rollout",
    "wilson_interval",
]
