"""Subtask labels (π0.5): per-frame "what am I doing now" texts, derived from Meta-World's scripted experts.

π0.5 first predicts a short text subtask ("grasp the puck") and then actions conditioned on it. A dataset
with labels stores them like its tasks: an int64 `subtask_index` column in the data files and
meta/subtasks.parquet (written by `DatasetWriter(subtasks=True)`), and its samples carry
`item["subtask"]` (str), which `default_collate` turns into `batch["subtask"]`, a list of B strings.

Meta-World ships no such labels, but every scripted expert runs the same programme: move above the
object, descend, (close the gripper,) then drive the object to its goal. `segment_phases` recovers three
canonical phases from what was recorded:

    reach  from the start until the gripper starts closing (grasping tasks) or the hand starts moving
           the object (pressing / pushing / pulling tasks)
    grasp  grasping tasks only: from the close command until the object starts moving with the hand
    act    the rest: "push the puck to the goal", "press the button", ...

Signals, best first:
  * the object's true position (`object_pos`, the privileged observation), available while recording
    and when an existing recording is replayed in the simulator: the object "moves with the hand" when
    it travels >= MOVE_SPEED per step for MOVE_SUSTAIN steps while the hand is within NEAR of it;
  * the action stream alone (`--from-columns`): the gripper command rising marks the grasp, and the
    next jump of the xyz command (the expert switching to its next sub-goal) marks the start of act.
    Measured on 186 expert episodes of the 48 MT50 tasks that manipulate something, it agrees with the
    object-based labels on 93 % of frames for grasping tasks but only 71 % for pressing/pushing/turning
    tasks, whose moment of contact leaves no trace in the stored state and action (94 % over the nine MT10
    tasks besides reach). Recordings made by `vlaforge record` are therefore replayed when possible.

Phases are forced into order (reach, grasp, act; each at most once), and each task names them with a
small phrase table (`TASK_PHRASES`); unknown tasks get "reach the object" / "grasp the object" / "move to
the goal". `add_subtasks` labels an existing recording in place, atomically (the dataset side, storing the
texts, is `vlaforge.data.subtasks.write_subtask_labels`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.dataset import Dataset
from vlaforge.data.errors import DatasetError
from vlaforge.data.meta import load_meta
from vlaforge.data.subtasks import write_subtask_labels
from vlaforge.envs.instructions import HELDOUT_REPHRASINGS, INSTRUCTIONS
from vlaforge.envs.tasks import canonical_task
from vlaforge.types import ACTION_KEY, STATE_KEY

REACH, GRASP, ACT = 0, 1, 2
PHASES = ("reach", "grasp", "act")

# The expert's gripper command counts as "closing" once it exceeds its first value by GRIP_RISE (experts
# close with efforts from 0.1 to 1.0) for GRIP_SUSTAIN consecutive frames (a one-step flicker is not a grasp).
GRIP_RISE = 0.05
GRIP_SUSTAIN = 3
# A step change of the xyz command this large (actions are in [-1, 1]) only happens when the expert
# switches sub-goal: within one sub-goal the command is p * (target - hand), continuous in the hand position.
SWITCH_JUMP = 0.25
# The object "moves with the hand": at least 1.5 mm per 12.5 ms step (0.12 m/s) for 3 steps while the hand
# is within 12 cm of it. The speed floor ignores objects settling after reset; the distance ignores objects
# that move on their own (doors swinging, lids dropping) while the hand is still far away.
MOVE_SPEED = 0.0015
MOVE_SUSTAIN = 3
NEAR = 0.12

SUMMARY_SUFFIX = ".record_summary.json"  # `vlaforge record` writes <out>.record_summary.json next to <out>


@dataclass(frozen=True)
class Phrases:
    """How one task names its phases. `act` None: the task is only reaching (every frame is `reach`)."""

    reach: str
    grasp: str
    act: str | None

    def text(self, phase: int) -> str:
        if self.act is None:
            return self.reach
        return (self.reach, self.grasp, self.act)[phase]


# Meta-World task -> (the object the hand goes for, what the last phase does with it).
TASK_PHRASES: dict[str, tuple[str, str | None]] = {
    "assembly-v3": ("ring", "put the ring on the peg"),
    "basketball-v3": ("ball", "put the ball in the hoop"),
    "bin-picking-v3": ("cube", "move the cube to the other bin"),
    "box-close-v3": ("lid", "put the lid on the box"),
    "button-press-topdown-v3": ("button", "press the button down"),
    "button-press-topdown-wall-v3": ("button", "press the button down"),
    "button-press-v3": ("button", "press the button"),
    "button-press-wall-v3": ("button", "press the button"),
    "coffee-button-v3": ("coffee machine button", "press the button"),
    "coffee-pull-v3": ("mug", "pull the mug out of the coffee machine"),
    "coffee-push-v3": ("mug", "push the mug under the coffee machine"),
    "dial-turn-v3": ("dial", "turn the dial"),
    "disassemble-v3": ("ring", "lift the ring off the peg"),
    "door-close-v3": ("door", "push the door closed"),
    "door-lock-v3": ("lock", "turn the lock down"),
    "door-open-v3": ("door handle", "pull the door open"),
    "door-unlock-v3": ("lock", "turn the lock back"),
    "hand-insert-v3": ("puck", "move the puck into the hole"),
    "drawer-close-v3": ("drawer", "push the drawer closed"),
    "drawer-open-v3": ("drawer handle", "pull the drawer open"),
    "faucet-open-v3": ("faucet handle", "turn the faucet on"),
    "faucet-close-v3": ("faucet handle", "turn the faucet off"),
    "hammer-v3": ("hammer", "hammer the nail in"),
    "handle-press-side-v3": ("handle", "press the handle down"),
    "handle-press-v3": ("handle", "press the handle down"),
    "handle-pull-side-v3": ("handle", "pull the handle up"),
    "handle-pull-v3": ("handle", "pull the handle up"),
    "lever-pull-v3": ("lever", "pull the lever up"),
    "pick-place-wall-v3": ("puck", "move the puck over the wall to the goal"),
    "pick-out-of-hole-v3": ("puck", "lift the puck out of the hole"),
    "pick-place-v3": ("puck", "move the puck to the goal"),
    "plate-slide-v3": ("plate", "slide the plate into the goal"),
    "plate-slide-side-v3": ("plate", "slide the plate into the goal"),
    "plate-slide-back-v3": ("plate", "slide the plate out of the goal"),
    "plate-slide-back-side-v3": ("plate", "slide the plate out of the goal"),
    "peg-insert-side-v3": ("peg", "insert the peg into the hole"),
    "peg-unplug-side-v3": ("peg", "pull the peg out"),
    "soccer-v3": ("ball", "push the ball into the goal"),
    "stick-push-v3": ("stick", "push the box with the stick"),
    "stick-pull-v3": ("stick", "pull the box with the stick"),
    "push-v3": ("puck", "push the puck to the goal"),
    "push-wall-v3": ("puck", "push the puck around the wall to the goal"),
    "push-back-v3": ("puck", "pull the puck back to the goal"),
    "reach-v3": ("goal", None),
    "reach-wall-v3": ("goal", None),
    "shelf-place-v3": ("block", "put the block on the shelf"),
    "sweep-into-v3": ("puck", "sweep the puck into the hole"),
    "sweep-v3": ("puck", "sweep the puck off the table"),
    "window-open-v3": ("window handle", "slide the window open"),
    "window-close-v3": ("window handle", "slide the window closed"),
}
GENERIC_PHRASES = Phrases("reach the object", "grasp the object", "move to the goal")


def phrases_for(task: str | None) -> Phrases:
    """The phase names of a Meta-World task ('push' or 'push-v3'); generic ones for anything else."""
    if task is None:
        return GENERIC_PHRASES
    key = task.strip().lower().replace("_", "-")
    key = key if key.endswith("-v3") else key + "-v3"
    if key not in TASK_PHRASES:
        return GENERIC_PHRASES
    noun, act = TASK_PHRASES[key]
    return Phrases(f"reach the {noun}", f"grasp the {noun}", act)


# ---------------------------------------------------------------------------------------- derivation


def _check_trace(state: np.ndarray, action: np.ndarray, object_pos: np.ndarray | None) -> None:
    if state.ndim != 2 or state.shape[1] < 3:
        raise ValueError(f"state: expected (T, >=3) with the hand position first, got {state.shape}")
    if action.ndim != 2 or action.shape[1] != 4:
        raise ValueError(f"action: expected (T, 4) = (dx, dy, dz, gripper), got {action.shape}")
    if len(state) != len(action) or len(state) == 0:
        raise ValueError(f"state and action need the same T > 0, got {len(state)} and {len(action)}")
    if object_pos is not None and object_pos.shape != (len(state), 3):
        raise ValueError(f"object_pos: expected ({len(state)}, 3), got {object_pos.shape}")


def _first_sustained(mask: np.ndarray, start: int, sustain: int) -> int | None:
    """First t >= start with mask[t : t + sustain] all True (shorter at the end of the episode)."""
    for t in range(max(start, 0), len(mask)):
        if mask[t : t + sustain].all():
            return t
    return None


def grasp_onset(action: np.ndarray) -> int | None:
    """Frame at which the gripper command starts closing (rises above its first value); None if never."""
    grip = np.asarray(action, np.float64)[:, 3]
    return _first_sustained(grip > grip[0] + GRIP_RISE, 1, GRIP_SUSTAIN)


def subgoal_switches(action: np.ndarray) -> np.ndarray:
    """Frames t where the xyz command jumps (the expert switched to its next sub-goal at t)."""
    xyz = np.asarray(action, np.float64)[:, :3]
    jump = np.abs(np.diff(xyz, axis=0)).max(axis=1) if len(xyz) > 1 else np.zeros(0)  # (T-1,)
    return np.flatnonzero(jump > SWITCH_JUMP) + 1


def object_moved_by_hand(state: np.ndarray, object_pos: np.ndarray, start: int = 1) -> int | None:
    """First frame >= start at which the object moves with the hand near it (see MOVE_SPEED, NEAR)."""
    obj = np.asarray(object_pos, np.float64)  # (T, 3)
    hand = np.asarray(state, np.float64)[:, :3]  # (T, 3)
    speed = np.zeros(len(obj))
    speed[1:] = np.linalg.norm(np.diff(obj, axis=0), axis=1)  # motion that arrived at frame t
    moving = (speed >= MOVE_SPEED) & (np.linalg.norm(hand - obj, axis=1) <= NEAR)
    return _first_sustained(moving, max(start, 1), MOVE_SUSTAIN)


def segment_phases(state: np.ndarray, action: np.ndarray, object_pos: np.ndarray | None = None) -> np.ndarray:
    """Phase of every frame, int64 (T,) in {REACH, GRASP, ACT}, never decreasing.

    state: (T, >=3) hand xyz first (Meta-World's recorded state is hand xyz + gripper opening).
    action: (T, 4) expert actions (dx, dy, dz, gripper effort; +1 closes).
    object_pos: (T, 3) true object position at each frame, when known (recording, replay).
    Without object_pos, act starts at the first sub-goal switch after the grasp, and for tasks without a
    grasp at the last sub-goal switch (the expert's final sub-goal is the manipulation).
    """
    state = np.asarray(state)
    action = np.asarray(action)
    obj = None if object_pos is None else np.asarray(object_pos, np.float64)
    _check_trace(state, action, obj)
    phases = np.full(len(action), REACH, np.int64)
    onset = grasp_onset(action)
    if onset is not None:
        phases[onset:] = GRASP
    if obj is not None:
        act = object_moved_by_hand(state, obj, 1 if onset is None else onset + 1)
    else:
        switches = subgoal_switches(action)
        if onset is not None:
            later = switches[switches > onset]
            act = int(later[0]) if len(later) else None
        else:
            act = int(switches[-1]) if len(switches) else None
    if act is not None:
        phases[act:] = ACT
    return phases


def episode_subtasks(
    task: str | None, state: np.ndarray, action: np.ndarray, object_pos: np.ndarray | None = None
) -> list[str]:
    """One subtask text per frame: `segment_phases` named with `phrases_for(task)`."""
    names = phrases_for(task)
    return [names.text(int(p)) for p in segment_phases(state, action, object_pos)]


# ----------------------------------------------------------------------------------------- reporting


def phase_shares(subtasks: Sequence[str]) -> dict[str, float]:
    """Share of frames of each text, in order of first appearance."""
    counts: dict[str, int] = {}
    for text in subtasks:
        counts[text] = counts.get(text, 0) + 1
    return {text: n / len(subtasks) for text, n in counts.items()}


@dataclass
class PhaseSummary:
    """Mean share of frames per phase text over the episodes of one task, and where the labels came from
    ("record": true object positions while recording, "replay": the same from a simulator replay,
    "columns": stored state and action only)."""

    episodes: int = 0
    sources: set[str] = field(default_factory=set)
    _sums: dict[str, float] = field(default_factory=dict)

    def add(self, subtasks: Sequence[str], source: str) -> None:
        self.episodes += 1
        self.sources.add(source)
        for text, share in phase_shares(subtasks).items():
            self._sums[text] = self._sums.get(text, 0.0) + share

    @property
    def shares(self) -> dict[str, float]:
        return {text: s / self.episodes for text, s in self._sums.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "sources": sorted(self.sources),
            "shares": {text: round(share, 4) for text, share in self.shares.items()},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PhaseSummary:
        n = int(obj["episodes"])
        sums = {str(text): float(share) * n for text, share in obj["shares"].items()}
        return cls(n, set(obj["sources"]), sums)


def format_phase_table(summaries: dict[str, PhaseSummary]) -> str:
    """Per task: episodes, label source, and the phases with their mean share of frames."""
    rows = [["task", "episodes", "source", "phases (mean share of frames)"]]
    for task, s in summaries.items():
        phases = " -> ".join(f"{text} {share:.0%}" for text, share in s.shares.items())
        rows.append([task, str(s.episodes), "+".join(sorted(s.sources)), phases])
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths)), r[3]]).rstrip() for r in rows)


# ------------------------------------------------------------------------------------- add-subtasks


@dataclass(frozen=True)
class EpisodeOrigin:
    """What is known about how an episode was recorded: its Meta-World task and the reset seed/split."""

    task: str | None
    seed: int | None = None
    split: str | None = None


def episode_origins(root: Path, tasks_by_episode: list[str]) -> list[EpisodeOrigin]:
    """Meta-World task (and seed, split) of every episode of a recording at `root`.

    From `<root>.record_summary.json` when `vlaforge record` left one next to the dataset (task, seed and
    split of every episode, so it can be replayed); otherwise from the instruction text, which names one
    task in `envs/instructions.py` (no seed: labels then come from the stored columns).
    """
    by_text = {text: task for task, texts in INSTRUCTIONS.items() for text in texts}
    by_text.update({text: task for task, text in HELDOUT_REPHRASINGS.items()})
    origins = [EpisodeOrigin(by_text.get(text)) for text in tasks_by_episode]
    summary_path = root.parent / (root.name + SUMMARY_SUFFIX)
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            split = summary["config"]["split"]
            for task, entry in summary["tasks"].items():
                for ep, seed in zip(entry["episode_indices"], entry["seeds"], strict=True):
                    if 0 <= ep < len(origins):
                        origins[ep] = EpisodeOrigin(task, int(seed), str(split))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            warnings.warn(
                f"{summary_path}: cannot read episode seeds ({e}); labelling from columns", stacklevel=2
            )
            origins = [EpisodeOrigin(o.task) for o in origins]
    return origins


class _Replayer:
    """Re-runs recorded actions in a physics-only Meta-World env to read the true object positions.

    Resets are deterministic, so stepping the stored actions from the stored seed reproduces the
    recording; the hand state is compared frame by frame and a mismatch raises instead of mislabelling.
    """

    def __init__(self) -> None:
        self._env: Any = None

    def object_positions(self, origin: EpisodeOrigin, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        from vlaforge.envs.metaworld_env import make_env  # MuJoCo and Meta-World: only when replaying

        assert origin.task is not None and origin.seed is not None
        if self._env is None or (self._env.task, self._env.split) != (origin.task, origin.split):
            self.close()
            self._env = make_env(
                origin.task, split=origin.split or "train", cameras=("corner",), image_size=16
            )
            self._env.render_images = False
        env = self._env
        obs = env.reset(origin.seed)
        out = np.empty((len(action), 3), np.float64)  # (T, 3)
        for t in range(len(action)):
            if not np.allclose(obs.state, state[t], atol=1e-5):
                raise DatasetError(
                    f"{origin.task} seed {origin.seed}: replayed state {obs.state} differs from the recorded "
                    f"{state[t]} at frame {t}; the recording does not match its summary"
                )
            out[t] = env.privileged_state[4:7]
            if t + 1 < len(action):
                obs, *_ = env.step(action[t])
        return out

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


SOURCES = ("auto", "replay", "columns")


@dataclass
class SubtaskReport:
    """What `add_subtasks` did: per-task phase summary, and the episodes labelled from columns and why."""

    root: Path
    summaries: dict[str, PhaseSummary]
    fallbacks: list[str]

    def table(self) -> str:
        return format_phase_table(self.summaries)


def derive_dataset_subtasks(
    root: str | Path, *, source: str = "auto", task: str | None = None, progress: bool = False
) -> tuple[list[list[str]], SubtaskReport]:
    """Per-episode subtask texts for the recording at `root` (nothing is written).

    source: "replay" (simulate each episode from its recorded seed: true object positions), "columns"
    (stored state and action only), "auto" (replay where possible, else columns, with a warning).
    task: the Meta-World task of every episode, overriding what the summary/instructions say.
    """
    if source not in SOURCES:
        raise DatasetError(f"source must be one of {list(SOURCES)}, got {source!r}")
    root = Path(root)
    ds = Dataset(root, cameras=[])  # tabular columns only: no video is opened
    for key in (STATE_KEY, ACTION_KEY):
        if key not in ds.meta.features:
            raise DatasetError(f"{root}: subtask phases need {key!r} (hand xyz first / dx, dy, dz, grip)")
    if tuple(ds.meta.features[ACTION_KEY].shape) != (4,) or ds.meta.features[STATE_KEY].shape[0] < 3:
        raise DatasetError(
            f"{root}: Meta-World phases need a (4,) action (dx, dy, dz, gripper) and a state starting with the "
            f"hand xyz; got action {ds.meta.features[ACTION_KEY].shape}, state {ds.meta.features[STATE_KEY].shape}"
        )
    episodes_data = [ds.episode(e) for e in range(ds.num_episodes)]  # tabular only (no cameras)
    texts = [data["task"] for data in episodes_data]
    origins = episode_origins(root, texts)
    if task is not None:
        name = canonical_task(task)
        origins = [
            EpisodeOrigin(name, o.seed, o.split) if o.task == name else EpisodeOrigin(name) for o in origins
        ]
    replayer = _Replayer() if source != "columns" else None
    labels: list[list[str]] = []
    summaries: dict[str, PhaseSummary] = {}
    fallbacks: list[str] = []
    episodes: Any = range(ds.num_episodes)
    if progress:
        from tqdm import tqdm

        episodes = tqdm(episodes, desc="subtasks", unit="ep")
    try:
        for e in episodes:
            state = episodes_data[e][STATE_KEY]  # (T, S)
            action = episodes_data[e][ACTION_KEY]  # (T, 4)
            origin, object_pos, used = origins[e], None, "columns"
            if replayer is not None:
                why = _replay_blocker(origin)
                if why is None:
                    try:
                        object_pos, used = replayer.object_positions(origin, state, action), "replay"
                    except DatasetError as err:
                        why = str(err)
                if why is not None:
                    if source == "replay":
                        raise DatasetError(f"episode {e}: cannot replay ({why})")
                    fallbacks.append(f"episode {e}: {why}")
            subtasks = episode_subtasks(origin.task, state, action, object_pos)
            labels.append(subtasks)
            summaries.setdefault(origin.task or texts[e], PhaseSummary()).add(subtasks, used)
    finally:
        if replayer is not None:
            replayer.close()
    if fallbacks and source == "auto":
        warnings.warn(
            f"{len(fallbacks)} episode(s) labelled from the stored columns instead of a replay "
            f"(first: {fallbacks[0]})",
            stacklevel=2,
        )
    return labels, SubtaskReport(root, summaries, fallbacks)


def _replay_blocker(origin: EpisodeOrigin) -> str | None:
    """Why an episode cannot be replayed, or None."""
    if origin.task is None:
        return "its instruction names no Meta-World task"
    if origin.seed is None:
        return "no record summary gives its seed"
    try:
        import metaworld  # noqa: F401
    except ImportError:
        return "metaworld is not installed"
    return None


def add_subtasks(
    root: str | Path,
    *,
    source: str = "auto",
    task: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SubtaskReport:
    """Label every frame of the Meta-World recording at `root` with its subtask, in place and atomically.

    Derives the texts (`derive_dataset_subtasks`), then builds the labelled dataset in a hidden sibling
    directory (unchanged files hard-linked, changed ones written anew: data parquet files with the
    `subtask_index` column, meta/subtasks.parquet, info.json, stats, per-episode stats), checks that it
    loads, and swaps it in. Any failure leaves `root` as it was. overwrite: relabel a labelled dataset.
    """
    root = Path(root)
    meta = load_meta(root)
    if meta.subtasks is not None and not overwrite:
        raise DatasetError(f"{root} already has subtask labels; pass overwrite=True (--overwrite) to relabel")
    labels, report = derive_dataset_subtasks(root, source=source, task=task, progress=progress)
    write_subtask_labels(root, labels)
    return report
