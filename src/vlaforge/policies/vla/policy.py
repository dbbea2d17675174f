"""`VLAPolicy`: RT-2 / OpenVLA / OpenVLA-OFT on our decoder LM, with the contract of `octo.Policy`.

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
  counted in ``decode_stats`` and flagged on its chunk (``info["decode_failed"]``; never a silent 0).
* **oft**: H*A placeholder tokens with zero embeddings read the prefix and each other
  (bidirectional); one forward pass; their final hidden states, grouped per chunk step
  (B, H, A*D), go through an MLP-ResNet to (B, H, A), trained with L1. The state enters as one
  projected token after the image tokens, and FiLM conditions the vision towers on the mean prompt
  embedding.

* **co-training (RT-2)**: rows of a batch with ``is_vl`` True (from ``data.cotrain.CoTrainingDataset``)
  are vision-language samples: ``[ image | prompt (as written) | target text ]``, next-token
  cross-entropy on the target tokens (`_vl_loss`); the other rows train on action tokens as above. Both
  go through the same teacher-forced pass and prefix-LM mask (`_teacher_forced_logits`).

Positions count real tokens only (``cumsum(valid) - 1``), so prompt padding changes nothing.
Actions are normalized with q01/q99 (clipped to [-1, 1], gripper dimensions left unnormalized).
Checkpoints are ``config.json`` (``policy_class: "vla"``, config, normalization, tokenizer) +
``model.safetensors`` + ``normalization.safetensors`` (+ ``tokenizer.json`` for HF tokenizers),
written and read by :class:`~vlaforge.policies.lm_base.LMPolicyMethods` (shared with π0);
``Policy.load`` dispatches here on ``policy_class``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.attention import apply_key_padding, build_attention_mask, prefix_lm_blocks
from vlaforge.models.heads.base import masked_mean
from vlaforge.models.heads.mlp_resnet import MLPResNet
from vlaforge.models.lm import DecoderLM, LMConfig, generate_greedy
from vlaforge.models.prompt import PromptTokenizer
from vlaforge.models.vision import (
    FusedMLPProjector,
    FusedVisionTower,
    LinearProjector,
    Lite0ImageEncoder,
    VisionTower,
)
from vlaforge.models.vision.spec import vision_tower_from_spec
from vlaforge.policies.base import (
    Capabilities,
    action_chunk_targets,
    decode_info,
    register_policy_class,
    reject_dataset,
)
from vlaforge.policies.lm_base import LMPolicyMethods, on_meta_device
from vlaforge.policies.vla.action_tokenizer import ActionTokenizer
from vlaforge.policies.vla.config import VLAConfig
from vlaforge.policies.vla.film import FiLM
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, IS_VL_KEY, STATE_KEY, VL_TARGET_KEY

log = logging.getLogger("vlaforge.vla")
POLICY_CLASS = "vla"


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


def select_rows(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The rows `rows` (bool (B,)) of a collated batch: tensors and lists with B entries are indexed,
    anything else (a single instruction string, scalars) is kept."""
    B = rows.numel()
    idx = rows.nonzero().flatten().tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == B:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, (list, tuple)) and len(value) == B:
            out[key] = [value[i] for i in idx]
        else:
            out[key] = value
    return out


@register_policy_class
class VLAPolicy(LMPolicyMethods, nn.Module):
    """See the module docstring. Same public contract as `vlaforge.policies.octo.policy.Policy`; the input
    plumbing, `predict` and checkpoint I/O are `LMPolicyMethods` (shared with `Pi0Policy`)."""

    policy_class = POLICY_CLASS
    config_class = VLAConfig
    label = "VLA"
    family = POLICY_CLASS
    # OpenVLA's finetune.py (rank 32, alpha min(rank, 16)): every linear layer of the vision tower,
    # projector and LM blocks (peft's "all-linear", not the output head); OFT's own modules train fully.
    capabilities = Capabilities(
        chunking=True,
        batching=True,
        gradient_checkpointing=True,
        kv_cache="prefix",
        compile="decoding",
        lora_preset={
            "rank": 32,
            "alpha": 16.0,
            "targets": ["vision_tower.*", "projector.*", "lm.layers.*"],
            "train_also": ["action_head.*", "proprio.*", "film.*"],
        },
    )

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
        lm_cfg = LMConfig(**c.lm)
        self._check_parts(lm_cfg)
        with on_meta_device(lm_on_meta):
            self.lm = DecoderLM(lm_cfg)
        D = lm_cfg.hidden_size

        towers = {name: vision_tower_from_spec(spec, feature_layer=-2) for name, spec in c.vision.items()}
        self.vision_tower: VisionTower | FusedVisionTower | Lite0ImageEncoder = (
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
    def device(self) -> torch.device:
        return self.lm.embed_tokens.weight.device

    @property
    def layout(self) -> str:  # type: ignore[override]
        """'oft' (parallel L1 chunk) or 'vla' (token decoding): the module layout `bench` sees."""
        return "oft" if self.config.variant == "oft" else "vla"

    @property
    def head_name(self) -> str:  # type: ignore[override]
        return "l1" if self.config.variant == "oft" else "tokens"

    # ------------------------------------------------------------------ prefix
    @staticmethod
    def clean_instruction(text: str) -> str:
        """OpenVLA's cleaning: stripped, lower-cased, no final period."""
        return str(text).strip().lower().rstrip(".")

    def prompts(self, instructions: Sequence[str]) -> list[str]:
        """The recipe's prompt for each instruction (before the prompt budget is applied)."""
        return [self.config.prompt.format(instruction=self.clean_instruction(t)) for t in instructions]

    def _images(self, batch: dict[str, Any], B: int) -> torch.Tensor:
        """Current frame of every camera -> image tokens (B, C*N, D)."""
        tokens = []
        for cam in self.camera_names:
            img = self.current_frame(batch, cam, B)  # (B, h, w, 3)
            tower = self.vision_tower
            feats = tower.encode(img) if isinstance(tower, VisionTower) else tower(img)  # (B, N, Dv)
            if self.film is not None:
                feats = self.film.apply_last(feats)
            p = next(self.projector.parameters())
            tokens.append(self.projector(feats.to(p.dtype)))  # (B, N, D)
        return torch.cat(tokens, dim=1)  # (B, C*N, D)

    def _prefix(
        self, batch: dict[str, Any], *, raw_prompt: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> prefix embeddings (B, P, D), valid (B, P).

        raw_prompt: ``batch["task"]`` is the whole prompt as written (co-training's vision-language
        rows), not an instruction to clean and put into the recipe's action template.
        """
        c = self.config
        texts = batch["task"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        B = len(texts)
        if raw_prompt:
            ids, text_valid = self.encode_prompts(texts, lambda _, t: t)  # (B, L), (B, L)
        else:
            ids, text_valid = self.encode_prompts(  # (B, L), (B, L): the instruction cut to the budget
                [self.clean_instruction(t) for t in texts], lambda _, t: c.prompt.format(instruction=t)
            )
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
            s = self.normalizer.normalize(STATE_KEY, self.current_state(batch, B))  # (B, S)
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

    # ------------------------------------------------------------------ training
    def _targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> normalized actions (B, H, A), valid mask (B, H) or None."""
        c = self.config
        actions = action_chunk_targets(batch, c.chunk, c.action_dim, self.device)  # (B, H, A)
        actions = self.normalizer.normalize(ACTION_KEY, actions).clamp(-1.0, 1.0)  # (B, H, A)
        pad = batch.get(f"{ACTION_KEY}_is_pad")
        keep = None if pad is None else ~pad.to(self.device).bool().reshape(actions.shape[0], c.chunk)
        return actions, keep

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Action-token CE (openvla / rt2) or L1 (oft) on robot rows; with co-training (rows whose
        ``batch["is_vl"]`` is True, see `data/cotrain.py`) next-token CE on those rows' ``vl_target`` text.

        A mixed batch is split into its robot and VL rows (their target lengths differ) and the two
        losses are averaged weighted by their row counts, so every row counts the same as without
        co-training. Metrics: the robot metrics as before, plus ``robot_loss``, ``vl_loss``,
        ``vl_accuracy`` and ``vl_fraction`` when the batch comes from a co-training dataset.
        """
        is_vl = batch.get(IS_VL_KEY)
        if is_vl is None:
            return self._robot_loss(batch)
        vl = torch.as_tensor(is_vl).bool().reshape(-1).cpu()  # (B,)
        B, n_vl = vl.numel(), int(vl.sum())
        if n_vl and self.config.variant == "oft":
            raise ValueError(
                "vision-language co-training needs an LM loss; the OFT variant regresses actions with L1"
            )
        parts: list[tuple[torch.Tensor, int]] = []
        metrics: dict[str, float] = {"vl_fraction": n_vl / B}
        if n_vl < B:
            robot_loss, robot_metrics = self._robot_loss(select_rows(batch, ~vl))
            parts.append((robot_loss, B - n_vl))
            metrics.update(robot_metrics, robot_loss=robot_metrics["loss"])
        if n_vl:
            vl_loss, vl_metrics = self._vl_loss(select_rows(batch, vl))
            parts.append((vl_loss, n_vl))
            metrics.update(vl_metrics)
        loss = sum(part * n for part, n in parts) / B
        assert isinstance(loss, torch.Tensor)
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def _robot_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        actions, keep = self._targets(batch)  # (B, H, A), (B, H)
        B, H, A = actions.shape
        prefix, valid = self._prefix(batch)  # (B, P, D), (B, P)
        if self.config.variant == "oft":
            pred = self._oft_actions(prefix, valid)  # (B, H, A)
            mask = None if keep is None else keep.unsqueeze(-1).expand(B, H, A)
            loss = masked_mean((pred - actions).abs(), mask)
            return loss, {"loss": float(loss.detach()), "l1": float(loss.detach())}

        at = self.action_tokenizer
        assert at is not None
        targets = at.encode(actions).reshape(B, H * A)  # (B, HA) token ids
        logits = self._teacher_forced_logits(prefix, valid, targets)  # (B, HA, V)
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, HA)
        weight = None if keep is None else keep.unsqueeze(-1).expand(B, H, A).reshape(B, H * A)
        loss = masked_mean(ce, weight)
        with torch.no_grad():
            ids = torch.tensor(at.token_ids, device=self.device)
            best = ids[logits[..., ids].argmax(-1)]  # (B, HA): arg-max among action tokens
            acc = masked_mean((logits.argmax(-1) == targets).float(), weight)
            l1 = masked_mean((at.decode(best).values - at.decode(targets).values).abs(), weight)
        return loss, {"loss": float(loss.detach()), "accuracy": float(acc), "action_l1": float(l1)}

    def _vl_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token CE on the target text after [image | prompt] (RT-2's VQA / captioning rows)."""
        targets, target_valid = self._text_targets(batch[VL_TARGET_KEY])  # (B, T), (B, T)
        prefix, valid = self._prefix(batch, raw_prompt=True)  # (B, P, D), (B, P)
        logits = self._teacher_forced_logits(prefix, valid, targets, target_valid)  # (B, T, V)
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
        weight = target_valid.float()  # (B, T)
        loss = masked_mean(ce, weight)
        with torch.no_grad():
            acc = masked_mean((logits.argmax(-1) == targets).float(), weight)
        return loss, {"vl_loss": float(loss.detach()), "vl_accuracy": float(acc)}

    def _text_targets(self, texts: Sequence[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Target texts -> RIGHT-padded ids (B, T) and valid (B, T); each cut to its first ``text_max_len``
        tokens (the budget that bounds the prompt bounds the answer too)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for t in texts:
            ids, ok = self.tokenizer.encode([t], len(t.encode()) + 1)  # (1, n+1): every token fits
            row = ids[0][ok[0]][: self.config.text_max_len]
            if row.numel() == 0:
                raise ValueError(f"vision-language target {t!r} encodes to no tokens")
            rows.append(row)
        T = max(r.numel() for r in rows)
        out = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T)
        out_valid = torch.zeros(len(rows), T, dtype=torch.bool)  # (B, T)
        for i, r in enumerate(rows):
            out[i, : r.numel()], out_valid[i, : r.numel()] = r, True
        return out.to(self.device), out_valid.to(self.device)

    def _teacher_forced_logits(
        self,
        prefix: torch.Tensor,
        valid: torch.Tensor,
        targets: torch.Tensor,
        target_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) predicting each of `targets` (B, T) from the prefix (B, P, D) and the targets
        before it (teacher forcing: the input holds the first T - 1). The prefix attends per
        ``prefix_attention``, the targets causally; target_valid (B, T) masks right padding (None: all
        real). Shared by the action tokens and co-training's text targets."""
        B, P = valid.shape
        T = targets.shape[1]
        inp = self.lm.embed(targets[:, :-1])  # (B, T - 1, D)
        x = torch.cat([prefix, inp], dim=1)  # (B, P + T - 1, D)
        tail = (
            torch.ones(B, T - 1, dtype=torch.bool, device=self.device)
            if target_valid is None
            else target_valid[:, :-1]
        )
        valid_all = torch.cat([valid, tail], dim=1)  # (B, P + T - 1)
        mask = self._mask(valid_all, P, T - 1, action_causal=True)
        out = self.lm(
            inputs_embeds=x, attention_mask=mask, position_ids=self._positions(valid_all), logits="none"
        )
        h = out.hidden_states[:, P - 1 : P - 1 + T]  # (B, T, D): the positions that predict each target
        return self.lm.compute_logits(h).float()  # (B, T, V)

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
        return self.predict_batch_info(
            batch, dataset=dataset, steps=steps, generator=generator, use_cache=use_cache
        )[0]

    @torch.inference_mode()
    def predict_batch_info(
        self,
        batch: dict[str, Any],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """`predict_batch` plus per chunk ``decode_failed`` / ``decode_error`` (token-decoding variants: a
        chunk in which unconstrained decoding emitted non-action tokens that were replaced)."""
        del steps, generator
        reject_dataset(dataset)
        with self.evaluating():
            prefix, valid = self._prefix(batch)  # (B, P, D), (B, P)
            if self.config.variant == "oft":
                actions = self._oft_actions(prefix, valid)  # (B, H, A)
                infos: list[dict[str, Any]] = [{} for _ in range(actions.shape[0])]
            else:
                actions, n_bad = self._decode_tokens(prefix, valid, use_cache)  # (B, H, A), (B,)
                HA = self.config.n_action_tokens
                infos = [
                    decode_info(
                        f"invalid_action_tokens: {n} of {HA} generated tokens replaced" if n else None
                    )
                    for n in n_bad.tolist()
                ]
            self.decode_stats["predictions"] += actions.shape[0]
            return self.normalizer.unnormalize(ACTION_KEY, actions.float()), infos

    def _decode_tokens(
        self, prefix: torch.Tensor, valid: torch.Tensor, use_cache: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> action values (B, H, A) and, per row, how many generated tokens were not action tokens (B,)."""
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
        n_bad_rows = (~decoded.valid).sum(1)  # (B,)
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
        return values.reshape(B, c.chunk, c.action_dim), n_bad_rows
