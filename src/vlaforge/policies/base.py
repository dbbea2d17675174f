"""What every policy family shares: the checkpoint files, the loader's class table, the common methods.

A checkpoint directory (no pickle) is::

    config.json                 {"policy_class": ..., "config": ..., "normalization": ..., ...}
    model.safetensors           the weights
    normalization.safetensors   the normalizer's statistics

`write_policy_files` / `policy_dir` / `read_policy_tensors` read and write that layout for every class.
``"policy_class"`` names the class that reads the checkpoint: each family registers its classes here
(`register_policy_class`) where it defines them, and `octo.Policy.load` hands a checkpoint to the class
it names (`checkpoint_class`); a config without the entry is the Octo layout. The families import this
module, never the reverse, so the table is filled by importing them: `vlaforge.policies` imports all.

Every policy class also declares what it supports (`Capabilities`, a class attribute) and its `family`;
`policies/registry.py` lists the families (config class, policy class, recipes), and loading, the fast
paths, serving, benchmarking, LoRA and the trainer ask those instead of testing which class they hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlaforge.errors import CheckpointError
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, STATE_KEY, ActionChunk, Observation, PolicySpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORM_FILE = "normalization.safetensors"

ClassT = TypeVar("ClassT", bound=type)
_CHECKPOINT_CLASSES: dict[str, type] = {}


def register_policy_class(cls: ClassT) -> ClassT:
    """Class decorator: checkpoints whose config.json says ``"policy_class": cls.policy_class`` load as `cls`."""
    name = cls.policy_class  # type: ignore[attr-defined]
    known = _CHECKPOINT_CLASSES.setdefault(name, cls)
    if known is not cls:
        raise ValueError(f"policy_class {name!r} is registered twice ({known.__name__}, {cls.__name__})")
    return cls


def checkpoint_class(meta: Any) -> type | None:
    """The registered class that reads a checkpoint's config.json `meta`; None without ``"policy_class"``
    (the Octo layout, `octo.Policy`). An unknown name is a CheckpointError naming the known ones."""
    name = meta.get("policy_class") if isinstance(meta, dict) else None
    if name is None:
        return None
    if name not in _CHECKPOINT_CLASSES:
        raise CheckpointError(
            f"unknown policy_class {name!r}; this vlaforge reads {sorted(_CHECKPOINT_CLASSES)} "
            "(and the Octo layout, which has none)"
        )
    return _CHECKPOINT_CLASSES[name]


@dataclass(frozen=True)
class Capabilities:
    """What a policy family supports: what `inference`, `serve`, `bench` and `train` ask instead of probing.
    Everything is off by default (a class states what it has).

    chunking: predicts an action chunk (H = config.chunk steps) per call.
    rtc: real-time chunking: "head" (guided sampling through a flow or diffusion head: `runtime.rtc`;
      only when the configured head can inpaint), "own" (the policy's `predict_rtc`), None.
    kv_cache: "task-prefix" (Octo: the task block's keys/values, `inference.prefix_cache`), "prefix"
      (the policy's own `predict_batch(use_cache=True)`), None.
    compile: "modules" (`inference.fastpaths.compiled_copy`: stems, blocks, head network), "sampling"
      (the policy's `compile_sampling()`), "decoding" (the LM's `compile_decoding()`: timed by `vlaforge
      bench`, not a `load_policy` option), None.
    bf16_weights: `cast_for_inference(torch.bfloat16)`. int8: `inference.fastpaths.int8_copy` (the
      Linear layers of ``transformer.`` and ``head.``).
    lora_preset: the family's published LoRA settings (`train.lora.LoRAConfig` fields; ``train_also``
      globs that match no parameter are dropped), None: the user gives them.
    gradient_checkpointing: `set_gradient_checkpointing` recomputes the backbone's blocks in backward.
    head_choice / augmentation: the recipe's action head and training-time image augmentation are
      options (`vlaforge train --head`, `--no-augment`); otherwise the family has one head and no augmentation.
    batching: `predict_batch` over several observation windows at once (the server's request batching).
    """

    chunking: bool = False
    rtc: str | None = None
    kv_cache: str | None = None
    compile: str | None = None
    bf16_weights: bool = False
    int8: bool = False
    lora_preset: Mapping[str, Any] | None = None
    gradient_checkpointing: bool = False
    head_choice: bool = False
    augmentation: bool = False
    batching: bool = False


class PolicyMethods:
    """What every policy class (`octo.Policy`, `vla.VLAPolicy`, `pi0.Pi0Policy`) does the same way.

    A plain mixin (listed before `nn.Module`), like `policies.config.ConfigMethods`: the classes share their
    public contract (`PolicyLike` plus `loss` / `predict_batch` / `observations_to_batch`), not their
    module trees, so there is no common `nn.Module` base. Each class provides `config` (with `spec`
    and `fps`), `loss`, `observations_to_batch` and `predict_batch`; everything below is built on them.
    """

    family: ClassVar[str]  # its name in `policies.registry.FAMILIES`
    policy_class: ClassVar[str | None] = None  # config.json's "policy_class" (None: the Octo layout)
    config_class: ClassVar[Any]
    capabilities: ClassVar[Capabilities]
    config: Any  # PolicyConfig | VLAConfig | Pi0Config
    training: bool

    @property
    def spec(self) -> PolicySpec:
        return self.config.spec

    def num_parameters(self, trainable_only: bool = False) -> int:
        params = self.parameters()  # type: ignore[attr-defined]
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss; `forward` so that DistributedDataParallel's hooks run around it."""
        return self.loss(batch)  # type: ignore[attr-defined]

    def predict(
        self,
        observations: Observation | Sequence[Observation],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ActionChunk:
        """The next action chunk (H, A) in robot units for the latest observation(s).

        dataset: for a policy trained on a mixture, whose statistics and action size to use.
        steps / generator: sampler steps and random source of the sampling heads (ignored by the
        deterministic ones).
        """
        batch = self.observations_to_batch(observations, dataset=dataset)  # type: ignore[attr-defined]
        actions, infos = self.predict_batch_info(batch, dataset=dataset, steps=steps, generator=generator)
        return first_chunk(actions, self.config.fps, **infos[0])

    def predict_batch_info(
        self, batch: dict[str, Any], **kwargs: Any
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """`predict_batch` plus, per chunk, what its `ActionChunk.info` says (a list of B dicts).

        The families that decode tokens say per chunk whether decoding failed (``decode_failed``,
        ``decode_error``: see `decode_info`); π0.5 with subtasks adds ``subtask``. The server and the
        evaluation read these per chunk, so a batch may mix good and failed chunks. Default: no info.
        """
        actions = self.predict_batch(batch, **kwargs)  # type: ignore[attr-defined]
        return actions, [{} for _ in range(actions.shape[0])]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for one inference call; the previous train/eval mode comes back
        afterwards, also on error, so predicting in the middle of training changes nothing."""
        was_training = self.training
        self.eval()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self.train(was_training)  # type: ignore[attr-defined]


def reject_dataset(dataset: str | None) -> None:
    """A single-dataset policy was asked for a dataset's statistics: an error (there is nothing to choose)."""
    if dataset is not None:
        raise ValueError(f"dataset='{dataset}': this policy was trained on a single dataset; omit it")


def action_chunk_targets(
    batch: dict[str, Any], chunk: int, action_dim: int, device: torch.device
) -> torch.Tensor:
    """`batch["action"]`, validated, as float (B, H, A) on `device` (a (B, A) batch is one step, H = 1)."""
    if ACTION_KEY not in batch:
        raise KeyError(f"batch is missing '{ACTION_KEY}' (have {sorted(batch)})")
    actions = batch[ACTION_KEY].to(device).float()
    if not bool(torch.isfinite(actions).all()):
        raise ValueError(f"batch['{ACTION_KEY}'] contains NaN or Inf; check the dataset or its statistics")
    if actions.dim() == 2:  # (B, A) -> (B, 1, A)
        actions = actions.unsqueeze(1)
    if actions.shape[1:] != (chunk, action_dim):
        raise ValueError(f"'{ACTION_KEY}': expected (B, {chunk}, {action_dim}), got {tuple(actions.shape)}")
    return actions  # (B, H, A)


def decode_info(error: str | None) -> dict[str, Any]:
    """The `ActionChunk.info` of a chunk decoded from generated tokens: ``{"decode_failed": False}``, or
    ``{"decode_failed": True, "decode_error": error}`` when the chunk is a fallback or a repair."""
    return {"decode_failed": True, "decode_error": error} if error else {"decode_failed": False}


def check_finite_state(state: torch.Tensor) -> torch.Tensor:
    """The state NaN guard of every policy (Octo's loss, and the current state of the LM policies: π0's
    state token, π0-FAST / π0.5's state text, OpenVLA-OFT's proprio): `state`, or a ValueError."""
    if not bool(torch.isfinite(state).all()):
        raise ValueError(f"batch['{STATE_KEY}'] contains NaN or Inf; check the dataset or its statistics")
    return state


def first_chunk(actions: torch.Tensor, fps: float, **info: Any) -> ActionChunk:
    """The first sample of a (B, H, A) batch as an `ActionChunk` (with `info`); non-finite actions are an error.

    `predict` of every policy ends here: a NaN must stop the robot loop, not reach the motors.
    """
    out = actions[0].cpu().numpy().astype(np.float32)  # (H, A)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError("policy produced non-finite actions; refusing to return them")
    return ActionChunk(out, control_hz=fps, info=dict(info))


def write_policy_files(
    directory: str | Path, meta: dict[str, Any], weights: dict[str, torch.Tensor], normalizer: Normalizer
) -> Path:
    """The checkpoint layout every policy class shares (no pickle): `meta` as config.json, `weights` as
    model.safetensors, the normalizer's statistics as normalization.safetensors."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(d / WEIGHTS_FILE))
    save_file(normalizer.state_dict(), str(d / NORM_FILE))
    return d


def policy_dir(path: str | Path) -> Path:
    """`resolve_checkpoint(path)`, checked to hold all three files of `write_policy_files`."""
    d = resolve_checkpoint(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, NORM_FILE):
        if not (d / name).is_file():
            raise CheckpointError(f"checkpoint {d} is incomplete: missing {name}")
    return d


def read_policy_tensors(
    d: Path, meta: dict[str, Any], map_location: str | torch.device
) -> tuple[Normalizer, dict[str, torch.Tensor]]:
    """The normalizer (described in `meta["normalization"]`) and the raw weights of a policy directory."""
    try:
        norm = Normalizer.from_state(meta["normalization"], load_file(str(d / NORM_FILE)))
        weights = load_file(str(d / WEIGHTS_FILE), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"could not read weights in {d}: {e} (is the file truncated?)") from e
    return norm, weights


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a policy directory, a run directory (-> run/policy or its latest checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist")
    if (p / CONFIG_FILE).is_file():
        return p
    if (p / "policy" / CONFIG_FILE).is_file():
        return p / "policy"
    ckpts = sorted(
        (c for c in (p / "checkpoints").glob("*") if (c / "policy" / CONFIG_FILE).is_file()),
        key=lambda c: int(c.name) if c.name.isdigit() else -1,
    )
    if ckpts:
        return ckpts[-1] / "policy"
    raise CheckpointError(
        f"{p} holds no policy: expected {CONFIG_FILE} there, in {p}/policy, or in {p}/checkpoints/<step>/policy"
    )
