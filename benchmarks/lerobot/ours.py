"""vlaforge's side of the comparison: one measurement per process, in /work/main/.venv.

    .venv/bin/python benchmarks/lerobot/ours.py '{"task": "versions"}'

`run.py` starts it; each call prints one `RESULT {json}` line. Tasks mirror `lerobot_side.py`:

  versions    vlaforge / torch / numpy / python versions and `vlaforge.info.machine_info()`
  match       the octo width/depth whose parameter count is closest to each LeRobot policy's
              (`match_octo`); the l1 head stands against ACT, the diffusion head against LeRobot's
              diffusion policy
  dataset     samples/s of `vlaforge.data.Dataset` (history 1, chunk CHUNK, i.e. octo-tiny's windows)
              through a torch DataLoader with the same batch size, workers and frame indices as
              LeRobot's; variant "video" decodes the mp4s (like for like), "cache" reads the
              decoded-frame cache (`Dataset.cache_frames()`, what `vlaforge train` uses by default)
  inference   `Policy.predict([observation])` at batch 1 from the same numpy observations: one call
              = one chunk of CHUNK actions in robot units (validation, batching, encoders,
              transformer, head sampling, unnormalisation)
  train       seconds per optimizer step: `policy.loss(batch)` -> backward -> clip_grad_norm_ ->
              AdamW (the trainer's `make_optimizer`), on collated in-memory batches shaped like
              Dataset output. Variant "matched": augmentation off, no EMA (LeRobot's ACT / diffusion
              steps have neither); variant "default": what `vlaforge train` does (augmentation on,
              EMA update after the step)
  pi0         latency of one 50-action chunk of our `pi0` recipe at its real size (bf16 or fp32)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    ACTION_DIM,
    ACTION_KEY,
    CAMERAS,
    CHUNK,
    HISTORY,
    IMAGE_PREFIX,
    IMAGE_SIZE,
    INSTRUCTION,
    PAIRS,
    STATE_DIM,
    STATE_KEY,
    count_flops,
    measure_loader,
    peak_rss_gb,
    raw_observation,
    summary,
    time_calls,
    time_per_thread_count,
    worker_main,
)

from vlaforge.bench.embodiment import metaworld_embodiment, parameter_counts
from vlaforge.bench.flops import count_stage_flops
from vlaforge.inference.prefix_cache import StagedPredictor, StageTimer
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import make_policy
from vlaforge.types import Observation

BASE_RECIPE = "octo-tiny"  # encoders (64x64 resize, conv stem), history 1, chunk 4; width/depth are matched
WIDTHS = range(128, 1536 + 1, 64)
DEPTHS = range(2, 33)
OCTO_ASPECT = 32.0  # width / depth of octo-tiny (128 / 4) and octo-small (384 / 12)
MATCH_TOLERANCE = 0.02  # candidates within 2 % of the target count; among them the most Octo-shaped one


def octo_shape(width: int, depth: int) -> dict[str, int]:
    """Transformer overrides for one width/depth: MLP 4x width, head size 32 (< 256 wide) or 64 (Octo's)."""
    head_dim = 32 if width < 256 else 64
    return {"width": width, "depth": depth, "heads": width // head_dim, "mlp_dim": 4 * width}


def build(head: str, shape: dict[str, int] | None, *, augment: bool = True, seed: int = 0) -> Policy:
    """Random-weight octo policy on the Meta-World embodiment with `head` and the given transformer shape."""
    torch.manual_seed(seed)
    overrides: dict[str, Any] = {"head": head, "chunk": CHUNK, "history": HISTORY, "augment": augment}
    overrides.update(shape or {})
    return make_policy(BASE_RECIPE, metaworld_embodiment(IMAGE_SIZE), **overrides)


def match_octo(head: str, target: int) -> dict[str, Any]:
    """The octo shape whose parameter count is closest to `target`.

    Parameters are exactly linear in depth for a fixed width (every block is the same), so two builds
    per width (depth 1 and 2) give the count of every depth. Among the shapes within MATCH_TOLERANCE of
    the target, the one closest to Octo's width/depth ratio wins; if none is that close, the closest count.
    """
    candidates = []
    for width in WIDTHS:
        p1 = build(head, octo_shape(width, 1)).num_parameters()
        p2 = build(head, octo_shape(width, 2)).num_parameters()
        if p2 > target * (1 + MATCH_TOLERANCE) and candidates:
            break  # wider models overshoot even at the smallest depth
        block, base = p2 - p1, p1 - (p2 - p1)
        for depth in DEPTHS:
            params = base + depth * block
            rel = abs(params / target - 1.0)
            aspect = abs(math.log((width / depth) / OCTO_ASPECT))
            candidates.append((rel, aspect, width, depth, params))
    close = [c for c in candidates if c[0] <= MATCH_TOLERANCE]
    rel, _, width, depth, params = min(close, key=lambda c: c[1]) if close else min(candidates)
    shape = octo_shape(width, depth)
    built = build(head, shape).num_parameters()
    if built != params:
        raise AssertionError(f"parameter count is not linear in depth: predicted {params}, built {built}")
    return {"shape": shape, "params": built, "target": target, "relative_difference": params / target - 1.0}


# ------------------------------------------------------------------------------------------------ tasks


def task_versions(spec: dict[str, Any]) -> dict[str, Any]:
    import platform

    import vlaforge
    from vlaforge.info import machine_info

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "vlaforge": vlaforge.__version__}  # fmt: skip
    try:
        import av

        versions["av"] = av.__version__
    except ImportError:
        versions["av"] = None
    from vlaforge.bench.measure import cpu_flags

    machine = {
        **machine_info(),
        "cpu_flags": cpu_flags(["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"]),
    }
    return {"versions": versions, "machine": machine}


def task_match(spec: dict[str, Any]) -> dict[str, Any]:
    """spec["targets"]: LeRobot family -> parameter count; returns the matched shape per family."""
    out = {}
    for family, target in spec["targets"].items():
        head = PAIRS[family]
        m = match_octo(head, int(target))
        m["head"] = head
        m["params_detail"] = parameter_counts(build(head, m["shape"]))
        out[family] = m
    recipe = {head: parameter_counts(build(head, None)) for head in PAIRS.values()}
    return {"matched": out, "recipe_params": recipe}


def _cache_is_valid(ds: Any) -> bool:
    """True when <root>/.cache/frames already holds every camera for these exact files (no rebuild)."""
    manifest = ds.root / ".cache" / "frames" / "manifest.json"
    if not manifest.is_file():
        return False
    m = json.loads(manifest.read_text())
    return m.get("fingerprint") == ds._cache_fingerprint() and set(ds.camera_keys) <= set(m.get("keys", []))


_DATASETS: dict[tuple[str, str], tuple[Any, float]] = {}


def task_dataset(spec: dict[str, Any]) -> dict[str, Any]:
    """vlaforge.data.Dataset(history=1, chunk=CHUNK) through common.measure_loader (opened once per process)."""
    from vlaforge.data import Dataset

    torch.set_num_threads(1)
    root, variant = spec["root"], spec.get("variant", "video")
    if (root, variant) not in _DATASETS:
        t0 = time.perf_counter()
        ds = Dataset(Path(root), history=HISTORY, chunk=CHUNK)
        if variant == "cache":
            if not _cache_is_valid(ds):
                raise RuntimeError(
                    f"{ds.root}/.cache/frames is missing or stale; build it once with "
                    "vlaforge.data.Dataset(root).cache_frames() (this benchmark does not write gigabytes itself)"
                )
            ds.cache_frames()  # validates the manifest and switches reads to the memmaps
        _DATASETS[(root, variant)] = (ds, time.perf_counter() - t0)
    ds, open_s = _DATASETS[(root, variant)]
    return {**measure_loader(ds, spec), "open_s": open_s, "frames": len(ds), "version": ds.version}


def observation(seed: int) -> Observation:
    raw = raw_observation(seed)
    return Observation(
        images={cam: raw[IMAGE_PREFIX + cam] for cam in CAMERAS},
        state=raw[STATE_KEY],
        instruction=INSTRUCTION,
    )


def task_inference(spec: dict[str, Any]) -> dict[str, Any]:
    policy = build(spec["head"], spec.get("shape")).eval()
    observations = [observation(1000 + i) for i in range(8)]
    out: dict[str, Any] = {"params": parameter_counts(policy), "threads": {}}

    def call(i: int) -> np.ndarray:
        return policy.predict([observations[i % len(observations)]]).actions  # (H, A)

    variants = fast_path_calls(
        policy,
        observations,
        ["prefix_cache"] * bool(spec.get("prefix_cache")) + list(spec.get("fast_paths", [])),
    )
    for name in variants:
        out[name] = {"threads": {}}
    for threads in spec["threads"]:
        torch.set_num_threads(threads)
        wall, cpu = time_calls(call, spec["runs"], spec["warmup"])
        out["threads"][str(threads)] = {"seconds": wall, "cpu_seconds": cpu, **summary(wall, cpu)}
        for name, fn in variants.items():  # `vlaforge bench`'s fast paths on the same policy, same calls
            wall, cpu = time_calls(fn, spec["runs"], spec["warmup"])
            out[name]["threads"][str(threads)] = {"seconds": wall, "cpu_seconds": cpu, **summary(wall, cpu)}
    reference = call(0)
    out["action_shape"] = list(reference.shape)
    for name, fn in variants.items():
        out[name]["max_abs_diff"] = float(np.abs(fn(0) - reference).max())  # robot units, vs the plain call
    runs = spec.get("breakdown_runs", 5)
    out["breakdown"] = breakdown(policy, observations, runs) if runs else None
    return out


def task_pi0(spec: dict[str, Any]) -> dict[str, Any]:
    """Our `pi0` recipe at its real size (SigLIP So400m/14-224 + Gemma-2B + the 1024-wide expert, chunk
    50, 10 Euler steps), random weights, on the Meta-World embodiment (both cameras resized to 224 inside
    the policy), in `spec["dtype"]` (bfloat16: `Pi0Policy.cast_for_inference`, as LeRobot runs π0).
    One call = `Policy.predict([observation])`: resize, tokenize, normalize, vision, prefix into the KV
    cache, 10 expert steps, unnormalize. The prompt uses the dataset-word tokenizer (the PaliGemma
    tokenizer file is not available offline) padded to the same 48 tokens, so the token embedding
    is small; the parameter count without it is what matches LeRobot's."""
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))
    torch.manual_seed(spec.get("seed", 0))
    t0 = time.perf_counter()
    policy = make_policy("pi0", metaworld_embodiment(IMAGE_SIZE), language="words", text_max_len=48).eval()
    if dtype != torch.float32:
        policy.cast_for_inference(dtype)
    build_s = time.perf_counter() - t0
    observations = [observation(1000 + i) for i in range(4)]

    def call(i: int) -> np.ndarray:
        return policy.predict([observations[i % len(observations)]]).actions  # (50, A)

    total = sum(p.numel() for p in policy.parameters())
    embed = policy.backbone.embed_tokens.weight.numel()
    out: dict[str, Any] = {
        "params": {"total": total, "token_embedding": embed, "without_token_embedding": total - embed},
        "dtype": str(dtype),
        "build_s": round(build_s, 1),
        "prefix_tokens": policy.n_image_tokens + policy.config.text_max_len,
        "steps": policy.config.steps,
        "threads": time_per_thread_count(call, spec),
    }
    out["action_shape"] = list(call(0).shape)
    out["peak_rss_gb"] = round(peak_rss_gb(), 2)
    return out


# The fast paths the LeRobot comparison times besides the plain call (`vlaforge bench` has each one).
FAST_PATHS = (
    "prefix_cache",
    "int8",
    "int8_prefix_cache",
    "bf16",
    "bf16_weights",
    "bf16_weights_prefix_cache",
)


def fast_path_calls(policy: Policy, observations: list[Observation], names: list[str]) -> dict[str, Any]:
    """name -> call(i) -> (H, A) actions, for `FAST_PATHS`: the task-prefix KV cache (`StagedPredictor`),
    int8 dynamic quantization of the transformer and head Linears (`fastpaths.int8_copy`), both, bf16
    autocast, and the transformer's weights cast to bf16 once (`fastpaths.bf16_copy`), alone and with the
    prefix cache."""
    from vlaforge.inference.fastpaths import bf16_copy, int8_copy

    def obs(i: int) -> list[Observation]:
        return [observations[i % len(observations)]]

    calls: dict[str, Any] = {}
    for name in names:
        if name == "prefix_cache":
            staged = StagedPredictor(policy, prefix_cache=True)
            calls[name] = lambda i, staged=staged: staged.predict(obs(i))[0]
        elif name == "int8":
            q = int8_copy(policy).eval()
            calls[name] = lambda i, q=q: q.predict(obs(i)).actions
        elif name == "int8_prefix_cache":
            staged_q = StagedPredictor(int8_copy(policy).eval(), prefix_cache=True)
            calls[name] = lambda i, staged_q=staged_q: staged_q.predict(obs(i))[0]
        elif name == "bf16":

            def call_bf16(i: int) -> np.ndarray:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return policy.predict(obs(i)).actions

            calls[name] = call_bf16
        elif name == "bf16_weights":
            b = bf16_copy(policy)
            calls[name] = lambda i, b=b: b.predict(obs(i)).actions
        elif name == "bf16_weights_prefix_cache":
            staged_b = StagedPredictor(bf16_copy(policy), prefix_cache=True)
            calls[name] = lambda i, staged_b=staged_b: staged_b.predict(obs(i))[0]
        else:
            raise ValueError(f"unknown fast path {name!r}; choose from {FAST_PATHS}")
    return calls


class CpuStageTimer(StageTimer):
    """vlaforge.bench's stage timer charging CPU time (process_time) instead of wall time: on a loaded
    machine the wall time of a stage is mostly other jobs' time."""

    def __init__(self, device: torch.device):
        super().__init__(device)
        self._last = time.process_time()

    def mark(self, stage: str) -> None:
        now = time.process_time()
        self.seconds[stage] += now - self._last
        self._last = now


def breakdown(policy: Policy, observations: list[Observation], runs: int) -> dict[str, Any]:
    """Where one chunk's time goes, at 1 thread: `vlaforge bench`'s stages (tokenize: image/state/text
    encoders; transformer; head: all sampling steps; rest: validation, batching, unnormalisation) as
    median CPU ms over `runs` calls of `StagedPredictor` (bit-identical to predict), and FLOPs per stage."""
    torch.set_num_threads(1)
    staged = StagedPredictor(policy)
    per_call: dict[str, list[float]] = {}
    for i in range(runs):
        _, seconds = staged.predict([observations[i % len(observations)]], timer=CpuStageTimer(policy.device))
        for k, v in seconds.items():
            per_call.setdefault(k, []).append(v)
    cpu_ms = {k: round(float(np.median(v)) * 1000, 2) for k, v in per_call.items()}
    return {"cpu_ms": cpu_ms, "flops": count_stage_flops(staged, [observations[0]]), "runs": runs}


def train_batch(batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
    """A collated batch with the layout of DataLoader(vlaforge.data.Dataset(history=1, chunk=CHUNK))."""
    B = batch_size
    batch: dict[str, Any] = {
        IMAGE_PREFIX + cam: torch.from_numpy(
            rng.integers(0, 256, (B, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        )
        for cam in CAMERAS
    }  # (B, H, W, 3) uint8
    batch[STATE_KEY] = torch.from_numpy(rng.normal(0, 0.3, (B, STATE_DIM)).astype(np.float32))  # (B, S)
    batch[ACTION_KEY] = torch.from_numpy(rng.uniform(-1, 1, (B, CHUNK, ACTION_DIM)).astype(np.float32))
    batch[f"{ACTION_KEY}_is_pad"] = torch.zeros(B, CHUNK, dtype=torch.bool)  # (B, H)
    batch["task"] = [INSTRUCTION] * B
    return batch


def task_train(spec: dict[str, Any]) -> dict[str, Any]:
    """Both variants in one process, alternating step by step so load hits them alike."""
    from vlaforge.policies.recipes import get_recipe
    from vlaforge.train.ema import EMA
    from vlaforge.train.trainer import make_optimizer

    torch.set_num_threads(spec["threads"])
    train_cfg = get_recipe(BASE_RECIPE).train
    variants = {"matched": {"augment": False, "ema": False}, "default": {"augment": True, "ema": True}}
    steppers = {}
    for name, v in variants.items():
        policy = build(spec["head"], spec.get("shape"), augment=v["augment"]).train()
        opt = make_optimizer(policy, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
        ema = EMA(policy, train_cfg["ema_decay"]) if v["ema"] else None
        steppers[name] = (policy, opt, ema)
    rng = np.random.default_rng(0)
    batches = [train_batch(spec["batch_size"], rng) for _ in range(2)]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    losses: list[float] = []

    def step(name: str, i: int) -> tuple[float, float]:
        policy, opt, ema = steppers[name]
        c0, t0 = time.process_time(), time.perf_counter()
        loss, _ = policy.loss(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), train_cfg["grad_clip"])
        opt.step()
        if ema is not None:
            ema.update(policy)
        losses.append(float(loss.detach()))
        return time.perf_counter() - t0, time.process_time() - c0

    order = list(variants)
    for i in range(spec["warmup"] + spec["steps"]):
        for name in order if i % 2 == 0 else order[::-1]:
            wall, c = step(name, i)
            if i >= spec["warmup"]:
                seconds[name].append(wall)
                cpu[name].append(c)
    if not all(np.isfinite(losses)):
        raise FloatingPointError(f"vlaforge {spec['head']}: non-finite training loss {losses}")
    policy = steppers["matched"][0]
    flops = count_flops(lambda: step("matched", 0)) if spec.get("count_flops") else None
    return {
        "flops_per_step": flops,
        "variants": {
            name: {"seconds": s, "cpu_seconds": cpu[name], **summary(s, cpu[name]), **variants[name]}
            for name, s in seconds.items()
        },
        "params": parameter_counts(policy),
        "optimizer": "AdamW",
        "grad_clip_norm": train_cfg["grad_clip"],
    }


if __name__ == "__main__":
    worker_main(
        {
            "versions": task_versions,
            "match": task_match,
            "dataset": task_dataset,
            "inference": task_inference,
            "train": task_train,
            "pi0": task_pi0,
        }
    )
