"""`LMPolicyMethods`: what the pretrained-LM policy classes (`vla.VLAPolicy`, `pi0.Pi0Policy`,
`pi0.fast_policy.Pi0FastPolicy`) share.

All run a decoder LM over ``[image tokens | prompt | ...]`` with a prompt tokenizer from
``models/prompt.py``, read the current observation only (history 1), train on one dataset, and
store the same checkpoint layout::

    config.json        {"policy_class": ..., "config": ..., "normalization": ..., "tokenizer": ..., extras}
    model.safetensors  normalization.safetensors  (tokenizer.json for an HF tokenizer)
    (+ a class's own files, e.g. π0-FAST's fast/, through the `_save_extra` / `_load_extra` hooks)

so input plumbing, inference bookkeeping and checkpoint I/O live here once; the token layout, the
action head and the sampling stay in each class. (`base.py` holds what every family shares, the Octo
`Policy` included; this is what only the pretrained-LM families share.)
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from vlaforge.errors import CheckpointError
from vlaforge.models.lm import LMConfig
from vlaforge.models.prompt import (
    TOKENIZER_FILE,
    HFPromptTokenizer,
    PromptTokenizer,
    WordPromptTokenizer,
    fit_prompts,
)
from vlaforge.policies.base import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PolicyMethods,
    check_finite_state,
    policy_dir,
    read_policy_tensors,
    reject_dataset,
    write_policy_files,
)
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, Observation

log = logging.getLogger("vlaforge.prompt")
MAX_WARNED_INSTRUCTIONS = 4096  # distinct truncated instructions remembered (a server sees arbitrary ones)
IMAGE_VALID_SUFFIX = "_valid"  # batch[IMAGE_PREFIX + cam + "_valid"]: (B,) bool, False = camera missing


@contextlib.contextmanager
def on_meta_device(enabled: bool) -> Iterator[None]:
    """Build modules on the meta device when `enabled` (no random init of billions of weights that a
    checkpoint overwrites anyway; `LMPolicyMethods.load` then assigns every weight)."""
    if enabled:
        with torch.device("meta"):
            yield
    else:
        yield


class LMPolicyMethods(PolicyMethods):
    """Mixin for the pretrained-LM policy classes (listed before `nn.Module`).

    A class sets `policy_class` (the checkpoint's ``"policy_class"``, which `Policy.load` dispatches
    on), `config_class` (its config dataclass) and `label` (its name in messages), keeps `config`,
    `normalizer`, `tokenizer`, `camera_names` and `device`, and accepts ``lm_on_meta=True`` in its
    constructor (`load` assigns every weight from the file instead of initializing billions first).
    """

    policy_class: ClassVar[str]
    config_class: ClassVar[Any]  # VLAConfig | Pi0Config | Pi0FastConfig
    label: ClassVar[str]
    layout: ClassVar[str]  # the module layout `inference` and `bench` see (`inference.fastpaths.lm_family`)
    head_name: ClassVar[str]  # the action head's name (`vlaforge train` prints it next to the recipe)
    normalizer: Normalizer
    tokenizer: PromptTokenizer
    camera_names: list[str]
    device: torch.device

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the backbone's layers in backward (less activation memory, more compute)."""
        self.lm.gradient_checkpointing = enabled  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ construction
    def _check_parts(self, lm_cfg: LMConfig) -> None:
        """The config, normalizer and prompt tokenizer given to the constructor fit together."""
        c = self.config
        if not c.cameras:
            raise ValueError(
                f"{type(c).__name__}.cameras is empty: the {self.label} recipes need at least one camera"
            )
        for key in (STATE_KEY, ACTION_KEY):
            try:
                self.normalizer.resolve(key)
            except (KeyError, ValueError) as e:
                raise ValueError(f"normalizer does not fit the {self.label} config: {e}") from e
        if self.tokenizer.vocab_size > lm_cfg.vocab_size:
            raise ValueError(
                f"prompt tokenizer has {self.tokenizer.vocab_size} ids but the LM vocabulary only "
                f"{lm_cfg.vocab_size}"
            )

    # ------------------------------------------------------------------ inputs (history 1)
    def current_frame(self, batch: dict[str, Any], cam: str, B: int, *, hint: str = "") -> torch.Tensor:
        """Camera `cam`'s current frame, uint8 (B, h, w, 3): a (B, T, h, w, 3) history is cut to its last
        step.

        hint: appended to the missing-camera error (how the class accepts a missing camera, if it does).
        """
        key = IMAGE_PREFIX + cam
        if key not in batch:
            raise KeyError(f"batch is missing camera '{key}' (policy cameras: {self.camera_names}){hint}")
        img = batch[key]
        if img.dim() == 5:  # (B, T, H, W, 3): the current frame
            img = img[:, -1]
        h, w = self.config.cameras[cam]
        if tuple(img.shape) != (B, h, w, 3):
            raise ValueError(f"'{key}': expected uint8 (B, [T,] {h}, {w}, 3), got {tuple(batch[key].shape)}")
        return img  # (B, h, w, 3)

    def current_state(self, batch: dict[str, Any], B: int) -> torch.Tensor:
        """The current state, float (B, S) on the policy's device: a (B, T, S) history is cut to its last
        step. NaN / Inf is an error (`check_finite_state`)."""
        if STATE_KEY not in batch:
            raise KeyError(f"batch is missing '{STATE_KEY}' (have {sorted(batch)})")
        S = self.config.state_dim
        state = batch[STATE_KEY].to(self.device).float()
        if state.dim() == 3:  # (B, T, S): the current state
            state = state[:, -1]
        if tuple(state.shape) != (B, S):
            raise ValueError(f"'{STATE_KEY}': expected (B, [T,] {S}), got {tuple(batch[STATE_KEY].shape)}")
        return check_finite_state(state)  # (B, S)

    def camera_tokens(self, batch: dict[str, Any], B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """PaliGemma-style image tokens (π0, π0-FAST): the current frame of every camera through the one
        vision tower and the projector -> tokens (B, C*N, D), valid (B, C*N).

        A camera marked missing (``batch["observation.images.<cam>_valid"]`` False) is masked out as keys.
        """
        tower, projector = self.vision_tower, self.projector  # type: ignore[attr-defined]
        tokens, valid = [], []
        N = tower.num_patches
        for cam in self.camera_names:
            key = IMAGE_PREFIX + cam
            hint = f"; a missing camera is sent as any frame with batch['{key}{IMAGE_VALID_SUFFIX}'] = False"
            img = self.current_frame(batch, cam, B, hint=hint)  # (B, h, w, 3)
            feats = tower.encode(img)  # (B, N, Dv)
            tokens.append(projector(feats.to(projector.linear.weight.dtype)))  # (B, N, D)
            present = batch.get(key + IMAGE_VALID_SUFFIX)
            if present is None:
                present = torch.ones(B, dtype=torch.bool)
            present = torch.as_tensor(present).to(self.device).bool().reshape(-1)
            if present.shape != (B,):
                raise ValueError(
                    f"'{key}{IMAGE_VALID_SUFFIX}': expected bool (B={B},), got {tuple(present.shape)}"
                )
            valid.append(present[:, None].expand(B, N))
        return torch.cat(tokens, dim=1), torch.cat(valid, dim=1)  # (B, C*N, D), (B, C*N)

    def encode_prompts(
        self, instructions: Sequence[str], render: Callable[[int, str], str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids (B, L) and valid (B, L), left-padded, on the policy's device, L = ``text_max_len``.

        render(i, instruction) -> row i's prompt. An instruction that does not fit the budget is
        shortened to its leading words that fit, with one warning per distinct instruction, or raises
        a ValueError, by ``config.prompt_overflow`` (`models.prompt.fit_prompts`); the template's fixed
        parts (and π0-FAST's state) are never cut.
        """
        c = self.config
        fitted = fit_prompts(self.tokenizer, instructions, render, c.text_max_len, c.prompt_overflow)
        if fitted.truncated:
            warned: set[str] = self.__dict__.setdefault("_warned_instructions", set())
            for original, kept in fitted.truncated:
                if original in warned:
                    continue
                if len(warned) >= MAX_WARNED_INSTRUCTIONS:
                    warned.clear()
                warned.add(original)
                log.warning(
                    "%s: instruction %r does not fit the prompt budget (text_max_len=%d tokens with the "
                    "template); using its first %d of %d words: %r. Raise text_max_len, shorten the "
                    "instruction, or set prompt_overflow='error' to refuse such instructions.",
                    self.label,
                    original,
                    c.text_max_len,
                    len(kept.split()),
                    len(original.split()),
                    kept,
                )
        return fitted.ids.to(self.device), fitted.valid.to(self.device)  # (B, L), (B, L)

    @staticmethod
    def _positions(valid: torch.Tensor) -> torch.Tensor:
        """valid (B, S) -> position ids (B, S) counting real tokens only, so padding changes nothing."""
        return (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, S)

    def observations_to_batch(
        self, observations: Observation | Sequence[Observation], *, dataset: str | None = None
    ) -> dict[str, Any]:
        """Validate the current observation and make a batch of one (these recipes read history 1)."""
        reject_dataset(dataset)
        obs_list = [observations] if isinstance(observations, Observation) else list(observations)
        if not obs_list:
            raise ValueError("observations is empty")
        o = obs_list[-1]
        o.validate(self.spec.cameras, self.spec.state_dim)
        batch: dict[str, Any] = {
            STATE_KEY: torch.from_numpy(np.asarray(o.state, dtype=np.float32))[None, None],  # (1, 1, S)
            "task": [o.instruction],
        }
        for cam in self.camera_names:
            batch[IMAGE_PREFIX + cam] = torch.from_numpy(np.ascontiguousarray(o.images[cam]))[None, None]
        return batch

    # ------------------------------------------------------------------ persistence
    def _save_extra(self, directory: Path) -> dict[str, Any]:
        """Hook: write a class's own checkpoint files into `directory` (before config.json is written)
        and return the config.json entries that name them (after ``"tokenizer"``). Default: none."""
        del directory
        return {}

    @classmethod
    def _load_extra(cls, directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Hook: read what `_save_extra` wrote -> extra keyword arguments of the constructor. Default: none.

        Raise FileNotFoundError / ValueError / KeyError for missing or bad files (-> CheckpointError)."""
        del directory, meta
        return {}

    def save(self, directory: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write config.json + model.safetensors + normalization.safetensors (+ tokenizer.json); no pickle.

        state_dict: weights to write instead of `self.state_dict()` (the trainer passes LoRA-merged ones).
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        # Every other file before config.json: a directory with a config is taken as a whole checkpoint.
        extra = self._save_extra(d)
        if isinstance(self.tokenizer, WordPromptTokenizer):
            tok: dict[str, Any] = self.tokenizer.to_dict()
        else:
            assert isinstance(self.tokenizer, HFPromptTokenizer)
            self.tokenizer.save(d)
            tok = {"type": "hf", "file": TOKENIZER_FILE}
        meta = {
            "policy_class": self.policy_class,
            "config": self.config.to_dict(),
            "normalization": self.normalizer.describe(),
            "tokenizer": tok,
            **extra,
        }
        weights = self.state_dict() if state_dict is None else state_dict  # type: ignore[attr-defined]
        return write_policy_files(d, meta, weights, self.normalizer)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> Self:
        d = policy_dir(path)
        try:
            meta = json.loads((d / CONFIG_FILE).read_text())
            if meta.get("policy_class") != cls.policy_class:
                raise ValueError(
                    f"policy_class is {meta.get('policy_class')!r}, expected {cls.policy_class!r} "
                    "(vlaforge.policies.Policy.load reads any policy class)"
                )
            config = cls.config_class.from_dict(meta["config"])
            extra = cls._load_extra(d, meta)
        except (
            json.JSONDecodeError,
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            FileNotFoundError,
        ) as e:
            raise CheckpointError(
                f"{d / CONFIG_FILE} is not a vlaforge {cls.label} policy config (or a file it names is "
                f"missing or bad): {e}"
            ) from e
        norm, weights = read_policy_tensors(d, meta, map_location)
        tok_meta = meta.get("tokenizer") or {}
        tokenizer: PromptTokenizer = (
            HFPromptTokenizer.from_file(d / tok_meta.get("file", TOKENIZER_FILE))
            if tok_meta.get("type") == "hf"
            else WordPromptTokenizer.from_dict(tok_meta)
        )
        policy = cls(config, norm, tokenizer, **extra, lm_on_meta=True)  # type: ignore[call-arg]
        own = set(policy.state_dict())  # type: ignore[attr-defined]
        missing, unexpected = sorted(own - set(weights)), sorted(set(weights) - own)
        if missing or unexpected:
            raise CheckpointError(
                f"weights in {d / WEIGHTS_FILE} do not match the config: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}"
            )
        # The LM was built on the meta device, so the file's tensors are assigned, not copied. Those
        # tensors are views into safetensors' read buffer at arbitrary byte offsets, and unaligned
        # weights take other SIMD code paths (last-bit differences): give each one aligned storage.
        weights = {k: v.clone() if v.data_ptr() % 64 else v for k, v in weights.items()}
        policy.load_state_dict(weights, strict=True, assign=True)  # type: ignore[attr-defined]
        return policy.to(map_location).eval()  # type: ignore[attr-defined]
