"""`export_onnx`: trace a policy's `ExportGraph` to ONNX, describe it, and prove it right.

The graph is traced with the dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, which
runs `torch.export` and translates with onnxscript) at opset 18 (the first with antialiased
`Resize`, which octo-tiny's 128 -> 64 px camera resize needs), with a dynamic batch axis. After
writing `model.onnx` and `export.json` the export is verified, not trusted:

* **equality**: `Policy.predict_batch` (the real PyTorch path: strings, its own tokenizer, noise
  from a seeded torch generator) and `OnnxPolicy.run` (the saved vocabulary, the same generator's
  noise fed as an input) on random images, states and instructions at batch 1 and 3; the largest
  absolute action difference must be <= `tolerance` (1e-4 in robot units by default), else
  `ExportError` (the files stay, marked unverified, for inspection);
* **latency**: `Policy.predict` vs `OnnxPolicy.predict` at batch 1, same thread count, interleaved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vlaforge
from vlaforge.export import ExportError, require_modules
from vlaforge.export.graph import BATCH, ExportGraph
from vlaforge.export.onnx import (
    ACTION_OUTPUT,
    META_FILE,
    MODEL_FILE,
    SCHEMA,
    TEXT_FEATURES_FILE,
    OnnxPolicy,
)
from vlaforge.policies.octo.policy import Policy
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, Observation

OPSET = 18
TOLERANCE = 1e-4
MAX_BATCH = 4096  # upper bound of the dynamic batch axis (torch.export needs one)


@dataclass
class ExportResult:
    """What `export_onnx` wrote and measured (also stored in export.json under "verification")."""

    directory: str
    model_bytes: int
    export_s: float
    max_abs_diff: float | None
    tolerance: float
    verified: bool
    latency_ms: dict[str, dict[str, float]] | None  # "torch" / "onnxruntime" -> median, min (batch 1)
    threads: int


def export_onnx(
    source: str | Path | Policy,
    out: str | Path,
    *,
    steps: int | None = None,
    instructions: Sequence[str] | None = None,
    opset: int = OPSET,
    verify: bool = True,
    tolerance: float = TOLERANCE,
    latency_runs: int = 20,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> ExportResult:
    """Export `source` (a `Policy`, a policy directory or a run directory) to `out`/model.onnx.

    steps: sampling steps to unroll (default: the head's own, as `predict` uses).
    instructions: language "minilm" only: instructions whose frozen features are precomputed into
        text_features.npz, so the robot needs no text model for them.
    verify: compare onnxruntime with PyTorch (and time both) after writing; latency_runs=0 skips timing.
    log: where progress lines go (None: silent).
    """
    require_modules("onnx", "onnxscript", "onnxruntime", purpose="ONNX export")
    import onnx

    say = log or (lambda _msg: None)
    policy = Policy.load(source, map_location="cpu") if isinstance(source, (str, Path)) else source
    graph = ExportGraph(policy, steps=steps)  # unsupported policies fail here, before any file is written
    c = policy.config
    if instructions and c.language != "minilm":
        raise ExportError(
            f"instructions=... precomputes MiniLM text features; this policy's language is '{c.language}' "
            "(its vocabulary is exported as is): omit them"
        )
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    model_path = d / MODEL_FILE

    say(f"exporting {c.recipe} / {c.head} ({graph.plan.kind}, {graph.plan.steps} steps) to {model_path} ...")
    t0 = time.perf_counter()
    with policy.evaluating(), torch.no_grad(), _quiet_exporter():
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        program = torch.onnx.export(
            graph,
            graph.example_inputs(batch=2, seed=seed),
            dynamo=True,
            dynamic_shapes={"tensors": tuple({0: batch} for _ in graph.inputs)},  # forward(*tensors)
            input_names=graph.input_names,
            output_names=[ACTION_OUTPUT],
            opset_version=opset,
            verbose=False,
        )
        program.save(str(model_path))
    onnx.checker.check_model(str(model_path))
    export_s = time.perf_counter() - t0

    meta = _describe(policy, graph, source, opset)
    if c.language == "minilm" and instructions:
        meta["language"].update(_save_text_features(policy, list(instructions), d))
    (d / META_FILE).write_text(json.dumps(meta, indent=2))
    result = ExportResult(str(d), model_path.stat().st_size, round(export_s, 2), None, tolerance, False, None,
                          torch.get_num_threads())  # fmt: skip
    say(f"wrote {model_path} ({result.model_bytes / 1e6:.1f} MB) and {META_FILE} in {export_s:.1f} s")
    if not verify:
        return result

    text_fn = _minilm_features(policy) if c.language == "minilm" else None
    runner = OnnxPolicy(d, threads=torch.get_num_threads(), text_encoder=text_fn)
    result.max_abs_diff = verify_against_torch(policy, runner, steps=steps, seed=seed)
    result.verified = result.max_abs_diff <= tolerance
    if result.verified and latency_runs > 0:
        result.latency_ms = compare_latency(policy, runner, runs=latency_runs, steps=steps, seed=seed)
    meta["verification"] = {**asdict(result), "batches": list(VERIFY_BATCHES), "dynamic_batch": BATCH}
    (d / META_FILE).write_text(json.dumps(meta, indent=2))
    if not result.verified:
        raise ExportError(
            f"ONNX export of {c.recipe}/{c.head} does not match PyTorch: max |onnxruntime - torch| = "
            f"{result.max_abs_diff:.3g} > tolerance {tolerance:g} (robot units). The files in {d} are kept for "
            "inspection and marked verified=false in export.json; please report this with the policy config."
        )
    say(
        f"verified: max |onnxruntime - torch| = {result.max_abs_diff:.2e} (tolerance {tolerance:g}, batch 1 and 3)"
    )
    if result.latency_ms is not None:
        t, o = result.latency_ms["torch"], result.latency_ms["onnxruntime"]
        say(
            f"latency per chunk, batch 1, {result.threads} thread(s), median (min) of {latency_runs}: torch eager "
            f"{t['median']:.2f} ms ({t['min']:.2f}), onnxruntime {o['median']:.2f} ms ({o['min']:.2f}): "
            f"{t['median'] / o['median']:.2f}x"
        )
    return result


VERIFY_BATCHES = (1, 3)


def verify_against_torch(
    policy: Policy, runner: OnnxPolicy, *, steps: int | None = None, seed: int = 0
) -> float:
    """Largest |onnxruntime - PyTorch| action difference over random inputs at batch 1 and 3.

    PyTorch side: `policy.predict_batch(steps=steps)` with a generator seeded `seed + B` (tokenizer, noise
    draws and all). ONNX side: the runner's own text encoding and the same generator's noise, through
    `runner.run`. steps: what the graph was exported with.
    """
    c = policy.config
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in VERIFY_BATCHES:
        texts = _random_instructions(policy, runner, rng, b)
        arrays: dict[str, np.ndarray] = {
            IMAGE_PREFIX + cam: rng.integers(0, 256, (b, c.history, h, w, 3), dtype=np.uint8)
            for cam, (h, w) in c.cameras.items()
        }
        arrays[STATE_KEY] = rng.normal(size=(b, c.history, c.state_dim)).astype(np.float32)
        batch: dict[str, Any] = {k: torch.from_numpy(v) for k, v in arrays.items()}
        batch["task"] = texts
        g = torch.Generator().manual_seed(seed + b)
        reference = policy.predict_batch(batch, steps=steps, generator=g).numpy()
        inputs = {**arrays, **runner.encode_text(texts)}
        noise = runner.draw_noise(b, torch.Generator().manual_seed(seed + b))
        if noise is not None:
            inputs["noise"] = noise
        actions = runner.run(inputs)  # (B, H, A)
        if actions.shape != reference.shape:
            raise ExportError(
                f"onnxruntime returned {actions.shape}, PyTorch {reference.shape} for batch {b}"
            )
        worst = max(worst, float(np.abs(actions - reference).max()))
    return worst


def compare_latency(
    policy: Policy,
    runner: OnnxPolicy,
    *,
    runs: int = 20,
    warmup: int = 3,
    steps: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Median and min ms per chunk of `Policy.predict(steps=steps)` and `OnnxPolicy.predict` at batch 1,
    rounds interleaved. On a loaded machine the median includes time the process was descheduled; the
    min is closer to what one call costs."""
    obs = random_observations(policy, seed)
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    calls = {"torch": lambda: policy.predict(obs, steps=steps), "onnxruntime": lambda: runner.predict(obs)}
    for i in range(warmup + runs):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {
        name: {"median": round(statistics.median(t), 3), "min": round(min(t), 3)} for name, t in times.items()
    }


def random_observations(policy: Policy, seed: int = 0, instruction: str | None = None) -> list[Observation]:
    """`history` observations with random images and states, sized from the policy's spec."""
    spec = policy.spec
    rng = np.random.default_rng(seed)
    if instruction is None:
        vocab = policy.tokenizer.vocab[2:] if policy.tokenizer is not None else ["pick", "up", "the", "block"]
        instruction = " ".join(rng.choice(vocab, size=min(4, len(vocab))))
    return [
        Observation(
            images={
                cam: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for cam, (h, w) in spec.cameras.items()
            },
            state=rng.normal(size=spec.state_dim).astype(np.float32),
            instruction=instruction,
        )
        for _ in range(spec.history)
    ]


# ---------------------------------------------------------------------------------------------- helpers


def _random_instructions(policy: Policy, runner: OnnxPolicy, rng: np.random.Generator, n: int) -> list[str]:
    """Words: random vocabulary words (some too long, one unknown word, punctuation) to exercise the
    tokenizer; MiniLM: the precomputed instructions, else a fixed one."""
    if policy.tokenizer is None:
        known = runner.precomputed_instructions or ["pick up the block"]
        return [known[i % len(known)] for i in range(n)]
    words = policy.tokenizer.vocab[2:] or ["x"]
    out = []
    for i in range(n):
        k = int(rng.integers(1, policy.config.text_max_len + 4))  # sometimes longer than max_len
        text = " ".join(rng.choice(words, size=k))
        out.append(text.capitalize() + ("!" if i % 2 else " zzunknownzz"))
    return out


def _minilm_features(policy: Policy) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray]]:
    enc: Any = policy.text_encoder

    def features(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        feats, mask = enc.frozen_features(texts)  # (B, L, Hd), (B, L)
        return feats.numpy(), mask.numpy()

    return features


def _save_text_features(policy: Policy, instructions: list[str], d: Path) -> dict[str, Any]:
    unique = sorted(set(instructions))
    feats, mask = _minilm_features(policy)(unique)  # (N, L, Hd), (N, L)
    np.savez(d / TEXT_FEATURES_FILE, features=feats.astype(np.float32), mask=mask.astype(bool))
    return {"instructions": unique, "features_file": TEXT_FEATURES_FILE}


def _describe(policy: Policy, graph: ExportGraph, source: Any, opset: int) -> dict[str, Any]:
    """export.json: everything a robot needs besides model.onnx."""
    import onnx
    import onnxruntime
    import onnxscript

    c = policy.config
    if c.language == "words":
        assert policy.tokenizer is not None
        language: dict[str, Any] = {
            "type": "words",
            "max_len": c.text_max_len,
            "vocab": policy.tokenizer.vocab,
        }
    else:
        enc: Any = policy.text_encoder
        language = {
            "type": "minilm",
            "max_len": c.text_max_len,
            "hidden_size": int(enc.hidden_size),
            "model_dir": enc.local_dir,
            "instructions": [],
            "features_file": None,
            "note": "the graph takes the frozen text model's last hidden states (text.features); run the "
            "text model outside, or precompute instructions with --instructions",
        }
    normalization = {}
    for key in (STATE_KEY, ACTION_KEY):
        fn = policy.normalizer.features[policy.normalizer.resolve(key)]
        normalization[key] = {
            "mode": fn.mode,
            "clip": fn.clip,
            "stats": {k: v.tolist() for k, v in fn.stats.items()},
            "mask": None if fn.mask is None else fn.mask.tolist(),
        }
    spec = policy.spec
    return {
        "schema": SCHEMA,
        "format": "onnx",
        "vlaforge": vlaforge.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": None if isinstance(source, Policy) else str(source),
        "recipe": c.recipe,
        "head": c.head,
        "sampler": graph.plan.to_json(),
        "exporter": {
            "method": "torch.onnx.export(dynamo=True)",
            "opset": opset,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "spec": {
            "cameras": {k: list(v) for k, v in spec.cameras.items()},
            "state_dim": spec.state_dim,
            "action_dim": spec.action_dim,
            "chunk": spec.chunk,
            "history": spec.history,
            "fps": spec.fps,
        },
        "inputs": [s.to_json() for s in graph.inputs],
        "outputs": [s.to_json() for s in graph.outputs],
        "language": language,
        "normalization": {
            "applied": "inside the graph (state in, actions out, robot units)",
            **normalization,
        },
        "config": c.to_dict(),
        "verification": None,
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs every stage and warns about optional torchvision ops; keep the CLI output ours."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
