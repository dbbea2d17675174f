"""Policy = transforms + encoders + block transformer + action head (the Octo layout).

Token sequence for one sample (history T, C cameras, n patches per camera, L text tokens, R readouts):

    [ task (L) | obs_0 (C*n + 1 state) | ... | obs_{T-1} | readout_0 (R) | ... | readout_{T-1} ]

with Octo's attention rules (models/attention.py): the task sees only itself, obs_t sees the task and
obs_<=t, readout_t sees the task, obs_<=t and itself, and nothing attends to the readouts, so the
readouts are pure "read heads" and adding them never changes the observation features. The head reads
the mean of the last timestep's readout outputs.

The policy works in normalized space internally; `predict` returns actions in robot units.

Cross-embodiment mixtures (config.datasets non-empty): state and action are padded to the largest
sizes; each sample is normalized with its own dataset's statistics (`batch["dataset_name"]`), padded
action dimensions carry no loss, and `predict(..., dataset=NAME)` unnormalizes with that dataset's
statistics and returns only its real action dimensions (OpenVLA's `unnorm_key`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlaforge.errors import CheckpointError
from vlaforge.models.attention import apply_key_padding, build_attention_mask, octo_blocks
from vlaforge.models.encoders import (
    ConvStemTokenizer,
    FeatureTokenizer,
    LanguageEncoder,
    PretrainedTextEncoder,
    StateEncoder,
    WordTokenizer,
)
from vlaforge.models.heads import make_head
from vlaforge.models.transformer import BlockTransformer
from vlaforge.models.vision.spec import vision_tower_from_spec
from vlaforge.policies.base import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Capabilities,
    PolicyMethods,
    action_chunk_targets,
    check_finite_state,
    checkpoint_class,
    policy_dir,
    read_policy_tensors,
    reject_dataset,
    write_policy_files,
)
from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.transforms.image import AugmentConfig, augment, resize, to_float_image
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, ActionChunk, Observation


class Policy(PolicyMethods, nn.Module):
    family = "octo"
    config_class = PolicyConfig
    layout = "octo"  # the module layout `inference` and `bench` see (`inference.fastpaths.lm_family`)
    capabilities = Capabilities(
        chunking=True,
        batching=True,
        gradient_checkpointing=True,
        rtc="head",
        kv_cache="task-prefix",
        compile="modules",
        bf16_weights=True,
        int8=True,
        head_choice=True,
        augmentation=True,
    )

    def __init__(self, config: PolicyConfig, normalizer: Normalizer, tokenizer: WordTokenizer | None = None):
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.tokenizer = tokenizer
        c = config
        D = c.width
        if not c.cameras:
            raise ValueError("PolicyConfig.cameras is empty: a visuomotor policy needs at least one camera")
        for key in (STATE_KEY, ACTION_KEY):
            for name in c.datasets or [None]:
                try:
                    normalizer.resolve(key, name)
                except (KeyError, ValueError) as e:
                    raise ValueError(f"normalizer does not fit the policy config: {e}") from e

        self.camera_names = sorted(c.cameras)
        # octo-lite0: one pretrained tower shared by the cameras, then per camera projection + positions
        self.image_backbone = vision_tower_from_spec(next(iter(c.vision.values()))) if c.vision else None
        self.image_encoders = nn.ModuleDict(
            {
                cam: ConvStemTokenizer(
                    channels=tuple(c.stem_channels),
                    width=D,
                    patch=c.patch,
                    image_size=tuple(c.encoder_image_size or c.cameras[cam]),
                )
                if self.image_backbone is None
                else FeatureTokenizer(self.image_backbone.width, D, self.image_backbone.num_patches)
                for cam in self.camera_names
            }
        )
        self.state_encoder = StateEncoder(c.state_dim, D)
        if c.language == "words":
            if tokenizer is None:
                raise ValueError("language='words' needs a WordTokenizer built from the dataset's task texts")
            self.text_encoder: nn.Module = LanguageEncoder(
                tokenizer.vocab_size, D, c.text_max_len, positions=c.text_positions
            )
        else:
            self.text_encoder = PretrainedTextEncoder(
                None, D, max_len=c.text_max_len, positions=c.text_positions
            )

        # Token counts per block.
        self.n_patches = {cam: enc.num_tokens for cam, enc in self.image_encoders.items()}
        self.n_obs = sum(self.n_patches.values()) + 1  # + state token
        T, R = c.history, c.n_readouts
        self.time_embed = nn.Parameter(torch.zeros(T, 1, D))  # which history step an obs token belongs to
        self.readout_embed = nn.Parameter(torch.randn(T, R, D) * 0.02)  # (T, R, D)
        self.transformer = BlockTransformer(c.width, c.depth, c.heads, c.mlp_dim, dropout=c.dropout)
        self.head = make_head(
            c.head, feature_dim=D, horizon=c.chunk, action_dim=c.action_dim, **c.head_kwargs
        )
        self.augment_cfg = AugmentConfig()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def head_name(self) -> str:
        """The action head's name (`vlaforge train` prints it next to the recipe)."""
        return self.config.head

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the transformer's blocks in backward (less activation memory, more compute)."""
        self.transformer.gradient_checkpointing = enabled

    def cast_for_inference(self, dtype: torch.dtype = torch.bfloat16) -> Policy:
        """Cast the transformer's weights to ``dtype`` (bf16: the fast path on CPUs with AMX / AVX512-BF16
        and on GPUs); returns self.

        The transformer holds nearly all of an Octo-style policy's FLOPs (the conv stems, state and text
        encoders and the action head stay float32, as does everything outside the transformer: it casts
        its input to its own dtype and returns float32). Unlike ``torch.autocast``, which converts every
        weight again at every call, the weights are converted once, so a call reads half the bytes.
        Actions differ from the float32 policy by bf16 rounding (``vlaforge bench --paths bf16-weights``
        reports the difference). Meant for inference: train in float32 (or under autocast), and save a
        float32 policy (``save`` writes the weights as they are).
        """
        if not dtype.is_floating_point:
            raise ValueError(f"cast_for_inference: a floating dtype is needed, got {dtype}")
        self.transformer.to(dtype)
        return self

    # ------------------------------------------------------------------ encoding
    def _text_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (B, L, D), valid mask (B, L)."""
        if self.config.language == "words":
            assert self.tokenizer is not None
            ids, mask = self.tokenizer.encode(list(texts), self.config.text_max_len)  # (B, L), (B, L)
            ids, mask = ids.to(self.device), mask.to(self.device)
            return self.text_encoder(ids), mask
        return self.text_encoder(list(texts))

    def encode(self, batch: dict[str, Any], *, train: bool = False) -> torch.Tensor:
        """Run encoders + transformer; returns head features (B, D).

        The steps are methods of their own so that `inference.prefix_cache.StagedPredictor` can time them
        separately (and run the transformer with a cached task prefix) on this very code.
        """
        obs = self.observation_tokens(batch, train=train)  # (B, T, n_obs, D)
        text, text_mask = self._text_tokens(batch["task"])  # (B, L, D), (B, L)
        return self.encode_tokens(text, text_mask, obs)  # (B, D)

    def encode_tokens(
        self, text: torch.Tensor, text_valid: torch.Tensor, obs: torch.Tensor, *, checked: bool = True
    ) -> torch.Tensor:
        """Task tokens (B, L, D) + valid (B, L), observation tokens (B, T, n_obs, D) -> head features (B, D):
        [task | observations | readouts] through the transformer under `octo_mask`, then `readout_features`.

        The one Octo forward after the encoders (`encode`; the ONNX graph with ``checked=False``: the
        transformer without its mask checks, which read tensor values).
        """
        c = self.config
        B, L = obs.shape[0], text.shape[1]
        x = torch.cat(
            [text, obs.reshape(B, c.history * self.n_obs, c.width), self.readout_tokens(B)], dim=1
        )  # (B, N, D)
        out = self.transformer(x, self.octo_mask(text_valid), check_mask=checked)  # (B, N, D)
        assert isinstance(out, torch.Tensor)
        return self.readout_features(out[:, L:])  # (B, D)

    def observation_tokens(self, batch: dict[str, Any], *, train: bool = False) -> torch.Tensor:
        """Images and state of the T history steps -> observation tokens (B, T, n_obs, D), time-embedded."""
        c = self.config
        T, D = c.history, c.width
        state = batch[STATE_KEY]
        if state.dim() == 2:  # (B, S) -> (B, 1, S)
            state = state.unsqueeze(1)
        B = state.shape[0]
        if state.shape[1:] != (T, c.state_dim):
            raise ValueError(f"'{STATE_KEY}': expected (B, {T}, {c.state_dim}), got {tuple(state.shape)}")

        obs_tokens = []
        for cam in self.camera_names:
            key = IMAGE_PREFIX + cam
            if key not in batch:
                raise KeyError(f"batch is missing camera '{key}' (policy cameras: {self.camera_names})")
            img = batch[key]
            if img.dim() == 4:  # (B, H, W, 3) -> (B, 1, H, W, 3)
                img = img.unsqueeze(1)
            h, w = c.cameras[cam]
            if tuple(img.shape[1:]) != (T, h, w, 3):
                raise ValueError(
                    f"'{key}': expected uint8 (B, {T}, {h}, {w}, 3), got {tuple(img.shape)}; "
                    "resize images to the policy's camera size"
                )
            frames = img.reshape(B * T, h, w, 3).to(self.device)  # uint8
            plain = frames.dtype == torch.uint8 and not c.encoder_image_size and not (train and c.augment)
            if self.image_backbone is not None and plain:
                # the frames as they are: the tower preprocesses them itself (Lite0: resize, (255·x − 127) /
                # 128, exactly as from floats) and may read their tokens from a cache (train/feature_cache.py)
                tok = self.image_encoders[cam](self.image_backbone(frames))  # (B*T, n, C) -> (B*T, n, D)
            else:
                x = to_float_image(frames)  # (B*T, 3, h, w) in [0, 1]
                if c.encoder_image_size:
                    x = resize(x, tuple(c.encoder_image_size))  # (B*T, 3, he, we): cheaper stem
                if train and c.augment:
                    x = augment(x, self.augment_cfg)
                if self.image_backbone is None:
                    tok = self.image_encoders[cam](
                        x * 2.0 - 1.0
                    )  # (B*T, n, D): Octo scales images to [-1, 1]
                else:  # the tower's own preprocessing of the augmented floats
                    tok = self.image_encoders[cam](self.image_backbone(x))  # (B*T, n, C) -> (B*T, n, D)
            obs_tokens.append(tok.reshape(B, T, -1, D))
        names = self._batch_datasets(batch, B)
        s = self.normalizer.normalize(STATE_KEY, state.to(self.device).float(), names)  # (B, T, S)
        if names is not None:  # padded state dimensions read as exactly 0, whatever the batch holds
            sizes = torch.tensor([c.dataset_dims[n][0] for n in names], device=self.device)  # (B,)
            real = torch.arange(c.state_dim, device=self.device).unsqueeze(0) < sizes.unsqueeze(1)  # (B, S)
            s = s.masked_fill(~real.unsqueeze(1), 0.0)  # (B, T, S)
        obs_tokens.append(self.state_encoder(s.reshape(B * T, -1)).reshape(B, T, 1, D))
        return torch.cat(obs_tokens, dim=2) + self.time_embed  # (B, T, n_obs, D)

    def readout_tokens(self, B: int) -> torch.Tensor:
        """The learned readout tokens of every history step: (B, T*R, D)."""
        c = self.config
        T, R, D = c.history, c.n_readouts, c.width
        return self.readout_embed.unsqueeze(0).expand(B, T, R, D).reshape(B, T * R, D)  # (B, T*R, D)

    def octo_mask(self, text_valid: torch.Tensor) -> torch.Tensor:
        """Octo's block mask over [task (L) | obs | readouts] with text padding removed from the keys.

        text_valid: (B, L) bool -> (B, N, N) bool (True = may attend).
        """
        c = self.config
        B, L = text_valid.shape
        mask = build_attention_mask(octo_blocks(L, self.n_obs, c.n_readouts, c.history), device=self.device)
        key_valid = torch.ones(B, mask.shape[1], dtype=torch.bool, device=self.device)  # (B, N)
        key_valid[:, :L] = text_valid
        return apply_key_padding(mask, key_valid)  # (B, N, N): never attend to text padding

    def readout_features(self, after_task: torch.Tensor) -> torch.Tensor:
        """Transformer outputs after the task block (B, N - L, D) -> mean of the current step's readouts (B, D)."""
        c = self.config
        T, R = c.history, c.n_readouts
        return after_task[:, T * self.n_obs + (T - 1) * R :].mean(dim=1)  # (B, R, D) -> (B, D)

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        if STATE_KEY not in batch:
            raise KeyError(f"batch is missing '{STATE_KEY}' (have {sorted(batch)})")
        check_finite_state(batch[STATE_KEY])
        actions = action_chunk_targets(batch, c.chunk, c.action_dim, self.device)  # (B, H, A)
        names = self._batch_datasets(batch, actions.shape[0])
        actions = self.normalizer.normalize(ACTION_KEY, actions, names)  # (B, H, A)
        pad = batch.get(f"{ACTION_KEY}_is_pad")
        mask = None
        if pad is not None:
            mask = (~pad.to(self.device).bool()).unsqueeze(-1).expand_as(actions)  # (B, H, A)
        dim_mask = self._action_dim_mask(batch, names, actions.shape[0])  # (B, A) or None
        if dim_mask is not None:
            dims = dim_mask.unsqueeze(1).expand_as(actions)  # (B, H, A): padded dims carry no loss
            mask = dims if mask is None else mask & dims
        features = self.encode(batch, train=self.training)
        return self.head.loss(features, actions, mask)

    # ------------------------------------------------------------------ mixtures
    def _batch_datasets(self, batch: dict[str, Any], B: int) -> list[str] | None:
        """Per-sample dataset names of a mixture batch; None for a single-dataset policy."""
        known = self.config.datasets
        if not known:
            return None  # a plain policy ignores dataset_name (its statistics are unambiguous)
        names = batch.get("dataset_name")
        if names is None:
            if len(known) == 1:
                return [known[0]] * B
            raise ValueError(
                f"this policy was trained on several datasets {known}: the batch needs 'dataset_name' "
                "(one name per sample) to pick each sample's normalization statistics"
            )
        names = [names] * B if isinstance(names, str) else [str(n) for n in names]
        if len(names) != B:
            raise ValueError(f"batch['dataset_name'] has {len(names)} names for a batch of {B}")
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"batch['dataset_name'] holds unknown datasets {unknown}; policy knows {known}")
        return names

    def _action_dim_mask(self, batch: dict[str, Any], names: list[str] | None, B: int) -> torch.Tensor | None:
        """(B, A) True on real action dimensions: the batch's `action_dim_mask` and each dataset's size."""
        A = self.config.action_dim
        mask = None
        given = batch.get("action_dim_mask")
        if given is not None:
            mask = given.to(self.device).bool()
            if mask.dim() == 1:
                mask = mask.unsqueeze(0).expand(B, A)  # (A,) -> (B, A)
            if tuple(mask.shape) != (B, A):
                raise ValueError(f"'action_dim_mask': expected bool (B, {A}), got {tuple(mask.shape)}")
        if names is not None:
            sizes = torch.tensor([self.config.dataset_dims[n][1] for n in names], device=self.device)  # (B,)
            real = torch.arange(A, device=self.device).unsqueeze(0) < sizes.unsqueeze(1)  # (B, A)
            mask = real if mask is None else mask & real
        return mask

    def resolve_dataset(self, dataset: str | None) -> str | None:
        """The dataset whose statistics inference uses; an error if a mixture policy is asked without one."""
        known = self.config.datasets
        if not known:
            reject_dataset(dataset)
            return None
        if dataset is None:
            if len(known) == 1:
                return known[0]
            raise ValueError(
                f"this policy was trained on several datasets {known}: pass dataset=NAME to choose whose "
                "action statistics and action size to use (OpenVLA's unnorm_key)"
            )
        if dataset not in known:
            raise KeyError(f"unknown dataset '{dataset}'; this policy was trained on {known}")
        return dataset

    def for_dataset(self, name: str) -> DatasetPolicy:
        """A `PolicyLike` bound to one dataset of a mixture (its spec has that dataset's real sizes)."""
        return DatasetPolicy(self, name)

    # ------------------------------------------------------------------ inference
    def observations_to_batch(
        self, observations: Observation | Sequence[Observation], *, dataset: str | None = None
    ) -> dict[str, Any]:
        """Validate and stack the last T observations (oldest first) into a batch of one.

        dataset: a mixture policy's dataset; its state has that dataset's real size (padded later).
        """
        obs_list = [observations] if isinstance(observations, Observation) else list(observations)
        T = self.config.history
        if len(obs_list) == 1 and T > 1:
            obs_list = obs_list * T  # episode start: repeat, as the dataset pads at episode edges
        if len(obs_list) != T:
            raise ValueError(f"policy reads {T} observations (history), got {len(obs_list)}")
        name = self.resolve_dataset(dataset)
        spec = self.spec if name is None else self.config.dataset_spec(name)
        for o in obs_list:
            o.validate(spec.cameras, spec.state_dim)
        batch: dict[str, Any] = {
            STATE_KEY: torch.from_numpy(np.stack([o.state for o in obs_list]).astype(np.float32))[None],
            "task": [obs_list[-1].instruction],
        }
        for cam in self.camera_names:
            batch[IMAGE_PREFIX + cam] = torch.from_numpy(np.stack([o.images[cam] for o in obs_list]))[None]
        if name is not None:
            batch["dataset_name"] = [name]
        return batch

    @torch.inference_mode()
    def predict_batch(
        self,
        batch: dict[str, Any],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Batched inference: returns actions (B, H, A) in robot units.

        Mixture policies: `dataset` (or one name in batch["dataset_name"]) chooses the statistics; the
        state may have that dataset's real size, and only its real action dimensions are returned.
        """
        if dataset is None and self.config.datasets:
            dataset = _single_name(batch)
        name = self.resolve_dataset(dataset)
        with self.evaluating():
            if name is not None:
                batch = self._pad_for_dataset(batch, name)
            features = self.encode(batch, train=False)
            actions = self.head.sample(features, steps=steps, generator=generator)  # (B, H, A) normalized
            actions = self.normalizer.unnormalize(ACTION_KEY, actions.float(), name)
            if name is not None:
                actions = actions[..., : self.config.dataset_dims[name][1]]  # (B, H, A_d)
            return actions

    def _pad_for_dataset(self, batch: dict[str, Any], name: str) -> dict[str, Any]:
        state = batch[STATE_KEY]
        real, full = self.config.dataset_dims[name][0], self.config.state_dim
        if state.shape[-1] == real and real < full:
            state = torch.nn.functional.pad(state, (0, full - real))  # (B, [T,] S_max)
        B = state.shape[0]
        return {**batch, STATE_KEY: state, "dataset_name": [name] * B}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write config.json + model.safetensors + normalization.safetensors (no pickle).

        state_dict: weights to write instead of `self.state_dict()` (the trainer passes LoRA-merged ones).
        """
        meta = {
            "config": self.config.to_dict(),
            "normalization": self.normalizer.describe(),
            "tokenizer": None if self.tokenizer is None else self.tokenizer.to_dict(),
        }
        # A frozen pretrained text model lives outside the module tree: it is re-loaded from its local
        # directory, so its weights are not copied into every checkpoint.
        weights = self.state_dict() if state_dict is None else state_dict
        return write_policy_files(directory, meta, weights, self.normalizer)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> Policy:
        d = policy_dir(path)
        try:
            meta = json.loads((d / CONFIG_FILE).read_text())
            other = checkpoint_class(meta) if cls is Policy else None  # VLA, π0, π0-FAST, π0.5 checkpoints
            if other is not None:
                return other.load(d, map_location=map_location)  # type: ignore[attr-defined,no-any-return]
            config = PolicyConfig.from_dict(meta["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{d / CONFIG_FILE} is not a vlaforge policy config: {e}") from e
        norm, weights = read_policy_tensors(d, meta, map_location)
        tok = None if meta.get("tokenizer") is None else WordTokenizer.from_dict(meta["tokenizer"])
        policy = cls(config, norm, tok)
        missing, unexpected = policy.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"weights in {d / WEIGHTS_FILE} do not match the config: missing {missing[:8]}, unexpected {unexpected[:8]}"
            )
        return policy.to(map_location).eval()


class DatasetPolicy:
    """One dataset's view of a mixture policy: a `PolicyLike` for eval, serving and the runtime.

    Its spec is the dataset's: real state/action sizes, control rate and camera names (a Meta-World
    dataset mapped onto LIBERO's camera names still reads "corner" and "gripper" from its env).
    """

    def __init__(self, policy: Policy, name: str):
        if not policy.config.datasets:
            raise ValueError("for_dataset() is for mixture policies; this one was trained on one dataset")
        policy.resolve_dataset(name)  # unknown name -> error now, not at the first action
        self.policy, self.name = policy, name
        self.spec = policy.config.dataset_spec(name, own_cameras=True)
        self._to_policy = dict(policy.config.dataset_cameras.get(name, {}))  # its camera -> the policy's

    def predict(self, observations: Observation | Sequence[Observation], **kwargs: Any) -> ActionChunk:
        if self._to_policy:
            observations = (
                self._renamed(observations)
                if isinstance(observations, Observation)
                else [self._renamed(o) for o in observations]
            )
        chunk = self.policy.predict(observations, dataset=self.name, **kwargs)
        return dataclasses.replace(chunk, control_hz=self.spec.fps)

    def _renamed(self, obs: Observation) -> Observation:
        rename = self._to_policy
        masks = None if obs.image_masks is None else {rename.get(k, k): v for k, v in obs.image_masks.items()}
        return dataclasses.replace(
            obs, images={rename.get(k, k): v for k, v in obs.images.items()}, image_masks=masks
        )


def _single_name(batch: dict[str, Any]) -> str | None:
    """The one dataset named by batch["dataset_name"] (None if absent); several -> error."""
    names = batch.get("dataset_name")
    if names is None or isinstance(names, str):
        return names
    unique = sorted(set(names))
    if len(unique) > 1:
        raise ValueError(f"predict_batch serves one dataset per call; the batch names {unique}")
    return unique[0] if unique else None


def count_tokens(config: PolicyConfig) -> int:
    """Sequence length of one sample, for sizing and benchmarks."""
    if config.vision:  # a Lite0 tower: (S / stride)^2 tokens per camera
        (spec,) = config.vision.values()
        stride = 16 if spec["lite0"].get("features") == "stride16" else 32
        patches = len(config.cameras) * math.ceil(spec["image_size"] / stride) ** 2
    else:
        down = 2 ** len(config.stem_channels) * config.patch
        patches = sum(math.prod(config.encoder_image_size or v) // down**2 for v in config.cameras.values())
    return config.text_max_len + config.history * (patches + 1 + config.n_readouts)
