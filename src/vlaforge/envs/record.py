"""Record scripted-expert demonstrations of Meta-World tasks into a LeRobot dataset.

    record(["pick-place-v3"], episodes_per_task=50, out="data/pick", workers=2)

Worker processes (spawn; one env and GL context each, one thread each) roll out the task's scripted
expert; only successful episodes are kept, each cut `steps_after_success` steps after the first
success. Episode k of a task tries seed `seed + k` (layout `seed % 50` of the split, phrasing chosen
from the seed); a failed seed is replaced by the next unused one, up to
`episodes_per_task * max_attempts_factor` attempts. The kept episodes of a task are exactly its
first `episodes_per_task` successful seeds, and they are written task by task in seed order, so the
dataset does not depend on the number of workers or on timing.

Frames stream back to the main process, which is the only writer (`vlaforge.data.DatasetWriter`).
A summary (attempts, failures, seeds and layouts used per task) is written next to the dataset as
`<out>.record_summary.json`; nothing is added inside the dataset directory.

`subtasks=True` (`vlaforge record --subtasks`) also labels every frame with the expert's phase ("reach the
puck", "grasp the puck", "push the puck to the goal"; see `vlaforge.envs.subtasks`), derived from the true
object positions the recorder sees; the summary then lists each task's phases and their share of frames.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vlaforge.envs.configs import N_CONFIGS, split_seed
from vlaforge.envs.make import EnvFamily, family_of, make_env
from vlaforge.envs.protocol import LEROBOT_EVAL_SEEDS, get_protocol
from vlaforge.envs.tasks import resolve_tasks
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY


class ExpertFailed(RuntimeError):
    """The scripted expert succeeded in none of its attempts: there is nothing to write."""


SUMMARY_SUFFIX = ".record_summary.json"


@dataclass(frozen=True)
class RecordConfig:
    """What to record. Validated on construction; errors name the field and the fix."""

    tasks: tuple[str, ...]
    episodes_per_task: int
    image_size: tuple[int, int] = (128, 128)
    cameras: tuple[str, ...] = ()  # () = the simulator's default cameras
    steps_after_success: int = 10
    seed: int = 0
    max_attempts_factor: int = 3
    split: str = "train"
    max_episode_steps: int | None = None  # None: the env's limit (500)
    subtasks: bool = False  # label frames with the expert's phase (vlaforge.envs.subtasks)
    # DART (Laskey et al., 2017): std of Gaussian noise added to the *executed* arm action (not the
    # gripper); the recorded action stays the expert's, so the data shows corrections from off-course states.
    action_noise: float = 0.0
    protocol: str = "vlaforge"  # Meta-World: 'lerobot' records what `vlaforge eval --protocol lerobot` shows

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty; pass e.g. 'mt10' or 'reach-v3,push-v3'")
        object.__setattr__(self, "tasks", tuple(resolve_tasks(list(self.tasks))))
        families = {family_of(t).name for t in self.tasks}
        if len(families) > 1:
            raise ValueError(
                f"tasks mix simulators ({', '.join(sorted(families))}); record one dataset per simulator "
                "and train on both with --data a,b"
            )
        family = self.family
        protocol = get_protocol(self.protocol)
        object.__setattr__(self, "protocol", protocol.name)
        if not protocol.splits and family.name != "metaworld":
            raise ValueError(
                f"protocol '{protocol.name}' is a Meta-World protocol; LIBERO records with its own"
            )
        if not self.cameras:
            cameras = family.default_cameras if protocol.splits else protocol.cameras
            object.__setattr__(self, "cameras", tuple(cameras))
        if family.name == "metaworld":
            protocol.check_cameras(self.cameras)
        if self.subtasks and family.name != "metaworld":
            raise ValueError("subtasks: phase labels exist for Meta-World experts only")
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {self.episodes_per_task}")
        size = self.image_size
        if len(size) != 2 or min(size) < 16 or size[0] % 2 or size[1] % 2:
            raise ValueError(
                f"image_size must be (height, width), even and >= 16 (h264 needs even sizes), got {size}"
            )
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be a non-empty list without duplicates, got {self.cameras}")
        unknown = [c for c in self.cameras if c not in family.cameras]
        if unknown:
            raise ValueError(f"cameras: unknown {unknown}; available: {', '.join(family.cameras)}")
        if self.steps_after_success < 0:
            raise ValueError(f"steps_after_success must be >= 0, got {self.steps_after_success}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.max_attempts_factor < 1:
            raise ValueError(f"max_attempts_factor must be >= 1, got {self.max_attempts_factor}")
        split_seed(self.split)  # raises on an unknown split
        if not 0.0 <= self.action_noise <= 1.0:
            raise ValueError(f"action_noise must be in [0, 1] (action units), got {self.action_noise}")
        if not protocol.splits:
            if self.split != "train":
                raise ValueError(
                    f"split does not apply to protocol '{protocol.name}': the seed draws each layout"
                )
            tried = range(self.seed, self.seed + self.max_attempts)
            evaluated = LEROBOT_EVAL_SEEDS
            if tried.start < evaluated.stop and evaluated.start < tried.stop:
                raise ValueError(
                    f"seeds {tried.start}..{tried.stop - 1} overlap the evaluation seeds of protocol "
                    f"'{protocol.name}' ({evaluated.start}..{evaluated.stop - 1}); pick --seed so that "
                    "seed + episodes x max_attempts_factor stays below them, or start above them"
                )
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {self.max_episode_steps}")

    @property
    def family(self) -> EnvFamily:
        return family_of(self.tasks[0])

    @property
    def max_attempts(self) -> int:
        return self.episodes_per_task * self.max_attempts_factor


@dataclass
class EpisodeResult:
    """One expert rollout. `frames` (feature key -> (T, ...) array) is None for failures."""

    task: str
    attempt: int
    seed: int
    config_id: int
    instruction: str
    success: bool
    success_step: int | None  # index of the action after which success was first reported
    length: int
    seconds: float
    frames: dict[str, np.ndarray] | None = field(default=None, repr=False)
    # (T, 3) true object position at each kept frame (privileged; for subtask labels, never a feature)
    object_pos: np.ndarray | None = field(default=None, repr=False)


def dataset_features(
    cameras: tuple[str, ...] | list[str], image_size: tuple[int, int], family: EnvFamily | None = None
) -> dict[str, Any]:
    """The LeRobot features of a recording: one video per camera, the family's state and action
    (Meta-World: 4-D; LIBERO: 8-D state, 7-D action, as in LeRobot's LIBERO datasets)."""
    from vlaforge.types import FeatureSpec

    family = family or family_of("reach-v3")
    h, w = image_size
    features: dict[str, FeatureSpec] = {
        IMAGE_PREFIX + cam: FeatureSpec("video", (h, w, 3), ["height", "width", "channels"])
        for cam in cameras
    }
    state, action = list(family.state_names), list(family.action_names)
    features[STATE_KEY] = FeatureSpec("float32", (len(state),), state)
    features[ACTION_KEY] = FeatureSpec("float32", (len(action),), action)
    return features


@dataclass
class _Rollout:
    instruction: str
    config_id: int
    success_step: int | None
    images: dict[str, list[np.ndarray]]
    states: list[np.ndarray]
    actions: list[np.ndarray]
    object_pos: list[np.ndarray] = field(default_factory=list)


def _rollout(
    env: Any, seed: int, limit: int, steps_after_success: int, keep_frames: bool, action_noise: float = 0.0
) -> _Rollout:
    obs = env.reset(seed)
    out = _Rollout(obs.instruction, int(env.config_id), None, {cam: [] for cam in obs.images}, [], [])
    privileged = hasattr(env, "privileged_state")
    noise = np.random.default_rng([seed, 0x44415254])  # "DART": a function of the episode's seed
    for t in range(limit):
        action = env.expert_action()
        if keep_frames:
            for cam, image in obs.images.items():
                out.images[cam].append(image)
            out.states.append(obs.state)
            if privileged:  # Meta-World's observation[4:7]: the (first) object's position
                out.object_pos.append(env.privileged_state[4:7])
        out.actions.append(action)
        executed = action
        if action_noise > 0:
            executed = np.array(action, dtype=np.float32, copy=True)
            executed[:-1] += noise.normal(0.0, action_noise, size=len(executed) - 1)  # the gripper is last
            executed = np.clip(executed, -1.0, 1.0)
        obs, _, done, info = env.step(executed)
        if info["success"] and out.success_step is None:
            out.success_step = t
        if (out.success_step is not None and t - out.success_step >= steps_after_success) or done:
            break
    return out


def run_expert_episode(
    env: Any,
    seed: int,
    *,
    steps_after_success: int = 10,
    max_steps: int | None = None,
    keep_frames: bool = True,
    preview: bool = True,
    action_noise: float = 0.0,
) -> EpisodeResult:
    """Roll out `env.expert_action()` from `env.reset(seed)`.

    Stops `steps_after_success` actions after the first success, or at `max_steps` (default the env's).
    frames hold, for every executed step t, the observation seen before acting and the action taken:
    images uint8 (T, H, W, 3), state float32 (T, 4), action float32 (T, 4); None for failures.

    action_noise: DART noise (`RecordConfig.action_noise`): executed actions are perturbed, recorded
    ones are the expert's.
    preview: first roll out without rendering (~20x cheaper) and render only episodes that succeed.
    Resets are deterministic, so the rendered replay is the same trajectory (checked); a failing
    layout then costs ~0.4 s instead of ~7 s of rendering 500 steps.
    """
    start = time.perf_counter()
    limit = env.max_steps if max_steps is None else min(max_steps, env.max_steps)
    dry = None
    if keep_frames and preview and hasattr(env, "render_images"):
        env.render_images = False
        try:
            dry = _rollout(
                env, seed, limit, steps_after_success, keep_frames=False, action_noise=action_noise
            )
        finally:
            env.render_images = True
        limit = len(dry.actions)
    run = (
        dry
        if dry is not None and dry.success_step is None
        else _rollout(env, seed, limit, steps_after_success, keep_frames, action_noise)
    )
    if (
        dry is not None
        and run is not dry
        and (run.success_step != dry.success_step or not np.array_equal(run.actions, dry.actions))
    ):
        raise RuntimeError(
            f"{env.task} seed {seed}: the rendered replay diverged from the preview rollout "
            f"(success at {run.success_step} vs {dry.success_step}); rerun with preview=False"
        )
    frames = object_pos = None
    if keep_frames and run.success_step is not None:
        frames = {IMAGE_PREFIX + cam: np.stack(seq) for cam, seq in run.images.items()}  # (T, H, W, 3)
        frames[STATE_KEY] = np.stack(run.states).astype(np.float32)  # (T, 4)
        frames[ACTION_KEY] = np.stack(run.actions).astype(np.float32)  # (T, 4)
        if run.object_pos:
            object_pos = np.stack(run.object_pos)  # (T, 3)
    return EpisodeResult(
        task=env.task,
        attempt=-1,
        seed=int(seed),
        config_id=run.config_id,
        instruction=run.instruction,
        success=run.success_step is not None,
        success_step=run.success_step,
        length=len(run.actions),
        seconds=time.perf_counter() - start,
        frames=frames,
        object_pos=object_pos,
    )


# ---------------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {"env": None}


def _init_worker() -> None:
    """One thread per worker: the machine's cores are shared by the workers and the video encoder.

    Runs before the worker's first env, so Mesa's llvmpipe (which reads LP_NUM_THREADS when the
    first GL context is made) renders single-threaded; numpy is already loaded by then, but the
    simulator's arrays are far too small for BLAS threads to matter.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # LP_NUM_THREADS: Mesa llvmpipe's rasteriser threads
    os.environ.setdefault("MUJOCO_GL", "egl")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _worker_episode(config: RecordConfig, task: str, attempt: int) -> EpisodeResult:
    env = _WORKER["env"]
    if env is None or env.task != task:  # attempts arrive grouped by task: keep one env at a time
        if env is not None:
            env.close()
        protocol = {} if config.family.name != "metaworld" else {"protocol": config.protocol}
        env = _WORKER["env"] = make_env(
            task, split=config.split, cameras=config.cameras, image_size=config.image_size, **protocol
        )
    result = run_expert_episode(
        env,
        config.seed + attempt,
        steps_after_success=config.steps_after_success,
        max_steps=config.max_episode_steps,
        # LIBERO's physics step costs about as much as rendering both cameras (LiberoEnv renders only
        # frames that are read), and its experts rarely fail: a physics-only preview would cost more
        # than the failures it saves. Meta-World's physics is ~20x cheaper than its rendering.
        preview=config.family.name == "metaworld",
        action_noise=config.action_noise,
    )
    result.attempt = attempt
    return result


def _close_worker_env() -> None:
    if _WORKER["env"] is not None:
        _WORKER["env"].close()
        _WORKER["env"] = None


class _Executor(Protocol):
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future: ...


class _InlineExecutor:
    """workers=0: run attempts in the calling process (debugging, tests)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # re-raised by future.result() in the scheduler
            future.set_exception(e)
        return future


# -------------------------------------------------------------------------------------- scheduler


@dataclass
class _TaskState:
    next_attempt: int = 0
    inflight: int = 0
    successes: int = 0
    written: int = 0
    resolved: dict[int, EpisodeResult] = field(default_factory=dict)  # finished attempts not yet walked
    write_attempt: int = 0  # next attempt whose fate decides the write order
    failures: list[dict[str, int]] = field(default_factory=list)
    kept: list[EpisodeResult] = field(default_factory=list)


def _collect(
    config: RecordConfig,
    executor: _Executor,
    on_episode: Callable[[EpisodeResult], None],
    *,
    episode_fn: Callable[..., EpisodeResult] = _worker_episode,
    max_pending: int = 4,
    on_attempt: Callable[[EpisodeResult], None] | None = None,
) -> dict[str, _TaskState]:
    """Schedule attempts on `executor` and hand kept episodes to `on_episode` in (task, seed) order.

    An attempt is submitted only while successes + attempts in flight < episodes_per_task, so the
    tried seeds of a task are always a prefix and the kept ones are its first successes. At most
    `max_pending` episodes are in flight or waiting to be written, except that the task the writer
    is waiting for may always submit its retries (else a full buffer of later tasks would deadlock),
    so memory stays below 2 x max_pending episodes.
    """
    n = config.episodes_per_task
    states = {task: _TaskState() for task in config.tasks}
    futures: dict[Future, tuple[str, int]] = {}
    write_task = 0

    def buffered() -> int:
        return sum(len(st.resolved) for st in states.values())

    def top_up() -> None:
        for i, task in enumerate(config.tasks):  # earlier tasks first: the writer waits for them
            st = states[task]
            while (
                (len(futures) + buffered() < max_pending or (i == write_task and len(futures) < max_pending))
                and st.successes + st.inflight < n
                and st.next_attempt < config.max_attempts
            ):
                futures[executor.submit(episode_fn, config, task, st.next_attempt)] = (task, st.next_attempt)
                st.next_attempt += 1
                st.inflight += 1

    def task_finished(st: _TaskState) -> bool:
        exhausted = st.next_attempt >= config.max_attempts and st.inflight == 0
        return st.written >= n or (exhausted and st.write_attempt >= st.next_attempt)

    def flush() -> None:
        nonlocal write_task
        while write_task < len(config.tasks):
            st = states[config.tasks[write_task]]
            while st.write_attempt in st.resolved:
                result = st.resolved.pop(st.write_attempt)
                st.write_attempt += 1
                if result.success and st.written < n:
                    on_episode(result)
                    st.kept.append(result)
                    st.written += 1
            if not task_finished(st):
                return
            write_task += 1

    top_up()
    while futures:
        done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: futures[f]):
            task, attempt = futures.pop(future)
            result = future.result()  # a worker exception propagates here
            st = states[task]
            st.inflight -= 1
            if result.success:
                st.successes += 1
            else:
                st.failures.append({"attempt": attempt, "seed": result.seed, "config_id": result.config_id})
                result.frames = None
            if on_attempt is not None:
                on_attempt(result)
            st.resolved[attempt] = result
        flush()
        top_up()
    flush()
    for st in states.values():
        st.failures.sort(key=lambda f: f["attempt"])  # completion order is timing-dependent
    return states


# ----------------------------------------------------------------------------------------- record


def summary_path(out: str | Path) -> Path:
    """Where `record` writes its summary: next to the dataset directory, never inside it."""
    out = Path(out)
    return out.parent / (out.name + SUMMARY_SUFFIX)


def record(
    tasks: str | list[str] | tuple[str, ...],
    episodes_per_task: int,
    out: str | Path,
    *,
    workers: int = 2,
    image_size: int | tuple[int, int] = (128, 128),
    cameras: tuple[str, ...] | list[str] | None = None,
    steps_after_success: int = 10,
    seed: int = 0,
    max_attempts_factor: int = 3,
    codec: str = "h264",
    progress: bool = True,
    split: str = "train",
    max_episode_steps: int | None = None,
    overwrite: bool = False,
    subtasks: bool = False,
    action_noise: float = 0.0,
    protocol: str = "vlaforge",
) -> Path:
    """Record successful scripted-expert episodes of `tasks` into a LeRobot dataset at `out`.

    tasks: 'mt10', 'mt50', 'reach-v3,push' or a list. workers: processes rolling out episodes
    (0 = in this process). Returns the dataset root; the per-task summary goes to `summary_path(out)`.
    A task whose expert keeps failing ends with fewer episodes: it is listed under
    "incomplete_tasks" in the summary and a warning is printed.
    subtasks: label every frame with the expert's phase (`subtask_index` + meta/subtasks.parquet); the
    summary's "subtasks" entry gives each task's phases and their mean share of frames.
    action_noise: DART noise on the executed arm actions (`RecordConfig.action_noise`).
    protocol: Meta-World 'vlaforge' (layouts `seed % 50` of the split's list) or 'lerobot' (LeRobot's
    evaluation env: camera corner2, the layout drawn from the seed, LeRobot's task descriptions as
    instructions; seeds must stay clear of its evaluation seeds 1000..1049).
    """
    from vlaforge.data import DatasetWriter
    from vlaforge.envs.subtasks import PhaseSummary, episode_subtasks

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    config = RecordConfig(
        tasks=tuple(resolve_tasks(tasks)),
        episodes_per_task=episodes_per_task,
        image_size=size,  # type: ignore[arg-type]
        cameras=tuple(cameras or ()),
        steps_after_success=steps_after_success,
        seed=seed,
        max_attempts_factor=max_attempts_factor,
        split=split,
        max_episode_steps=max_episode_steps,
        subtasks=subtasks,
        action_noise=action_noise,
        protocol=protocol,
    )
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = record in this process), got {workers}")
    out = Path(out)
    family = config.family
    fps = _control_rate(config.tasks[0]) if family.name == "metaworld" else family.fps
    features = dataset_features(config.cameras, config.image_size, family)
    bar = _progress_bar(len(config.tasks) * episodes_per_task, progress)
    counts = {"attempts": 0, "successes": 0}
    episode_index: dict[tuple[str, int], int] = {}
    phases: dict[str, PhaseSummary] = {}
    started = time.perf_counter()

    def on_attempt(result: EpisodeResult) -> None:
        counts["attempts"] += 1
        counts["successes"] += int(result.success)
        if bar is not None:
            bar.set_postfix(
                success=f"{counts['successes'] / counts['attempts']:.0%}", task=result.task, refresh=False
            )

    with DatasetWriter(
        out,
        fps=fps,
        features=features,
        robot_type=family.robot_type,
        codec=codec,
        overwrite=overwrite,
        subtasks=config.subtasks,
    ) as w:

        def on_episode(result: EpisodeResult) -> None:
            assert result.frames is not None
            labels = None
            if config.subtasks:  # here, not in the workers: they never import the data package
                labels = episode_subtasks(
                    result.task, result.frames[STATE_KEY], result.frames[ACTION_KEY], result.object_pos
                )
                phases.setdefault(result.task, PhaseSummary()).add(
                    labels, "record" if result.object_pos is not None else "columns"
                )
            episode_index[(result.task, result.seed)] = w.add_episode(
                result.frames, task=result.instruction, subtasks=labels
            )
            result.frames = result.object_pos = None  # free the frames as soon as they are written
            if bar is not None:
                bar.update(1)

        try:
            if workers == 0:
                try:
                    states = _collect(
                        config, _InlineExecutor(), on_episode, on_attempt=on_attempt, max_pending=1
                    )
                finally:
                    _close_worker_env()
            else:
                ctx = mp.get_context("spawn")
                with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                    try:
                        states = _collect(
                            config, pool, on_episode, on_attempt=on_attempt, max_pending=2 * workers + 2
                        )
                    except BaseException:
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
        finally:
            if bar is not None:
                bar.close()
        if w.num_episodes == 0:  # the writer is aborted on the way out; nothing is left at `out`
            attempts = {task: st.next_attempt for task, st in states.items()}
            hint = (
                " (DART noise makes it harder: try a smaller --action-noise)" if config.action_noise else ""
            )
            raise ExpertFailed(
                f"the expert failed every attempt, nothing was written (attempts per task: {attempts}){hint}"
            )
        root = w.finalize()

    summary = _summary(
        config, states, episode_index, root, fps, codec, workers, time.perf_counter() - started
    )
    if config.subtasks:
        summary["subtasks"] = {task: s.to_json() for task, s in phases.items()}
    summary_path(root).write_text(json.dumps(summary, indent=2) + "\n")
    if summary["incomplete_tasks"]:
        warnings.warn(
            f"record: the expert did not reach {episodes_per_task} successful episodes within "
            f"{config.max_attempts} attempts for {summary['incomplete_tasks']}; see {summary_path(root)}",
            stacklevel=2,
        )
    return root


def _control_rate(task: str) -> float:
    """Meta-World's control rate: frame_skip 5 x timestep 2.5 ms = 12.5 ms per step, 80 Hz."""
    import metaworld.env_dict

    env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
    try:
        return float(1.0 / env.dt)
    finally:
        env.close()


def _layout_note(config: RecordConfig) -> dict[str, Any]:
    """How the recorded layouts were chosen (for the summary)."""
    if config.family.name == "libero":
        return {
            "layouts": "official initial states (seed % 50)"
            if config.split == "eval"
            else "sampled from the BDDL placement regions with the episode's seed, none within 1 mm of "
            "an official initial state"
        }
    if not get_protocol(config.protocol).splits:
        return {
            "layouts": f"drawn from each seed as protocol '{config.protocol}' does (env.seed(seed); reset)"
        }
    return {"benchmark_seed": split_seed(config.split), "configs_per_split": N_CONFIGS}


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ep", desc="record", dynamic_ncols=True)


def _summary(
    config: RecordConfig,
    states: dict[str, _TaskState],
    episode_index: dict[tuple[str, int], int],
    root: Path,
    fps: float,
    codec: str,
    workers: int,
    seconds: float,
) -> dict[str, Any]:
    per_task: dict[str, Any] = {}
    for task, st in states.items():
        kept = st.kept
        per_task[task] = {
            "episodes": len(kept),
            "attempts": st.next_attempt,
            "failures": st.failures,
            "episode_indices": [episode_index[(task, r.seed)] for r in kept],
            "seeds": [r.seed for r in kept],
            "config_ids": [r.config_id for r in kept],
            "distinct_configs": len({r.config_id for r in kept}),
            "instructions": [r.instruction for r in kept],
            "lengths": [r.length for r in kept],
            "success_steps": [r.success_step for r in kept],
        }
    frames = sum(sum(t["lengths"]) for t in per_task.values())
    return {
        "dataset": str(root),
        "config": {**asdict(config), **_layout_note(config)},
        "fps": fps,
        "codec": codec,
        "workers": workers,
        "episodes": sum(t["episodes"] for t in per_task.values()),
        "frames": frames,
        "attempts": sum(t["attempts"] for t in per_task.values()),
        "wall_time_s": round(seconds, 2),
        "incomplete_tasks": [
            task for task, t in per_task.items() if t["episodes"] < config.episodes_per_task
        ],
        "tasks": per_task,
    }
