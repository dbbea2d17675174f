"""LeRobot's side of the comparison: one measurement per process, in the LeRobot venv (/work/lerobot-venv).

    PYTHONPATH=benchmarks/lerobot/torchvision_stub:benchmarks/lerobot \
        /work/lerobot-venv/bin/python benchmarks/lerobot/lerobot_side.py '{"task": "versions"}'

`run.py` starts it; each call prints one `RESULT {json}` line. Tasks:

  versions    lerobot / torch / numpy / python / av / datasets / diffusers versions, and proof that
              `torchvision` is the stand-in (benchmarks/lerobot/torchvision_stub), not a real build
  params      parameter counts of ACT and the diffusion policy at a size preset (common.SIZES)
  dataset     samples/s of LeRobotDataset (v2.1) through a torch DataLoader: batch B, W workers, the
              frame indices of common.sample_indices, `delta_timestamps` = CHUNK future actions
  inference   latency of one action chunk at batch 1, per torch thread count, the way LeRobot's robot
              loop (`lerobot/utils/control_utils.py: predict_action`) runs a policy: numpy observation
              -> float tensors (C, H, W) in [0, 1] -> `policy.select_action` right after `reset()`
              (so the action queue is empty and the whole chunk is computed)
  train       seconds per optimizer step as `lerobot/scripts/train.py: update_policy` takes it
              (forward -> backward -> clip_grad_norm_ -> optimizer.step -> zero_grad), on in-memory
              batches shaped like LeRobotDataset output, with the policy's own optimizer preset
  pi0         latency of one 50-action chunk of LeRobot's π0 model at its real size (3.5B, bf16);
              needs the `pi0` extra (transformers<4.52) and pytest (paligemma_with_expert imports it)
"""

from __future__ import annotations

import json
import platform
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
    DIFFUSION_HORIZON,
    DIFFUSION_STEPS,
    IMAGE_PREFIX,
    IMAGE_SIZE,
    INSTRUCTION,
    SIZES,
    STATE_DIM,
    STATE_KEY,
    CpuTimedModules,
    count_flops,
    embodiment_stats,
    measure_loader,
    peak_rss_gb,
    raw_observation,
    summary,
    time_calls,
    time_per_thread_count,
    worker_main,
)

# ---------------------------------------------------------------------------------------------- policies


def _features() -> tuple[dict[str, Any], dict[str, Any]]:
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {
        IMAGE_PREFIX + cam: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE))
        for cam in CAMERAS
    }
    inputs[STATE_KEY] = PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))
    outputs = {ACTION_KEY: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}
    return inputs, outputs


def build_policy(family: str, size: str, seed: int = 0) -> torch.nn.Module:
    """ACT or the diffusion policy from a local config: random weights, no pretrained backbone."""
    inputs, outputs = _features()
    common_kw = dict(
        input_features=inputs, output_features=outputs, device="cpu", push_to_hub=False,
        pretrained_backbone_weights=None, **SIZES[size][family],
    )  # fmt: skip
    torch.manual_seed(seed)
    if family == "act":
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy

        cfg = ACTConfig(chunk_size=CHUNK, n_action_steps=CHUNK, **common_kw)
        return ACTPolicy(cfg, dataset_stats=embodiment_stats())
    if family == "diffusion":
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

        cfg = DiffusionConfig(
            n_obs_steps=1, horizon=DIFFUSION_HORIZON, n_action_steps=CHUNK, crop_shape=None,
            noise_scheduler_type="DDPM", num_inference_steps=DIFFUSION_STEPS, **common_kw,
        )  # fmt: skip
        return DiffusionPolicy(cfg, dataset_stats=embodiment_stats())
    raise ValueError(f"unknown LeRobot policy family {family!r}; expected 'act' or 'diffusion'")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(family: str, policy: torch.nn.Module) -> dict[str, int]:
    """Total trainable parameters (normalisation buffers are frozen Parameters in LeRobot: excluded),
    and the ResNet backbone's share."""
    named = [(n, p.numel()) for n, p in policy.named_parameters() if p.requires_grad]
    total = sum(k for _, k in named)
    if family == "act":
        backbone = count(policy.model.backbone)
        # the VAE encoder (model.vae_encoder*) only runs in training: inference samples the latent as 0
        inference = total - sum(k for n, k in named if n.startswith("model.vae_encoder"))
    else:
        backbone = count(policy.diffusion.rgb_encoder.backbone)
        inference = total
    return {"total": total, "backbone": backbone, "used_at_inference": inference}


# ------------------------------------------------------------------------------------------------ tasks


def task_versions(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md

    import torchvision

    if not getattr(torchvision, "IS_STUB", False):
        raise RuntimeError(f"expected the torchvision stand-in, imported {torchvision.__file__}")
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("lerobot", "av", "datasets", "diffusers", "huggingface-hub", "torchcodec", "torchvision"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    versions["torchvision_imported"] = f"stub {torchvision.__version__} from {torchvision.__file__}"
    return {"versions": versions}


def task_params(spec: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for family in ("act", "diffusion"):
        out[family] = param_counts(family, build_policy(family, spec["size"]))
    return {"params": out}


_DATASETS: dict[tuple[str, str], tuple[Any, float]] = {}


def task_dataset(spec: dict[str, Any]) -> dict[str, Any]:
    """LeRobotDataset (v2.1) with `delta_timestamps` = the CHUNK future actions, through common.measure_loader.

    The dataset object is opened once per worker process (its open time is reported) and reused by
    later repeats, as a training run would.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    torch.set_num_threads(1)
    root, backend = spec["root"], spec.get("backend", "pyav")
    if (root, backend) not in _DATASETS:
        fps = float(json.loads((Path(root) / "meta" / "info.json").read_text())["fps"])
        t0 = time.perf_counter()
        ds = LeRobotDataset(
            "local/mt10",
            root=root,
            delta_timestamps={ACTION_KEY: [k / fps for k in range(CHUNK)]},
            video_backend=backend,
        )
        _DATASETS[(root, backend)] = (ds, time.perf_counter() - t0)
    ds, open_s = _DATASETS[(root, backend)]
    return {
        **measure_loader(ds, spec),
        "open_s": open_s,
        "frames": len(ds),
        "version": ds.meta.info["codebase_version"],
    }


def to_policy_batch(obs: dict[str, np.ndarray]) -> dict[str, Any]:
    """LeRobot's predict_action conversion: uint8 (H, W, 3) -> float32 (1, 3, H, W) / 255; state (1, S)."""
    batch: dict[str, Any] = {}
    for name, value in obs.items():
        t = torch.from_numpy(value)
        if "image" in name:
            t = (t.type(torch.float32) / 255).permute(2, 0, 1).contiguous()
        batch[name] = t.unsqueeze(0)
    batch["task"] = INSTRUCTION
    batch["robot_type"] = ""
    return batch


def task_inference(spec: dict[str, Any]) -> dict[str, Any]:
    policy = build_policy(spec["family"], spec["size"]).eval()
    observations = [raw_observation(1000 + i) for i in range(8)]
    out: dict[str, Any] = {"params": param_counts(spec["family"], policy), "threads": {}}

    def call(i: int) -> torch.Tensor:
        with torch.inference_mode():
            policy.reset()  # empty action queue: this call computes a whole chunk
            return policy.select_action(to_policy_batch(observations[i % len(observations)]))

    for threads in spec["threads"]:
        torch.set_num_threads(threads)
        wall, cpu = time_calls(call, spec["runs"], spec["warmup"])
        out["threads"][str(threads)] = {"seconds": wall, "cpu_seconds": cpu, **summary(wall, cpu)}
    first = call(0)
    out["action_shape"] = list(first.shape)
    out["chunk_computed"] = int(policy.config.n_action_steps)
    runs = spec.get("breakdown_runs", 5)
    out["breakdown"] = breakdown(spec["family"], policy, call, runs) if runs else None
    return out


BREAKDOWN_MODULES = {
    "act": ["model.backbone", "model.encoder", "model.decoder"],
    "diffusion": ["diffusion.rgb_encoder", "diffusion.unet"],
}


def breakdown(family: str, policy: torch.nn.Module, call: Any, runs: int) -> dict[str, Any]:
    """Where one chunk's time goes, at 1 thread: median CPU ms inside the main sub-modules (the rest:
    input conversion, normalisation, queues, the scheduler's arithmetic) and FLOPs per top-level module."""
    torch.set_num_threads(1)
    names = BREAKDOWN_MODULES[family]
    per_call: dict[str, list[float]] = {n: [] for n in [*names, "rest", "total"]}
    for i in range(runs):
        with CpuTimedModules(policy, names) as timed:
            c0 = time.process_time()
            call(i)
            total = time.process_time() - c0
        for n in names:
            per_call[n].append(timed.seconds[n])
        per_call["rest"].append(total - sum(timed.seconds.values()))
        per_call["total"].append(total)
    cpu_ms = {n: round(float(np.median(v)) * 1000, 2) for n, v in per_call.items()}
    return {"cpu_ms": cpu_ms, "flops": count_flops(lambda: call(0)), "runs": runs}


def task_pi0(spec: dict[str, Any]) -> dict[str, Any]:
    """LeRobot's π0 model (`PI0FlowMatching`) at its one size (PaliGemma-3B + the 300M expert, hard-coded
    in `PaliGemmaWithExpertConfig`), random weights, in bfloat16 as LeRobot builds it (its
    `to_bfloat16_like_physical_intelligence`). One call = `sample_actions` (prefix into the KV cache,
    10 Euler steps of the expert) = one 50-action chunk, from inputs shaped as `PI0Policy` prepares
    them: `cameras` images resized to 224 in [-1, 1], 48 prompt tokens (`prompt_tokens` real, the rest
    padding), the state padded to 32. `PI0Policy` itself cannot be built offline (hub tokenizer), so
    its resize / tokenize / normalize steps around the model are not timed here."""
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from lerobot.policies.pi0.modeling_pi0 import PI0FlowMatching

    torch.manual_seed(spec.get("seed", 0))
    cfg = PI0Config()
    t0 = time.perf_counter()
    model = PI0FlowMatching(cfg).eval()
    build_s = time.perf_counter() - t0
    size = cfg.resize_imgs_with_padding[0]
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(1, 3, size, size, generator=g) * 2 - 1 for _ in range(spec["cameras"])]
    img_masks = [torch.ones(1, dtype=torch.bool) for _ in images]
    n_text = cfg.tokenizer_max_length
    lang_tokens = torch.randint(0, 257152, (1, n_text), generator=g)
    lang_masks = torch.arange(n_text)[None] < spec["prompt_tokens"]  # (1, 48): LeRobot pads on the right
    state = torch.randn(1, cfg.max_state_dim, generator=g)

    def call(i: int) -> torch.Tensor:
        with torch.no_grad():  # as PI0Policy.select_action
            return model.sample_actions(images, img_masks, lang_tokens, lang_masks, state)

    dtypes: dict[str, int] = {}
    for p in model.parameters():
        dtypes[str(p.dtype)] = dtypes.get(str(p.dtype), 0) + p.numel()
    embed = model.paligemma_with_expert.paligemma.get_input_embeddings().weight.numel()
    total = count(model)
    out: dict[str, Any] = {
        "params": {"total": total, "token_embedding": embed, "without_token_embedding": total - embed},
        "param_dtypes": dtypes,
        "build_s": round(build_s, 1),
        "prefix_tokens": len(images) * 256 + n_text,
        "steps": cfg.num_steps,
        "threads": time_per_thread_count(call, spec),
    }
    out["action_shape"] = list(call(0).shape)
    out["peak_rss_gb"] = round(peak_rss_gb(), 2)
    return out


def train_batch(family: str, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Random batch shaped like LeRobotDataset output for the policy's delta timestamps."""
    steps_obs = 1
    steps_act = CHUNK if family == "act" else DIFFUSION_HORIZON
    B = batch_size

    def image() -> torch.Tensor:
        x = (
            torch.from_numpy(rng.integers(0, 256, (B, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)).float()
            / 255
        )
        return x if family == "act" else x.unsqueeze(1)  # (B, 3, H, W) | (B, n_obs, 3, H, W)

    batch: dict[str, Any] = {IMAGE_PREFIX + cam: image() for cam in CAMERAS}
    state = torch.from_numpy(rng.normal(0, 0.3, (B, STATE_DIM)).astype(np.float32))
    batch[STATE_KEY] = state if family == "act" else state.unsqueeze(1).expand(B, steps_obs, STATE_DIM)
    batch[ACTION_KEY] = torch.from_numpy(rng.uniform(-1, 1, (B, steps_act, ACTION_DIM)).astype(np.float32))
    batch[f"{ACTION_KEY}_is_pad"] = torch.zeros(B, steps_act, dtype=torch.bool)
    batch["task"] = [INSTRUCTION] * B
    return batch


def task_train(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(spec["threads"])
    family = spec["family"]
    policy = build_policy(family, spec["size"])
    policy.train()
    opt_cfg = policy.config.get_optimizer_preset()
    optimizer = opt_cfg.build(policy.get_optim_params())
    rng = np.random.default_rng(0)
    batches = [train_batch(family, spec["batch_size"], rng) for _ in range(2)]
    losses: list[float] = []

    def step(i: int) -> None:
        policy.train()
        loss, _ = policy.forward(batches[i % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), opt_cfg.grad_clip_norm, error_if_nonfinite=False)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))

    wall, cpu = time_calls(step, spec["steps"], spec["warmup"])
    if not all(np.isfinite(losses)):
        raise FloatingPointError(f"LeRobot {family}: non-finite training loss {losses}")
    flops = count_flops(lambda: step(0)) if spec.get("count_flops") else None
    return {
        "flops_per_step": flops,
        "seconds": wall,
        "cpu_seconds": cpu,
        **summary(wall, cpu),
        "params": param_counts(family, policy),
        "optimizer": type(optimizer).__name__,
        "grad_clip_norm": opt_cfg.grad_clip_norm,
    }


if __name__ == "__main__":
    worker_main(
        {
            "versions": task_versions,
            "params": task_params,
            "dataset": task_dataset,
            "inference": task_inference,
            "train": task_train,
            "pi0": task_pi0,
        }
    )
