"""`VLAPolicy`: RT-2 / OpenVLA / OpenVLA-OFT on our decoder LM, with the contract of `models.policy.Policy`.

Sequence for one sample (N image tokens per camera, L prompt tokens left-padded, A action dims, H chunk)::

    [ (BOS) | image tokens (C*N) | (proprio, OFT) | prompt (L) | action tokens (H*A) ]
    `------------------------ prefix (P) ------------------------'

* **openvla / rt2**: actions are discretized into 256 bins per dimension (``ActionTokenizer``) and
  the LM is trained with cross-entropy on the action tokens only (teacher forcing: the input holds
  the first H*A - 1 action tokens). The prefix is bidirectional (prefix LM) or causal
  (``prefix_attention``; the released OpenVLA-7B is a plain causal Llama), the action tokens are
  causal. ``predict`` decodes H*A tokens greedily with the KV cache (``lm.generate_greedy``),
  constrained to the action ids when ``constrained_decoding`` (RT-2), unconstrained otherwise
  (OpenVLA). A generated non-action token is replaced by the best action token of that step and
  counted in ``decode_stats`` (never decoded as a silent 0).
* **oft**: H*A placeholder tokens with zero embeddings read the prefix and each other
  (bidirectional); one forward pass; their final hidden states, grouped per chunk step
  (B, H, A*D), go through an MLP-ResNet to (B, H, A), trained with L1. The state enters as one
  projected token after the image tokens, and FiLM conditions the vision towers on the mean prompt
  embedding.

Positions count real tokens only (``cumsum(valid) - 1``), so prompt padding changes nothing.
Actions are normalized with q01/q99 (clipped to [-1, 1], gripper dimensions left unnormalized).
Checkpoints are ``config.json`` (``policy_class: "vla"``, config, normalization, tokenizer) +
``model.safetensors`` + ``normalization.safetensors`` (+ ``tokenizer.json`` for HF tokenizers);
``Policy.load`` dispatches here on ``policy_class``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.attention import apply_key_padding, build_attention_mask, prefix_lm_blocks
from vlaforge.models.heads.base import masked_mean
from vlaforge.models.heads.mlp_resnet import MLPResNet
from vlaforge.models.lm import DecoderLM, LMConfig, generate_greedy
from vlaforge.models.policy import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    first_chunk,
    policy_dir,
    read_policy_tensors,
    write_policy_files,
)
from vlaforge.models.vision import FusedMLPProjector, FusedVisionTower, LinearProjector, VisionTower
from vlaforge.models.vla.action_tokenizer import ActionTokenizer
from vlaforge.models.vla.config import VLAConfig
from vlaforge.models.vla.film import FiLM
from vlaforge.models.vla.text import TOKENIZER_FILE, HFPromptTokenizer, PromptTokenizer, WordPromptTokenizer
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, ActionChunk, Observation, PolicySpec

log = logging.getLogger("vlaforge.vla")
POLICY_CLASS = "vla"


def hf_vision_config(d: dict[str, Any]) -> Any:
    """An HF vision config object from a plain dict with ``model_type`` (SigLIP, DINOv2, ...)."""
    import transformers

    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError(
            f"vision tower config needs a 'model_type' (e.g. 'siglip_vision_model'), got keys {sorted(d)}"
        )
    return transformers.AutoConfig.for_model(model_type, **d)


def build_action_tokenizer(
    config: VLAConfig, tokenizer: PromptTokenizer, lm_vocab: int
) -> ActionTokenizer | None:
    """The action-token map of an openvla / rt2 config (None for OFT, which regresses actions)."""
    if config.variant == "oft":
        return None
    if config.action_tokens == "last":
        vocab = config.action_vocab_size or lm_vocab
        n_text = tokenizer.vocab_size if config.language == "words" else 0
        at = ActionTokenizer.last_ids(vocab, config.n_bins, n_text_tokens=n_text, binning=config.binning)
    elif config.action_tokens == "integer":
        at = ActionTokenizer.integer_text(tokenizer.token_id, lm_vocab, config.n_bins, binning=config.binning)
    else:
        at = ActionTokenizer.from_ids(config.action_token_ids, lm_vocab, binning=config.binning)
    if max(at.token_ids) >= lm_vocab:
        raise ValueError(
            f"action token ids reach {max(at.token_ids)} but the LM vocabulary has {lm_vocab} ids"
        )
    return at


class VLAPolicy(nn.Module):
    """See the module docstring. Same public contract as `vlaforge.models.policy.Policy`."""

    def __init__(
        self,
        config: VLAConfig,
        normalizer: Normalizer,
        tokenizer: PromptTokenizer,
        *,
        lm_on_meta: bool = False,
    ):
        """lm_on_meta: build the LM's parameters on the meta device (no random init of billions of
        weights); the caller must then load every weight with ``load_state_dict(..., assign=True)``."""
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.tokenizer = tokenizer
        c = config
        if not c.cameras:
            raise ValueError("VLAConfig.cameras is empty: the VLA recipes need at least one camera")
        for key in (STATE_KEY, ACTION_KEY):
            try:
                normalizer.resolve(key)
            except (KeyError, ValueError) as e:
                raise ValueError(f"normalizer does not fit the VLA config: {e}") from e
        lm_cfg = LMConfig(**c.lm)
        if tokenizer.vocab_size > lm_cfg.vocab_size:
            raise ValueError(
                f"prompt tokenizer has {tokenizer.vocab_size} ids but the LM vocabulary only {lm_cfg.vocab_size}"
            )
        if lm_on_meta:
            with torch.device("meta"):
                self.lm = DecoderLM(lm_cfg)
        else:
            self.lm = DecoderLM(lm_cfg)
        D = lm_cfg.hidden_size

        towers = {
            name: VisionTower.from_config(
                hf_vision_config(spec["hf"]),
                feature_layer=spec.get("feature_layer", -2),
                image_size=spec.get("image_size"),
            )
            for name, spec in c.vision.items()
        }
        self.vision_tower: VisionTower | FusedVisionTower = (
            next(iter(towers.values())) if len(towers) == 1 else FusedVisionTower(towers)
        )
        width = self.vision_tower.width
        self.projector = FusedMLPProjector(width, D) if c.projector == "mlp" else LinearProjector(width, D)
        self.camera_names = sorted(c.cameras)
        self.n_image_tokens = self.vision_tower.num_patches * len(self.camera_names)

        self.action_tokenizer = build_action_tokenizer(c, tokenizer, lm_cfg.vocab_size)
        self.film = FiLM(towers, D) if c.film else None
        self.proprio = (
            nn.Sequential(nn.Linear(c.state_dim, D), nn.GELU(), nn.Linear(D, D)) if c.use_proprio else None
        )
        self.action_head = (
            MLPResNet(c.action_dim * D, c.action_dim, c.head_hidden_dim, c.head_blocks)
            if c.variant == "oft"
            else None
        )
        self.decode_stats = {"predictions": 0, "invalid_action_tokens": 0}

    # ------------------------------------------------------------------ properties
    @property
    def spec(self) -> PolicySpec:
        return self.config.spec

    @property
    def device(self) -> torch.device:
        return self.lm.embed_tokens.weight.device

    @property
    def transformer(self) -> DecoderLM:
        """The backbone (the trainer sets ``policy.transformer.gradient_checkpointing``)."""
        return self.lm

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ prefix
    def prompts(self, instructions: Sequence[str]) -> list[str]:
        """The recipe's prompt for each instruction (OpenVLA lower-cases the instruction)."""
        return [
            self.config.prompt.format(instruction=str(t).strip().lower().rstrip(".")) for t in instructions
        ]

    def _images(self, batch: dict[str, Any], B: int) -> torch.Tensor:
        """Current frame of every camera -> image tokens (B, C*N, D)."""
        tokens = []
        for cam in self.camera_names:
            key = IMAGE_PREFIX + cam
            if key not in batch:
                raise KeyError(f"batch is missing camera '{key}' (policy cameras: {self.camera_names})")
            img = batch[key]
            if img.dim() == 5:  # (B, T, H, W, 3): the current frame
                img = img[:, -1]
            h, w = self.config.cameras[cam]
            if tuple(img.shape) != (B, h, w, 3):
                raise ValueError(
                    f"'{key}': expected uint8 (B, [T,] {h}, {w}, 3), got {tuple(batch[key].shape)}"
                )
            tower = self.vision_tower
            feats = tower.encode(img) if isinstance(tower, VisionTower) else tower(img)  # (B, N, Dv)
            if self.film is not None:
                feats = self.film.apply_last(feats)
            p = next(self.projector.parameters())
            tokens.append(self.projector(feats.to(p.dtype)))  # (B, N, D)
        return torch.cat(tokens, dim=1)  # (B, C*N, D)

    def _prefix(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> prefix embeddings (B, P, D), valid (B, P)."""
        c = self.config
        texts = batch["task"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        B = len(texts)
        ids, text_valid = self.tokenizer.encode(self.prompts(texts), c.text_max_len)  # (B, L), (B, L)
        ids, text_valid = ids.to(self.device), text_valid.to(self.device)
        text = self.lm.embed(ids)  # (B, L, D)
        if self.film is not None:
            w = text_valid.unsqueeze(-1).to(text.dtype)  # (B, L, 1)
            self.film.condition((text * w).sum(1) / w.sum(1).clamp(min=1))  # mean prompt embedding (B, D)
        try:
            parts = [self._images(batch, B)]  # (B, C*N, D)
        finally:
            if self.film is not None:
                self.film.condition(None)
        if c.bos_token_id >= 0:
            bos = torch.full((B, 1), c.bos_token_id, dtype=torch.long, device=self.device)
            parts.insert(0, self.lm.embed(bos))  # (B, 1, D)
        if self.proprio is not None:
            state = batch[STATE_KEY].to(self.device).float()
            if state.dim() == 3:  # (B, T, S): the current state
                state = state[:, -1]
            if tuple(state.shape) != (B, c.state_dim):
                raise ValueError(
                    f"'{STATE_KEY}': expected (B, [T,] {c.state_dim}), got {tuple(batch[STATE_KEY].shape)}"
                )
            s = self.normalizer.normalize(STATE_KEY, state)  # (B, S)
            parts.append(self.proprio(s.to(text.dtype)).unsqueeze(1))  # (B, 1, D)
        n_fixed = sum(p.shape[1] for p in parts)
        parts.append(text)
        valid = torch.cat([torch.ones(B, n_fixed, dtype=torch.bool, device=self.device), text_valid], dim=1)
        return torch.cat(parts, dim=1), valid  # (B, P, D), (B, P)

    def _mask(self, valid: torch.Tensor, n_prefix: int, n_action: int, action_causal: bool) -> torch.Tensor:
        """(B, S) valid -> (B, S, S) attention mask: prefix bidirectional or causal, actions after it."""
        if self.config.prefix_attention == "bidirectional":
            base = build_attention_mask(
                prefix_lm_blocks(n_prefix, n_action, action_causal), device=valid.device
            )
        else:
            n = n_prefix + n_action
            base = torch.ones(n, n, dtype=torch.bool, device=valid.device).tril()  # (S, S) causal
            if not action_causal:
                base[n_prefix:, n_prefix:] = True  # OFT: the action block reads itself fully
        return apply_key_padding(base, valid)  # (B, S, S)

    @staticmethod
    def _positions(valid: torch.Tensor) -> torch.Tensor:
        return (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, S)

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss; `forward` so that DDP's hooks run when it wraps the policy."""
        return self.loss(batch)

    def _targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> normalized actions (B, H, A), valid mask (B, H) or None."""
        c = self.config
        if ACTION_KEY not in batch:
            raise KeyError(f"batch is missing '{ACTION_KEY}' (have {sorted(batch)})")
        actions = batch[ACTION_KEY].to(self.device).float()
        if not torch.isfinite(actions).all():
            raise ValueError(
                f"batch['{ACTION_KEY}'] contains NaN or Inf; check the dataset or its statistics"
            )
        if actions.dim() == 2:  # (B, A) -> (B, 1, A)
            actions = actions.unsqueeze(1)
        if actions.shape[1:] != (c.chunk, c.action_dim):
            raise ValueError(
                f"'{ACTION_KEY}': expected (B, {c.chunk}, {c.action_dim}), got {tuple(actions.shape)}"
            )
        actions = self.normalizer.normalize(ACTION_KEY, actions).clamp(-1.0, 1.0)  # (B, H, A)
        pad = batch.get(f"{ACTION_KEY}_is_pad")
        keep = None if pad is None else ~pad.to(self.device).bool().reshape(actions.shape[0], c.chunk)
        return actions, keep

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        actions, keep = self._targets(batch)  # (B, H, A), (B, H)
        B, H, A = actions.shape
        prefix, valid = self._prefix(batch)  # (B, P, D), (B, P)
        P = prefix.shape[1]
        if self.config.variant == "oft":
            pred = self._oft_actions(prefix, valid)  # (B, H, A)
            mask = None if keep is None else keep.unsqueeze(-1).expand(B, H, A)
            loss = masked_mean((pred - actions).abs(), mask)
            return loss, {"loss": float(loss.detach()), "l1": float(loss.detach())}

        at = self.action_tokenizer
        assert at is not None
        targets = at.encode(actions).reshape(B, H * A)  # (B, HA) token ids
        inp = self.lm.embed(targets[:, :-1])  # (B, HA - 1, D): teacher forcing
        x = torch.cat([prefix, inp], dim=1)  # (B, P + HA - 1, D)
        valid_all = torch.cat([valid, torch.ones(B, H * A - 1, dtype=torch.bool, device=self.device)], dim=1)
        mask = self._mask(valid_all, P, H * A - 1, action_causal=True)
        out = self.lm(
            inputs_embeds=x, attention_mask=mask, position_ids=self._positions(valid_all), logits="none"
        )
        h = out.hidden_states[
            :, P - 1 : P - 1 + H * A
        ]  # (B, HA, D): the positions that predict each action token
        logits = self.lm.compute_logits(h).float()  # (B, HA, V)
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, HA)
        weight = None if keep is None else keep.unsqueeze(-1).expand(B, H, A).reshape(B, H * A)
        loss = masked_mean(ce, weight)
        with torch.no_grad():
            ids = torch.tensor(at.token_ids, device=self.device)
            best = ids[logits[..., ids].argmax(-1)]  # (B, HA): arg-max among action tokens
            acc = masked_mean((logits.argmax(-1) == targets).float(), weight)
            l1 = masked_mean((at.decode(best).values - at.decode(targets).values).abs(), weight)
        return loss, {"loss": float(loss.detach()), "accuracy": float(acc), "action_l1": float(l1)}

    def _oft_actions(self, prefix: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One LM pass with H*A zero placeholder tokens -> normalized actions (B, H, A)."""
        c = self.config
        B, P, D = prefix.shape
        HA = c.n_action_tokens
        x = torch.cat([prefix, prefix.new_zeros(B, HA, D)], dim=1)  # (B, P + HA, D)
        valid_all = torch.cat([valid, torch.ones(B, HA, dtype=torch.bool, device=valid.device)], dim=1)
        mask = self._mask(valid_all, P, HA, action_causal=False)
        out = self.lm(
            inputs_embeds=x, attention_mask=mask, position_ids=self._positions(valid_all), logits="none"
        )
        h = out.hidden_states[:, P:].reshape(B, c.chunk, c.action_dim * D)  # (B, H, A*D)
        assert self.action_head is not None
        p = next(self.action_head.parameters())
        return self.action_head(h.to(p.dtype)).float()  # (B, H, A)

    # ------------------------------------------------------------------ inference
    def observations_to_batch(
        self, observations: Observation | Sequence[Observation], *, dataset: str | None = None
    ) -> dict[str, Any]:
        """Validate the current observation and make a batch of one (the VLA recipes read history 1)."""
        if dataset is not None:
            raise ValueError(f"dataset='{dataset}': this policy was trained on a single dataset; omit it")
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

    @torch.inference_mode()
    def predict_batch(
        self,
        batch: dict[str, Any],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Batched inference: actions (B, H, A) in robot units. steps/generator: unused (deterministic).

        use_cache=False recomputes the whole sequence for every action token (the reference path).
        """
        del steps, generator
        if dataset is not None:
            raise ValueError(f"dataset='{dataset}': this policy was trained on a single dataset; omit it")
        was_training = self.training
        self.eval()
        try:
            prefix, valid = self._prefix(batch)  # (B, P, D), (B, P)
            if self.config.variant == "oft":
                actions = self._oft_actions(prefix, valid)  # (B, H, A)
            else:
                actions = self._decode_tokens(prefix, valid, use_cache)  # (B, H, A)
            self.decode_stats["predictions"] += actions.shape[0]
            return self.normalizer.unnormalize(ACTION_KEY, actions.float())
        finally:
            self.train(was_training)

    def _decode_tokens(self, prefix: torch.Tensor, valid: torch.Tensor, use_cache: bool) -> torch.Tensor:
        c = self.config
        at = self.action_tokenizer
        assert at is not None
        B, P, _ = prefix.shape
        mask = self._mask(valid, P, 0, action_causal=True)  # (B, P, P)
        gen = generate_greedy(
            self.lm,
            inputs_embeds=prefix,
            attention_mask=mask,
            position_ids=self._positions(valid),
            max_new_tokens=c.n_action_tokens,
            allowed_token_ids=at.action_token_ids if c.constrained_decoding else None,
            use_cache=use_cache,
        )
        tokens = gen.tokens  # (B, HA)
        decoded = at.decode(tokens)
        values = decoded.values
        if not bool(decoded.valid.all()):
            # Unconstrained decoding emitted a text token: take that step's best action token instead,
            # and say so (the reference would silently map it to an edge bin).
            n_bad = int((~decoded.valid).sum())
            self.decode_stats["invalid_action_tokens"] += n_bad
            log.warning(
                "%d of %d generated tokens were not action tokens; replaced by the best action token of "
                "their step (decode_stats=%s). Constrained decoding (constrained_decoding=True) avoids this.",
                n_bad,
                tokens.numel(),
                self.decode_stats,
            )
            ids = torch.tensor(at.token_ids, device=tokens.device)
            fallback = ids[gen.logits[..., ids].argmax(-1)]  # (B, HA)
            values = torch.where(decoded.valid, values, at.decode(fallback).values)
        return values.reshape(B, c.chunk, c.action_dim)

    def predict(
        self,
        observations: Observation | Sequence[Observation],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ActionChunk:
        actions = self.predict_batch(
            self.observations_to_batch(observations, dataset=dataset), dataset=dataset
        )
        return first_chunk(actions, self.config.fps)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write config.json + model.safetensors + normalization.safetensors (+ tokenizer.json); no pickle."""
        d = Path(directory)
        if isinstance(self.tokenizer, WordPromptTokenizer):
            tok: dict[str, Any] = self.tokenizer.to_dict()
        else:
            assert isinstance(self.tokenizer, HFPromptTokenizer)
            d.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(d)  # before config.json: a directory with a config is a whole checkpoint
            tok = {"type": "hf", "file": TOKENIZER_FILE}
        meta = {
            "policy_class": POLICY_CLASS,
            "config": self.config.to_dict(),
            "normalization": self.normalizer.describe(),
            "tokenizer": tok,
        }
        weights = self.state_dict() if state_dict is None else state_dict
        return write_policy_files(d, meta, weights, self.normalizer)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> VLAPolicy:
        d = policy_dir(path)
        try:
            meta = json.loads((d / CONFIG_FILE).read_text())
            if meta.get("policy_class") != POLICY_CLASS:
                raise KeyError("policy_class")
            config = VLAConfig.from_dict(meta["config"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{d / CONFIG_FILE} is not a vlaforge VLA policy config: {e}") from e
        norm, weights = read_policy_tensors(d, meta, map_location)
        tok_meta = meta.get("tokenizer") or {}
        tokenizer: PromptTokenizer = (
            HFPromptTokenizer.from_file(d / tok_meta.get("file", TOKENIZER_FILE))
            if tok_meta.get("type") == "hf"
            else WordPromptTokenizer.from_dict(tok_meta)
        )
        policy = cls(config, norm, tokenizer, lm_on_meta=True)
        own = set(policy.state_dict())
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
        policy.load_state_dict(weights, strict=True, assign=True)
        return policy.to(map_location).eval()
