"""What both sides of the LeRobot comparison share: the embodiment, the model sizes, timing, the worker protocol.

Imported by `run.py` (vlaforge's venv), `ours.py` (vlaforge's venv) and `lerobot_side.py` (the LeRobot
venv, which has no vlaforge), so it uses only the standard library, numpy and torch.

Embodiment: the Meta-World recording `vlaforge record` writes (data/mt10): cameras `corner` and
`gripper` at 128x128, state = hand xyz + gripper opening (4), action = delta xyz + gripper effort (4),
80 fps. Both sides see the same observations (same seed) and the same statistics.

Model sizes (`SIZES`): LeRobot's ACT and diffusion policy keep their architecture (torchvision
ResNet-18 backbone per image, ACT's transformer encoder/decoder + VAE encoder, the diffusion policy's
1-D conditional U-Net) with the widths of the chosen preset; vlaforge's octo layout is then widened
and deepened until its parameter count matches (`ours.py: match_octo`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

CAMERAS = ("corner", "gripper")
IMAGE_SIZE = 128
STATE_DIM = 4
ACTION_DIM = 4
FPS = 80.0
CHUNK = 4  # octo-tiny's action chunk: actions per policy call on both sides
HISTORY = 1  # octo-tiny's observation history
TASKS = ("reach the goal position", "open the drawer", "push the puck to the goal")
INSTRUCTION = TASKS[1]
IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
RESULT_TAG = "RESULT "  # a worker's last stdout line: RESULT {json}

# LeRobot policy widths per preset. "small" (the default) is CPU-sized: LeRobot's own widths with the
# transformer / U-Net narrowed so that a training step at batch 64 takes seconds, not minutes, on
# two shared cores. "lerobot" keeps every LeRobot 0.3.2 default width (ACT 51.6M, diffusion ~263M).
# Both keep ResNet-18 (the smallest torchvision backbone LeRobot accepts) and random initialisation.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "small": {
        "act": {"dim_model": 256, "n_heads": 8, "dim_feedforward": 1024, "n_encoder_layers": 4,
                "n_decoder_layers": 1, "n_vae_encoder_layers": 4, "latent_dim": 32},
        "diffusion": {"down_dims": (128, 256, 512), "kernel_size": 5, "n_groups": 8,
                      "diffusion_step_embed_dim": 128, "spatial_softmax_num_keypoints": 32},
    },
    "lerobot": {
        "act": {"dim_model": 512, "n_heads": 8, "dim_feedforward": 3200, "n_encoder_layers": 4,
                "n_decoder_layers": 1, "n_vae_encoder_layers": 4, "latent_dim": 32},
        "diffusion": {"down_dims": (512, 1024, 2048), "kernel_size": 5, "n_groups": 8,
                      "diffusion_step_embed_dim": 128, "spatial_softmax_num_keypoints": 32},
    },
}  # fmt: skip

# Settings both sides share so that one call yields the same thing: a chunk of CHUNK actions from one
# observation, with the same number of network evaluations for the diffusion models.
DIFFUSION_STEPS = 20  # vlaforge: DDPM over its 20-step schedule; LeRobot: DDPM, 20 inference steps
DIFFUSION_HORIZON = 8  # LeRobot's U-Net needs horizon % 2**len(down_dims) == 0; it executes CHUNK of them

# Which vlaforge head stands against which LeRobot policy.
PAIRS = {"act": "l1", "diffusion": "diffusion"}


def embodiment_stats() -> dict[str, dict[str, np.ndarray]]:
    """Normalisation statistics for both sides (those of `vlaforge bench`'s Meta-World stand-in).

    Images: per-channel (3, 1, 1) ImageNet mean/std, used by LeRobot's MEAN_STD visual normalisation.
    """

    def vec(std: float, dim: int) -> dict[str, np.ndarray]:
        full = lambda v: np.full(dim, v, np.float32)  # noqa: E731
        return {"mean": full(0.0), "std": full(std), "min": full(-1.0), "max": full(1.0)}

    image = {
        "mean": np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1),
        "std": np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1),
        "min": np.zeros((3, 1, 1), np.float32),
        "max": np.ones((3, 1, 1), np.float32),
    }
    stats: dict[str, dict[str, np.ndarray]] = {IMAGE_PREFIX + cam: dict(image) for cam in CAMERAS}
    stats[STATE_KEY] = vec(0.3, STATE_DIM)
    stats[ACTION_KEY] = vec(0.5, ACTION_DIM)
    return stats


def raw_observation(seed: int) -> dict[str, np.ndarray]:
    """One robot observation as numpy: uint8 (H, W, 3) per camera and float32 (S,) state."""
    rng = np.random.default_rng(seed)
    obs: dict[str, np.ndarray] = {
        IMAGE_PREFIX + cam: rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for cam in CAMERAS
    }
    obs[STATE_KEY] = rng.uniform(-0.5, 0.5, STATE_DIM).astype(np.float32)
    return obs


def sample_indices(n_frames: int, count: int, seed: int) -> list[int]:
    """The shuffled frame indices both dataset loaders read, in the same order."""
    return np.random.default_rng(seed).permutation(n_frames)[:count].tolist()


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; DataLoader workers are children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def time_calls(fn: Callable[[int], Any], runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds of this process) of `runs` calls fn(i) after `warmup` untimed calls.

    On a loaded machine the wall time includes the time the scheduler gave to other processes; the CPU
    time does not (with one torch thread it is the latency an idle core would give). Both are kept.
    """
    for i in range(warmup):
        fn(-1 - i)
    wall, cpu = [], []
    for i in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def time_per_thread_count(fn: Callable[[int], Any], spec: dict[str, Any]) -> dict[str, Any]:
    """`time_calls` at each of spec["threads"] torch threads -> {"<threads>": seconds + summary}."""
    import torch

    out = {}
    for threads in spec["threads"]:
        torch.set_num_threads(threads)
        wall, cpu = time_calls(fn, spec["runs"], spec["warmup"])
        out[str(threads)] = {"seconds": wall, "cpu_seconds": cpu, **summary(wall, cpu)}
    return out


def peak_rss_gb() -> float:
    """This process's peak resident memory (ru_maxrss is in kB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _one_thread(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def measure_loader(dataset: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """samples/s of torch DataLoader(dataset): spec batch_size, workers, warmup + batches, seed.

    Both sides run exactly this: the frame indices of `sample_indices` in that order, one torch thread
    in every process. Wall time: the `batches` batches after `warmup` batches (worker start-up is in the
    warm-up). CPU time, what the loading costs whatever the load of the machine: this process's CPU
    (`process_time`) plus the worker's (from /proc, read while it is still alive), over every batch
    including the warm-up (with a worker, batches are prefetched across the warm-up boundary, so only
    the whole run divides cleanly), per sample.
    """
    import torch

    torch.set_num_threads(1)
    B, W = spec["batch_size"], spec["workers"]
    n = (spec["warmup"] + spec["batches"]) * B
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=B, sampler=sample_indices(len(dataset), n, spec["seed"]), num_workers=W,
        worker_init_fn=_one_thread if W else None, drop_last=True,
    )  # fmt: skip
    cpu_start = time.process_time()
    it = iter(loader)
    worker_pids = [w.pid for w in getattr(it, "_workers", [])]
    worker_cpu0 = sum(proc_cpu_seconds(p) for p in worker_pids)  # fork: inherited nothing, ~0
    for _ in range(spec["warmup"]):
        batch = next(it)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(spec["batches"]):
        batch = next(it)
    elapsed = time.perf_counter() - t0
    if W:
        cpu = time.process_time() - cpu_start + sum(proc_cpu_seconds(p) for p in worker_pids) - worker_cpu0
        cpu_samples = n
    else:
        cpu, cpu_samples = time.process_time() - cpu0, spec["batches"] * B
    del it, loader
    samples = spec["batches"] * B
    return {
        "samples_per_s": samples / elapsed,
        "cpu_samples_per_s": cpu_samples / cpu if cpu > 0 else None,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "samples": samples,
        "cpu_samples": cpu_samples,
        "batch_shapes": {k: list(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)},
    }


class CpuTimedModules:
    """CPU milliseconds spent inside chosen sub-modules (forward hooks), per call, summed over repeated calls
    of a module (a diffusion U-Net runs once per denoising step). Use as a context manager."""

    def __init__(self, root: Any, names: list[str]):
        self.modules = {name: root.get_submodule(name) for name in names}
        self.seconds = dict.fromkeys(names, 0.0)
        self._start: dict[str, float] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> CpuTimedModules:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()

    def _pre(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._start[name] = time.process_time()

        return hook

    def _post(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self.seconds[name] += time.process_time() - self._start.pop(name)

        return hook


def count_flops(fn: Callable[[], Any]) -> dict[str, Any]:
    """FLOPs of one call by torch's FlopCounterMode (matmuls, convolutions, attention; a multiply-add = 2),
    total and per top-level module. CPU attention (`_scaled_dot_product_flash_attention_for_cpu`, missing
    from torch's registry) gets torch's SDPA formula, as in vlaforge.bench.flops."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    extra = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        extra[op] = lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v)
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=extra)
    with counter:
        fn()
    by_module = {
        name: int(sum(ops.values()))
        for name, ops in counter.get_flop_counts().items()
        if name != "Global" and name.count(".") <= 1
    }
    return {"total": int(counter.get_total_flops()), "by_module": by_module}


def summary(seconds: list[float], cpu: list[float] | None = None) -> dict[str, Any]:
    """Median / p90 / min / mean wall milliseconds (and the median CPU milliseconds when given)."""
    ms = np.asarray(seconds) * 1000.0
    out: dict[str, Any] = {
        "n": int(ms.size),
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "min_ms": round(float(ms.min()), 3),
        "mean_ms": round(float(statistics.fmean(ms)), 3),
    }
    if cpu is not None:
        out["cpu_median_ms"] = round(float(np.median(np.asarray(cpu) * 1000.0)), 3)
    return out


def worker_main(tasks: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """A worker process: runs JSON tasks {"task": name, ...} and answers each with one `RESULT {json}` line.

    With an argument, runs that one task and exits (for trying a task by hand). Without, it serves tasks
    read line by line from stdin until EOF or {"task": "exit"}: run.py keeps one worker per side alive for
    the whole benchmark, because importing torch + LeRobot costs seconds of CPU each time, which on a
    loaded machine at nice 19 is minutes. A task that raises answers {"error": traceback}.
    """
    if len(sys.argv) > 2:
        raise SystemExit(f"usage: {sys.argv[0]} ['<task json>']  (tasks: {sorted(tasks)})")
    lines = [sys.argv[1]] if len(sys.argv) == 2 else sys.stdin
    for line in lines:
        if not line.strip():
            continue
        spec = json.loads(line)
        name = spec.get("task")
        if name == "exit":
            break
        try:
            if name not in tasks:
                raise ValueError(f"unknown task {name!r}; this worker runs {sorted(tasks)}")
            out = tasks[name](spec)
        except Exception:  # reported to run.py, which records it and carries on with the next task
            out = {"error": traceback.format_exc()}
        sys.stdout.write(RESULT_TAG + json.dumps(out) + "\n")
        sys.stdout.flush()
