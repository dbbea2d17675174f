"""Closed-loop rollouts: one episode (`rollout`) and many tasks × seeds (`evaluate`).

The environment and the policy never import each other (diffusion_policy's env-runner split):
`rollout` only speaks the `Env` and `PolicyLike` contracts of `vlaforge.types`, so a trained
policy, the scripted expert or a remote client are evaluated by the same loop.

Every action can pass a `SafetyFilter` (``safety=SafetyLimits``) right before ``env.step``, as on
a robot; its interventions are counted per episode, so a report shows how often the limits, not
the policy, decided what the arm did. With ``ExecutorConfig(mode="rtc")`` chunks are sampled by
real-time chunking (`vlaforge.runtime.rtc`): each continues the one being executed.

Seeds are fixed (seed0 .. seed0 + episodes - 1 for every task) and the eval split of the
environment draws configurations disjoint from the ones used for recording, so two evaluations
of the same checkpoint are comparable, and a score is not a memorised training scene.
"""

from __future__ import annotations

import atexit
import functools
import os
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vlaforge.eval.results import EpisodeResult, EvalReport
from vlaforge.runtime.executor import ChunkExecutor, ExecutorConfig
from vlaforge.runtime.safety import KINDS, SafetyFilter, SafetyLimits
from vlaforge.types import ActionChunk, Env, Observation, PolicyLike, PolicySpec


class EnvFactory(Protocol):
    """Builds the environment of one task; must be a picklable module-level callable for workers > 1."""

    def __call__(
        self,
        task: str,
        *,
        split: str,
        cameras: tuple[str, ...] | None,
        image_size: tuple[int, int] | None,
        instruction: str | None,
    ) -> Env: ...


PolicyFactory = Callable[[], PolicyLike]


def default_env_factory(
    task: str,
    *,
    split: str,
    cameras: tuple[str, ...] | None,
    image_size: tuple[int, int] | None,
    instruction: str | None,
    protocol: str | None = None,
) -> Env:
    """`vlaforge.envs.make_env`, leaving cameras / image size at the env's defaults when not given;
    `protocol` (Meta-World: 'vlaforge' | 'lerobot', `vlaforge.envs.protocol`) when given."""
    from vlaforge.envs import make_env

    kwargs: dict[str, Any] = {"split": split, "instruction": instruction}
    if protocol is not None:
        kwargs["protocol"] = protocol
    if cameras is not None:
        kwargs["cameras"] = cameras
    if image_size is not None:
        kwargs["image_size"] = image_size
    return make_env(task, **kwargs)


class ObservationHistory:
    """The last T observations, oldest first.

    At the start of an episode the first observation is repeated T times: training windows pad
    the history by repeating the episode's first frame (edge padding), so the policy sees the
    same thing at t = 0 in training and in evaluation.
    """

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"ObservationHistory: history length T must be >= 1, got {length}")
        self.length = length
        self._obs: deque[Observation] = deque(maxlen=length)

    def reset(self, first: Observation) -> None:
        self._obs.clear()
        self._obs.extend([first] * self.length)

    def append(self, obs: Observation) -> None:
        if not self._obs:
            raise RuntimeError("ObservationHistory.append before reset(first_observation)")
        self._obs.append(obs)

    def observations(self) -> list[Observation]:
        return list(self._obs)


def _make_generator(seed: int) -> Any:
    """A seeded torch.Generator, so that sampling heads (diffusion, flow) are reproducible per episode."""
    import torch

    return torch.Generator().manual_seed(int(seed))


def _as_actions(chunk: ActionChunk | np.ndarray, spec: PolicySpec) -> np.ndarray:
    actions = chunk.actions if isinstance(chunk, ActionChunk) else chunk
    actions = np.asarray(actions, dtype=np.float32)  # (H, A)
    if actions.ndim != 2 or actions.shape[1] != spec.action_dim:
        raise ValueError(
            f"policy.predict returned actions of shape {actions.shape}; expected (H, {spec.action_dim}) "
            "(policy.spec.action_dim)"
        )
    return actions


def rollout(
    env: Env,
    policy: PolicyLike,
    *,
    seed: int,
    executor: ChunkExecutor | ExecutorConfig | None = None,
    max_steps: int | None = None,
    record_video: bool = False,
    safety: SafetyFilter | SafetyLimits | None = None,
) -> EpisodeResult:
    """Run one closed-loop episode; stops at the first success, at `done`, or after max_steps.

    The policy receives the last `policy.spec.history` observations (oldest first) whenever the
    executor asks for a new chunk; each call's wall time is recorded. With `safety`, every action
    is filtered (current position from the observation's state) and interventions are counted in
    ``result.safety``.
    """
    if not isinstance(executor, ChunkExecutor):
        executor = ChunkExecutor(executor)
    executor.reset()
    rtc = executor.config.mode == "rtc"
    if rtc:
        from vlaforge.runtime.rtc import predict_rtc, supports_rtc

        if not supports_rtc(policy):
            raise TypeError(
                f"executor mode 'rtc' needs a policy that can inpaint a prefix (a vlaforge Policy with a flow or "
                f"diffusion head, or one with predict_rtc); got {type(policy).__name__}"
            )
    safety_filter = SafetyFilter(safety) if isinstance(safety, SafetyLimits) else safety
    if safety_filter is not None:
        safety_filter.reset()
    interventions: Counter[str] = Counter()
    attach = getattr(policy, "attach_env", None)
    if callable(attach):  # policies that read the simulator itself (the scripted expert)
        attach(env)
    if abs(float(policy.spec.fps) - float(env.fps)) > 1e-6:
        warnings.warn(
            f"policy.spec.fps={policy.spec.fps} Hz but env '{env.task}' runs at {env.fps} Hz", stacklevel=2
        )
    limit = int(max_steps if max_steps is not None else env.max_steps)
    if limit < 1:
        raise ValueError(f"rollout: max_steps must be >= 1, got {limit} (env.max_steps={env.max_steps})")
    if limit > env.max_steps:  # the env ends its episode at its own limit: a longer one would be cut silently
        raise ValueError(f"max_steps {limit} is above the step limit of {env.task} ({env.max_steps})")

    obs = env.reset(seed=seed)
    instruction = obs.instruction or env.instruction
    history = ObservationHistory(policy.spec.history)
    history.reset(obs)
    generator = _make_generator(seed)
    frames = [_copy_images(obs)] if record_video else None
    latencies: list[float] = []
    decode_failures = 0  # chunks flagged info["decode_failed"] (π0-FAST fallback, OpenVLA bad tokens)
    success, length = False, 0
    for step in range(limit):
        if executor.needs_new_chunk():
            guide = executor.rtc_guidance() if rtc else None  # (prefix (H, A), weights (H,)) | None
            t0 = time.perf_counter()
            if guide is None:
                chunk = policy.predict(history.observations(), generator=generator)
            else:
                chunk = predict_rtc(policy, history.observations(), *guide, generator=generator)
            latencies.append(time.perf_counter() - t0)
            decode_failures += bool((getattr(chunk, "info", None) or {}).get("decode_failed"))
            executor.push(_as_actions(chunk, policy.spec))
        action = executor.next_action()  # (A,)
        if safety_filter is not None:
            action, ivs = safety_filter.filter(action, state=obs.state)  # (A,) within the limits
            interventions.update(iv.kind for iv in ivs)
            interventions["steps_changed"] += bool(ivs)
        obs, _reward, done, info = env.step(action)
        length = step + 1
        history.append(obs)
        if frames is not None:
            frames.append(_copy_images(obs))
        if "success" not in info:
            raise KeyError(f"env '{env.task}': step() info has no 'success' key (have {sorted(info)})")
        if bool(info["success"]):
            success = True
            break
        if done:
            break
    outcomes_fn = getattr(env, "episode_outcomes", None)  # optional extra of the Env protocol
    return EpisodeResult(
        task=env.task,
        seed=int(seed),
        success=success,
        outcomes=outcomes_fn() if callable(outcomes_fn) else None,
        length=length,
        instruction=instruction,
        latencies_s=latencies,
        decode_failures=decode_failures,
        fps=float(env.fps),
        frames=frames,
        safety=None
        if safety_filter is None
        else {k: int(interventions[k]) for k in ("steps_changed", *KINDS)},
    )


def _copy_images(obs: Observation) -> dict[str, np.ndarray]:
    return {name: np.array(img, dtype=np.uint8, copy=True) for name, img in obs.images.items()}


# --------------------------------------------------------------------------------------------------
# evaluate: many tasks × seeds, optionally in worker processes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    seed: int
    record_video: bool


@dataclass(frozen=True)
class RunSettings:
    """Everything a worker needs besides the policy; picklable."""

    split: str
    executor: ExecutorConfig
    max_steps: int | None
    instructions: dict[str, str] = field(default_factory=dict)
    video_dir: str | None = None
    env_factory: EnvFactory = default_env_factory
    safety: SafetyLimits | None = None


def _env_camera_args(spec: PolicySpec) -> tuple[tuple[str, ...] | None, tuple[int, int] | None]:
    if not spec.cameras:
        return None, None
    sizes = {tuple(hw) for hw in spec.cameras.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"policy.spec.cameras has different image sizes {spec.cameras}; the environment renders every "
            "camera at one size, so resize inside the policy's transforms instead"
        )
    (size,) = sizes
    return tuple(spec.cameras), (int(size[0]), int(size[1]))


def _check_compatible(spec: PolicySpec, env: Env) -> None:
    """Refuse, with names and sizes, a policy whose state or action size is not the env's."""
    problems = []
    env_action = getattr(env, "action_dim", None)
    if env_action is not None and spec.action_dim and int(env_action) != int(spec.action_dim):
        problems.append(f"actions: the policy outputs {spec.action_dim}-D, the env takes {env_action}-D")
    env_state = getattr(env, "state_dim", None)
    if env_state is not None and spec.state_dim and int(env_state) != int(spec.state_dim):
        problems.append(f"state: the policy reads {spec.state_dim}-D, the env gives {env_state}-D")
    if problems:
        raise ValueError(
            f"the policy does not fit '{getattr(env, 'task', env)}': "
            + "; ".join(problems)
            + f" (policy cameras {sorted(spec.cameras)}); train on a dataset recorded from this environment"
        )


class EpisodeRunner:
    """Owns one policy and the current task's env; runs jobs one after another (one per process)."""

    def __init__(self, policy_or_factory: PolicyLike | PolicyFactory, settings: RunSettings) -> None:
        self.policy = _resolve_policy(policy_or_factory)
        self.settings = settings
        self.cameras, self.image_size = _env_camera_args(self.policy.spec)
        self.executor = ChunkExecutor(settings.executor)
        self.safety = None if settings.safety is None else SafetyFilter(settings.safety)
        self._envs: dict[str, Env] = {}

    def env(self, task: str) -> Env:
        """The env of `task`; the previous task's env is closed (jobs come grouped by task, and
        keeping 50 simulators with their renderers open would waste memory)."""
        if task not in self._envs:
            self.close()
            self._envs[task] = self.settings.env_factory(
                task,
                split=self.settings.split,
                cameras=self.cameras,
                image_size=self.image_size,
                instruction=self.settings.instructions.get(task),
            )
            _check_compatible(self.policy.spec, self._envs[task])
        return self._envs[task]

    def run(self, job: EpisodeJob) -> EpisodeResult:
        env = self.env(job.task)
        if hasattr(env, "render_images") and not getattr(self.policy, "reads_images", True):
            # a policy that never looks (the scripted expert): render only the frames a video needs
            env.render_images = job.record_video
        result = rollout(
            env,
            self.policy,
            seed=job.seed,
            executor=self.executor,
            max_steps=self.settings.max_steps,
            record_video=job.record_video,
            safety=self.safety,
        )
        override = self.settings.instructions.get(job.task)
        if override is not None and result.instruction != override:
            raise RuntimeError(
                f"env '{job.task}' ignored the instruction override: observation says {result.instruction!r}, "
                f"expected {override!r}"
            )
        if result.frames is not None and self.settings.video_dir is not None:
            from vlaforge.eval.video import write_episode_video

            name = f"{job.task}_seed{job.seed}_{'success' if result.success else 'fail'}.mp4"
            path = Path(self.settings.video_dir) / name
            write_episode_video(result, path, cameras=self.cameras)
            result.video = str(path)
        result.frames = None
        return result

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def _resolve_policy(policy_or_factory: PolicyLike | PolicyFactory) -> PolicyLike:
    if _is_factory(policy_or_factory):
        policy = policy_or_factory()  # type: ignore[operator]
    else:
        policy = policy_or_factory
    if not isinstance(policy, PolicyLike):
        raise TypeError(f"expected a PolicyLike (with .spec and .predict), got {type(policy).__name__}")
    return policy  # type: ignore[return-value]


def _is_factory(obj: Any) -> bool:
    return isinstance(obj, type) or (callable(obj) and not isinstance(obj, PolicyLike))


# Worker-process state: one runner per process, created by the pool initializer's arguments.
_WORKER: dict[str, Any] = {}


def _init_worker(policy_factory: PolicyFactory, settings: RunSettings, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["factory"] = policy_factory
    _WORKER["settings"] = settings


def _run_batch_in_worker(jobs: list[EpisodeJob]) -> tuple[list[EpisodeResult], dict[str, Any]]:
    if "runner" not in _WORKER:  # build lazily so load errors come back through the future
        _WORKER["runner"] = EpisodeRunner(_WORKER["factory"], _WORKER["settings"])
        atexit.register(_WORKER["runner"].close)
    runner: EpisodeRunner = _WORKER["runner"]
    return [runner.run(job) for job in jobs], asdict(runner.policy.spec)


def _batches(jobs: list[EpisodeJob], workers: int) -> list[list[EpisodeJob]]:
    """Group episodes by task so a worker builds each env once; split a task only when tasks < workers."""
    by_task: dict[str, list[EpisodeJob]] = {}
    for job in jobs:
        by_task.setdefault(job.task, []).append(job)
    parts = max(1, -(-workers // len(by_task)))  # ceil(workers / tasks)
    batches = []
    for task_jobs in by_task.values():
        size = -(-len(task_jobs) // parts)
        batches.extend(task_jobs[i : i + size] for i in range(0, len(task_jobs), size))
    return batches


@contextmanager
def _worker_environment(threads: int) -> Iterator[None]:
    """Thread settings inherited by spawned workers (OpenMP reads them when torch is imported)."""
    keys = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _full_name(task: str) -> str:
    """The full Meta-World name of `task` when it names one, else `task` unchanged."""
    from vlaforge.envs.tasks import canonical_task

    try:
        return canonical_task(task)
    except ValueError:
        return task


def evaluate(
    policy_or_factory: PolicyLike | PolicyFactory,
    tasks: Sequence[str],
    *,
    episodes: int = 20,
    seed0: int = 0,
    split: str = "eval",
    instructions: Mapping[str, str] | None = None,
    executor: ExecutorConfig | None = None,
    max_steps: int | None = None,
    workers: int = 1,
    videos_per_task: int = 1,
    out_dir: str | Path | None = None,
    progress: bool = True,
    env_factory: EnvFactory | None = None,
    confidence: float = 0.95,
    metadata: Mapping[str, Any] | None = None,
    safety: SafetyLimits | None = None,
    protocol: str | None = None,
) -> EvalReport:
    """Evaluate a policy on `tasks` × seeds seed0 .. seed0 + episodes - 1; write a report if out_dir.

    policy_or_factory: a policy, or a picklable zero-argument callable returning one (required for
    workers > 1: every worker process loads its own policy and its own environments).
    instructions: optional {task: instruction} replacing the env's instruction (language
    generalisation tests). safety: filter every executed action with these limits and report the
    interventions per episode and per task. out_dir gets eval.json, eval.md, success.png and videos/.
    protocol: a Meta-World evaluation protocol (`vlaforge.envs.protocol`): None or 'vlaforge' (ours, the
    split's layout lists), 'lerobot' (LeRobot's: seeds draw the layouts, camera corner2, its task
    descriptions; the caller picks its seeds, 1000.., and episodes, 10); recorded in the report's config.
    """
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise ValueError("evaluate: no tasks given")
    if env_factory is None:
        # Meta-World: a short name ("push") becomes the full task name ("push-v3") the environments and
        # the report use, as on the CLI. A custom env_factory gets the names exactly as given.
        tasks = list(dict.fromkeys(_full_name(t) for t in tasks))
        instructions = {_full_name(t): text for t, text in (instructions or {}).items()}
        if protocol is not None:
            protocol = _check_protocol(protocol, tasks)
            env_factory = functools.partial(default_env_factory, protocol=protocol)
    elif protocol is not None:
        raise ValueError(
            f"evaluate: protocol '{protocol}' builds its own envs; do not pass env_factory as well"
        )
    if episodes < 1:
        raise ValueError(f"evaluate: episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ValueError(f"evaluate: workers must be >= 1, got {workers}")
    if videos_per_task < 0:
        raise ValueError(f"evaluate: videos_per_task must be >= 0, got {videos_per_task}")
    if workers > 1 and not _is_factory(policy_or_factory):
        raise ValueError(
            "evaluate: workers > 1 needs a picklable policy factory (e.g. functools.partial(Policy.load, "
            "run_dir)) so each worker process loads its own policy; got a policy instance"
        )
    instructions = dict(instructions or {})
    unknown = sorted(set(instructions) - set(tasks))
    if unknown:
        warnings.warn(f"instruction overrides for tasks not evaluated are ignored: {unknown}", stacklevel=2)
    executor = executor or ExecutorConfig()
    if safety is not None and not isinstance(safety, SafetyLimits):
        raise TypeError(f"evaluate: safety must be SafetyLimits or None, got {type(safety).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    video_dir = str(out / "videos") if out is not None and videos_per_task > 0 else None
    settings = RunSettings(
        split=split,
        executor=executor,
        max_steps=max_steps,
        instructions={t: instructions[t] for t in tasks if t in instructions},
        video_dir=video_dir,
        env_factory=env_factory or default_env_factory,
        safety=safety,
    )
    jobs = [
        EpisodeJob(task, seed0 + i, record_video=video_dir is not None and i < videos_per_task)
        for task in tasks
        for i in range(episodes)
    ]

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not progress)
    results: list[EpisodeResult] = []
    spec: dict[str, Any] | None = None

    def record(result: EpisodeResult) -> None:
        results.append(result)
        done_task = [r for r in results if r.task == result.task]
        bar.set_postfix_str(f"{result.task} {sum(r.success for r in done_task)}/{len(done_task)}")
        bar.update(1)

    t_start = time.perf_counter()
    try:
        if workers == 1:
            runner = EpisodeRunner(policy_or_factory, settings)
            try:
                for job in jobs:
                    record(runner.run(job))
            finally:
                runner.close()
            spec = asdict(runner.policy.spec)  # after the run: the expert's spec follows its env
        else:
            spec = _run_pool(policy_or_factory, settings, jobs, workers, record)  # type: ignore[arg-type]
    finally:
        bar.close()
    wall_s = time.perf_counter() - t_start

    config = {
        **dict(metadata or {}),
        "tasks": tasks,
        "episodes": episodes,
        "seeds": [seed0, seed0 + episodes - 1],
        "split": split,
        "executor": executor.to_json(),
        "executor_label": executor.describe(),
        "max_steps": max_steps,
        "instructions": settings.instructions,
        "workers": workers,
        "policy_spec": spec,
        "wall_s": wall_s,
        "safety": None if safety is None else asdict(safety),
        **({} if protocol is None else {"protocol": protocol}),
    }
    report = EvalReport.from_episodes(tasks, results, config, confidence=confidence)
    if out is not None:
        from vlaforge.eval.report import write_report

        write_report(report, out)
    return report


def _check_protocol(protocol: str, tasks: list[str]) -> str:
    """Check that `protocol` can run `tasks` (Meta-World tasks only); its name."""
    from vlaforge.envs.make import family_of
    from vlaforge.envs.protocol import get_protocol

    name = get_protocol(protocol).name
    other = [t for t in tasks if family_of(t).name != "metaworld"]
    if other:
        raise ValueError(
            f"protocol '{name}' is a Meta-World protocol; {other[0]} is not a Meta-World task (LIBERO "
            "evaluation uses the official initial states: --suite)"
        )
    return name


def _run_pool(
    factory: PolicyFactory,
    settings: RunSettings,
    jobs: list[EpisodeJob],
    workers: int,
    record: Callable[[EpisodeResult], None],
) -> dict[str, Any] | None:
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # fork + torch/OpenGL state is unsafe
    spec = None
    with _worker_environment(threads):
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(factory, settings, threads),
        )
        try:
            futures = [pool.submit(_run_batch_in_worker, batch) for batch in _batches(jobs, workers)]
            for fut in as_completed(futures):
                batch_results, spec = fut.result()
                for result in batch_results:
                    record(result)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return spec
