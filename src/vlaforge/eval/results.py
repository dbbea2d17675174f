"""What an evaluation produces: one `EpisodeResult` per rollout, summarised into an `EvalReport`,
and its markdown view (`markdown_table`: eval.md and the console table).

Plain dataclasses so that results cross process boundaries (pickling, workers) and serialise to
JSON without custom encoders.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaforge.eval.stats import percentile, wilson_interval
from vlaforge.runtime.safety import KINDS


@dataclass
class EpisodeResult:
    """One rollout.

    latencies_s: wall time of every `policy.predict` call in this episode, in seconds.
    decode_failures: how many of those calls returned a chunk flagged ``info["decode_failed"]`` (a
    token-decoding fallback: π0-FAST, OpenVLA's replaced non-action tokens; executed all the same).
    frames: per step, camera name -> uint8 (Hi, Wi, 3); only when video was recorded (dropped
    once the video is written, so results stay small).
    safety: SafetyFilter interventions of this episode, {"steps_changed": n, <kind>: count, ...}
    (kinds of `vlaforge.runtime.safety.KINDS`); None when no filter ran.
    outcomes: what the environment reports about the episode beyond its own success, from its
    optional `episode_outcomes()` (LIBERO with `watch_tasks`: {"goals_reached": [other tasks whose
    goal held at some step]}, for the language tests); None when the env has no such method.
    """

    task: str
    seed: int
    success: bool
    length: int
    instruction: str
    latencies_s: list[float] = field(default_factory=list)
    decode_failures: int = 0
    fps: float = 10.0
    frames: list[dict[str, np.ndarray]] | None = None
    video: str | None = None
    safety: dict[str, int] | None = None
    outcomes: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "task": self.task,
            "seed": self.seed,
            "success": self.success,
            "length": self.length,
            "instruction": self.instruction,
            "predict_calls": len(self.latencies_s),
            "decode_failures": self.decode_failures,
            "video": self.video,
        }
        if self.safety is not None:
            out["safety"] = dict(self.safety)
        if self.outcomes is not None:
            out["outcomes"] = dict(self.outcomes)
        return out


def sum_safety(episodes: list[EpisodeResult]) -> dict[str, int] | None:
    """Interventions summed over episodes, plus steps and episodes touched; None if no filter ran."""
    filtered = [e for e in episodes if e.safety is not None]
    if not filtered:
        return None
    total: dict[str, int] = {}
    for e in filtered:
        for k, v in e.safety.items():  # type: ignore[union-attr]
            total[k] = total.get(k, 0) + int(v)
    total["steps"] = sum(e.length for e in filtered)
    total["episodes_changed"] = sum(bool(e.safety.get("steps_changed")) for e in filtered)  # type: ignore[union-attr]
    total["episodes"] = len(filtered)
    return total


@dataclass
class TaskSummary:
    """Success statistics of one task over its episodes."""

    task: str
    instruction: str  # of the first seed; the env may vary the phrasing per seed
    instructions: list[str]  # every distinct phrasing, in seed order
    successes: int
    episodes: int
    rate: float
    wilson_lo: float
    wilson_hi: float
    mean_length: float
    median_length: float
    seeds: list[int]
    videos: list[str]
    safety: dict[str, int] | None = None  # `sum_safety` of the task's episodes
    predict_calls: int = 0  # chunks requested over the task's episodes
    decode_failures: int = 0  # of which flagged ``decode_failed`` (see `EpisodeResult`)

    @classmethod
    def from_episodes(cls, task: str, episodes: list[EpisodeResult], confidence: float) -> TaskSummary:
        if not episodes:
            raise ValueError(f"TaskSummary: task '{task}' has no episodes")
        k = sum(e.success for e in episodes)
        n = len(episodes)
        lo, hi = wilson_interval(k, n, confidence)
        lengths = [e.length for e in episodes]
        instructions = list(dict.fromkeys(e.instruction for e in sorted(episodes, key=lambda e: e.seed)))
        return cls(
            task=task,
            instruction=instructions[0],
            instructions=instructions,
            successes=k,
            episodes=n,
            rate=k / n,
            wilson_lo=lo,
            wilson_hi=hi,
            mean_length=float(np.mean(lengths)),
            median_length=float(statistics.median(lengths)),
            seeds=[e.seed for e in episodes],
            videos=[e.video for e in episodes if e.video],
            safety=sum_safety(episodes),
            predict_calls=sum(len(e.latencies_s) for e in episodes),
            decode_failures=sum(e.decode_failures for e in episodes),
        )


@dataclass
class EvalReport:
    """Everything `evaluate` measured, plus the configuration that produced it."""

    tasks: list[TaskSummary]
    episodes: list[EpisodeResult]
    config: dict[str, Any]
    confidence: float = 0.95
    out_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_episodes(
        cls,
        task_order: list[str],
        episodes: list[EpisodeResult],
        config: dict[str, Any],
        confidence: float = 0.95,
    ) -> EvalReport:
        by_task: dict[str, list[EpisodeResult]] = {t: [] for t in task_order}
        for e in episodes:
            by_task[e.task].append(e)
        for eps in by_task.values():
            eps.sort(key=lambda e: e.seed)
        ordered = [e for t in task_order for e in by_task[t]]
        summaries = [TaskSummary.from_episodes(t, by_task[t], confidence) for t in task_order]
        return cls(tasks=summaries, episodes=ordered, config=config, confidence=confidence)

    @property
    def mean_success(self) -> float:
        """Mean of the per-task success rates."""
        return float(self.overall()["mean_success"])

    def to_markdown(self) -> str:
        """The eval.md table (`markdown_table`)."""
        return markdown_table(self)

    def overall(self) -> dict[str, Any]:
        """Mean of per-task rates, with a Wilson interval on the pooled episodes."""
        k = sum(t.successes for t in self.tasks)
        n = sum(t.episodes for t in self.tasks)
        lo, hi = wilson_interval(k, n, self.confidence)
        return {
            "mean_success": float(np.mean([t.rate for t in self.tasks])) if self.tasks else float("nan"),
            "successes": k,
            "episodes": n,
            "wilson_lo": lo,
            "wilson_hi": hi,
            "confidence": self.confidence,
            "decode_failures": sum(t.decode_failures for t in self.tasks),
        }

    def groups(self) -> dict[str, Any] | None:
        """Meta-World MT50 difficulty groups (`vlaforge.envs.tasks.DIFFICULTY_GROUPS`) of which every task was
        evaluated: per group the mean of its task rates (= LeRobot's pooled `per_group` pc_success when
        tasks have equal episodes) with a Wilson interval on its pooled episodes; with all four groups,
        "mean_of_groups" (the four rates averaged, the papers' average over groups). None if no group is whole.
        """
        from vlaforge.envs.tasks import DIFFICULTY_GROUPS

        by_task = {t.task: t for t in self.tasks}
        out: dict[str, Any] = {}
        for group, names in DIFFICULTY_GROUPS.items():
            if not all(name in by_task for name in names):
                continue
            members = [by_task[name] for name in names]
            k = sum(t.successes for t in members)
            n = sum(t.episodes for t in members)
            lo, hi = wilson_interval(k, n, self.confidence)
            out[group] = {
                "tasks": len(members),
                "successes": k,
                "episodes": n,
                "rate": float(np.mean([t.rate for t in members])),
                "wilson_lo": lo,
                "wilson_hi": hi,
            }
        if not out:
            return None
        if len(out) == len(DIFFICULTY_GROUPS):
            out["mean_of_groups"] = float(np.mean([out[g]["rate"] for g in DIFFICULTY_GROUPS]))
        return out

    def safety(self) -> dict[str, int] | None:
        """SafetyFilter interventions over all episodes (`sum_safety`); None when evaluated without one."""
        return sum_safety(self.episodes)

    def latency(self) -> dict[str, Any]:
        """Policy call latency and the control rate it allows (actions executed per call / latency)."""
        lat = [x for e in self.episodes for x in e.latencies_s]
        steps = sum(e.length for e in self.episodes)
        calls = len(lat)
        median = percentile(lat, 50)
        actions_per_call = steps / calls if calls else float("nan")
        fps = self.episodes[0].fps if self.episodes else float("nan")
        return {
            "calls": calls,
            "median_ms": median * 1e3,
            "p90_ms": percentile(lat, 90) * 1e3,
            "mean_ms": float(np.mean(lat)) * 1e3 if lat else float("nan"),
            "actions_per_call": actions_per_call,
            "predict_hz": 1.0 / median if calls and median > 0 else float("nan"),
            "max_control_hz": actions_per_call / median if calls and median > 0 else float("nan"),
            "env_fps": fps,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": {
                t.task: {
                    "successes": t.successes,
                    "episodes": t.episodes,
                    "rate": t.rate,
                    "wilson_lo": t.wilson_lo,
                    "wilson_hi": t.wilson_hi,
                    "mean_length": t.mean_length,
                    "median_length": t.median_length,
                    "instruction": t.instruction,
                    "instructions": t.instructions,
                    "seeds": t.seeds,
                    "videos": t.videos,
                    "predict_calls": t.predict_calls,
                    "decode_failures": t.decode_failures,
                    **({} if t.safety is None else {"safety": t.safety}),
                }
                for t in self.tasks
            },
            "overall": self.overall(),
            **({} if self.groups() is None else {"groups": self.groups()}),
            **({} if self.safety() is None else {"safety": self.safety()}),
            "latency": self.latency(),
            "config": self.config,
            "episodes": [e.to_json() for e in self.episodes],
        }


def pct(x: float) -> str:
    """A rate in [0, 1] as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def markdown_table(report: EvalReport) -> str:
    """The per-task table with an overall row, plus a line on policy latency."""
    conf = int(round(100 * report.confidence))
    cfg = report.config
    lines = []
    title = cfg.get("policy", "policy")
    lines.append(f"# Evaluation of {title}")
    lines.append("")
    seeds = cfg.get("seeds", ["?", "?"])
    where = (
        f"protocol `{cfg['protocol']}`"
        if cfg.get("protocol") == "lerobot"
        else f"split `{cfg.get('split', '?')}`"
    )
    lines.append(
        f"{where}, {cfg.get('episodes', '?')} episodes per task "
        f"(seeds {seeds[0]}–{seeds[1]}), executor `{cfg.get('executor_label', '?')}`"
    )
    lines.append("")
    lines.append(f"| task | success | rate | {conf}% CI | mean len | median len | instruction |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for t in report.tasks:
        instr = t.instruction.replace("|", "\\|")
        if len(t.instructions) > 1:
            instr += f" (+{len(t.instructions) - 1} more)"
        lines.append(
            f"| {t.task} | {t.successes}/{t.episodes} | {pct(t.rate)} | {pct(t.wilson_lo)}–{pct(t.wilson_hi)} "
            f"| {t.mean_length:.1f} | {t.median_length:.1f} | {instr} |"
        )
    o = report.overall()
    lines.append(
        f"| **mean** | {o['successes']}/{o['episodes']} | **{pct(o['mean_success'])}** "
        f"| {pct(o['wilson_lo'])}–{pct(o['wilson_hi'])} | | | |"
    )
    lines.extend(group_table(report))
    lat = report.latency()
    if lat["calls"]:
        lines.append("")
        lines.append(
            f"Policy latency: median {lat['median_ms']:.3g} ms, p90 {lat['p90_ms']:.3g} ms over {lat['calls']} calls; "
            f"{lat['actions_per_call']:.1f} actions per call → up to {lat['max_control_hz']:.0f} Hz control "
            f"(the env runs at {lat['env_fps']:g} Hz)."
        )
    if o["decode_failures"]:
        failed = ", ".join(
            f"{t.task} {t.decode_failures}/{t.predict_calls}" for t in report.tasks if t.decode_failures
        )
        lines.append("")
        lines.append(
            f"**Decode failures**: {o['decode_failures']} chunks were token-decoding fallbacks and were "
            f"executed as such (per task, failed/requested chunks: {failed})."
        )
    lines.extend(safety_table(report))
    return "\n".join(lines) + "\n"


def group_table(report: EvalReport) -> list[str]:
    """Lines of the MT50 difficulty-group section (empty when no group was evaluated whole)."""
    groups = report.groups()
    if groups is None:
        return []
    conf = int(round(100 * report.confidence))
    lines = ["", "## Difficulty groups (Seo et al. 2022, as LeRobot reports them)", ""]
    lines.append(f"| group | tasks | success | rate | {conf}% CI |")
    lines.append("|---|---:|---:|---:|---:|")
    for name, g in groups.items():
        if name == "mean_of_groups":
            continue
        lines.append(
            f"| {name} | {g['tasks']} | {g['successes']}/{g['episodes']} | {pct(g['rate'])} "
            f"| {pct(g['wilson_lo'])}–{pct(g['wilson_hi'])} |"
        )
    if "mean_of_groups" in groups:
        lines.append(f"| **mean of the 4 groups** | | | **{pct(groups['mean_of_groups'])}** | |")
    return lines


def safety_table(report: EvalReport) -> list[str]:
    """Lines of the SafetyFilter section (empty when evaluated without one): per task, steps the filter
    changed, episodes it touched, and the count of each intervention kind."""
    total = report.safety()
    if total is None:
        return []
    kinds = [k for k in KINDS if total.get(k)]  # only the kinds that happened, to keep the table narrow
    lines = ["", "## Safety filter", ""]
    if not total["steps_changed"]:
        lines.append(f"No interventions in {total['steps']} filtered steps ({total['episodes']} episodes).")
        return lines
    lines.append("| task | steps changed | episodes changed | " + " | ".join(kinds) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(kinds))
    rows = [(t.task, t.safety) for t in report.tasks if t.safety is not None] + [("**all**", total)]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['steps_changed']}/{s['steps']} | {s['episodes_changed']}/{s['episodes']} | "
            + " | ".join(str(s.get(k, 0)) for k in kinds)
            + " |"
        )
    return lines
