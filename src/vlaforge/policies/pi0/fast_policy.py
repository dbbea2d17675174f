"""`Pi0FastPolicy`: π0-FAST (arXiv 2501.09747) on our DecoderLM, with the contract of `octo.Policy`.

Sequence for one sample (C cameras of N patches, L prefix-text tokens left-padded, K "Action: " tokens,
T FAST tokens of this sample's chunk)::

    [ image tokens (C*N) | (BOS) "Task: {instruction}, State: {s_1 .. s_S};\\n" (L) | "Action: " (K) | FAST (T) | "|" ]
    `--------------------- prefix (P): bidirectional ---------------------------'  `---- postfix: causal -----'

* image tokens: SigLIP post-norm patch features -> Linear -> LM width (as π0 / PaliGemma); a camera
  marked missing (``batch["observation.images.<cam>_valid"]`` False) is masked out as keys;
* the state is q01/q99-normalized (clipped to [-1, 1]) and written as integers: openpi's
  ``np.digitize(s, linspace(-1, 1, 257)[:-1]) - 1`` in 0..255; the instruction is lower-cased with
  ``_`` and newlines replaced by spaces (openpi's cleaning);
* FAST tokens: :class:`~vlaforge.policies.pi0.fast_tokenizer.FastTokenizer` ids ``f`` (q01/q99 ->
  DCT -> round(10·c) -> BPE) mapped onto the LM vocabulary as **``lm_id = V - 1 - skip - f``** (V the
  LM vocabulary size): openpi's ``_act_tokens_to_paligemma_tokens`` with ``skip = 128`` (PaliGemma's
  least-used ids below its last 128); the tiny recipes append the FAST ids after the word
  vocabulary (``V = n_words + n_fast``, ``skip = 0``), so they occupy exactly the last ``n_fast`` ids.

Attention: prefix-LM (``attention.prefix_lm_blocks``): the prefix reads itself fully and never the
postfix; the postfix reads the prefix and is causal. Positions count real tokens only.

Training: teacher forcing; next-token cross-entropy on the postfix only ("Action: ", the FAST tokens
and "|"), averaged per sample and then over the batch (openpi's ``loss_mask``). Prefix positions
carry targets too (the next prompt token, see :class:`FastSequence`) but no loss.

Inference: the prefix and "Action: " are the prompt; greedy decoding with the KV cache
(:func:`~vlaforge.models.lm.generate_greedy`) until "|" or ``max_decode_tokens``; the FAST ids are
decoded into an (H, A) chunk. A sequence that does not decode (no "|", a non-FAST token, or FAST ids
the tokenizer rejects) gives the tokenizer's fallback, zeros in normalized units (the q01/q99
midpoint), is counted in ``decode_stats``, logged as a warning and flagged per chunk
(``ActionChunk.info["decode_failed"]`` / ``"decode_error"``, `predict_batch_info`), never silent.

Checkpoints: ``config.json`` (``policy_class: "pi0-fast"``, config, normalization, prompt tokenizer,
``"fast_tokenizer": "fast"``) + ``model.safetensors`` + ``normalization.safetensors`` + ``fast/``
(``FastTokenizer.save``: ``tokenizer.json`` + ``fast_config.json``) (+ ``tokenizer.json`` for HF prompt
tokenizers), written and read by :class:`~vlaforge.policies.lm_base.LMPolicyMethods` (shared with
``VLAPolicy`` and ``Pi0Policy``; ``fast/`` through its ``_save_extra`` / ``_load_extra`` hooks). The
input plumbing (``observations_to_batch``, current frame / state, camera tokens) is shared there too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlaforge.models.attention import apply_key_padding, build_attention_mask, prefix_lm_blocks
from vlaforge.models.lm import DecoderLM, LMConfig, generate_greedy
from vlaforge.models.lm.generate import GreedyOutput
from vlaforge.models.lm.loss import per_sample_mean, token_cross_entropy
from vlaforge.models.prompt import PromptTokenizer, WordPromptTokenizer
from vlaforge.models.vision import LinearProjector
from vlaforge.models.vision.spec import vision_tower_from_spec
from vlaforge.policies.base import (
    Capabilities,
    decode_info,
    register_policy_class,
    reject_dataset,
)
from vlaforge.policies.lm_base import LMPolicyMethods, on_meta_device
from vlaforge.policies.pi0.fast_config import (
    ACTION_PROMPT,
    END_TOKEN,
    PREFIX_TEMPLATE,
    Pi0FastConfig,
    clean_instruction,
)
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, STATE_KEY

log = logging.getLogger("vlaforge.pi0_fast")
POLICY_CLASS = "pi0-fast"
FAST_DIR = "fast"  # the FastTokenizer's files inside a checkpoint directory
IGNORE = -100  # target id of positions that predict nothing (image tokens, padding)


@dataclass
class FastSequence:
    """One teacher-forced training sequence (S = P + M - 1 for a postfix of M tokens, the last not fed).

    embeds (B, S, D); attention_mask (B, S, S) bool; positions (B, S);
    targets (B, S): the id each position predicts (the next token; ``IGNORE`` after image tokens and
        padding): prompt tokens on prefix positions, "Action: " / FAST / "|" on postfix positions;
    loss_mask (B, S) bool: the positions that carry loss (predicting a postfix token);
    fast_mask (B, S) bool: the positions predicting a FAST token or "|" (accuracy);
    n_prefix: P.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    fast_mask: torch.Tensor
    n_prefix: int


class FastTokenMethods:
    """What the policies that train on FAST tokens share (π0-FAST here, π0.5 in ``pi05_policy.py``).

    The ``"Task: {instruction}, State: {bins};\\n"`` prompt with the discretized q01/q99 state, the FAST id
    map onto the LM vocabulary (``lm_id = V - 1 - skip - f``), the ``"Action: " + FAST + "|"`` postfix of
    a batch's chunks, the prompt tokenizer's ids of fixed texts, and the ``fast/`` checkpoint files. A
    class mixes this in before `LMPolicyMethods`, keeps ``config`` (``chunk``, ``action_dim``,
    ``state_bins``, ``fast_skip_tokens``), ``normalizer``, ``tokenizer`` and ``fast_tokenizer``, and
    calls `_check_fast_tokenizer` and `_init_fast_ids` from its constructor.
    """

    config: Any
    normalizer: Normalizer
    tokenizer: PromptTokenizer
    fast_tokenizer: FastTokenizer
    current_state: Callable[[dict[str, Any], int], torch.Tensor]  # LMPolicyMethods.current_state

    def _check_fast_tokenizer(self) -> None:
        """The FAST tokenizer was fitted on the config's (chunk, action_dim) chunks."""
        c, tok = self.config, self.fast_tokenizer
        if (tok.horizon, tok.action_dim) != (c.chunk, c.action_dim):
            raise ValueError(
                f"the FAST tokenizer was fitted on ({tok.horizon}, {tok.action_dim}) "
                f"chunks, the config needs (chunk, action_dim) = ({c.chunk}, {c.action_dim}); refit it"
            )

    def _init_fast_ids(self, vocab_size: int) -> None:
        """The FAST id block [fast_first, fast_last] of a ``vocab_size`` LM vocabulary, and the text ids of
        "Action: " and "|" (which must lie outside it)."""
        c = self.config
        # FAST id f <-> LM id V - 1 - skip - f: the block [fast_first, fast_last] of the vocabulary.
        self.vocab_size = vocab_size
        self.fast_last = vocab_size - 1 - c.fast_skip_tokens
        self.fast_first = self.fast_last - self.fast_tokenizer.vocab_size + 1
        n_text = self.tokenizer.vocab_size if c.language == "words" else 0
        if self.fast_first < n_text:
            raise ValueError(
                f"the {self.fast_tokenizer.vocab_size} FAST ids (LM ids {self.fast_first}..{self.fast_last}) "
                f"overlap the {n_text} word ids; size the LM vocabulary as n_words + n_fast + fast_skip_tokens"
            )
        self.action_prompt_ids = self._text_ids(ACTION_PROMPT)
        end = self._text_ids(END_TOKEN)
        if len(end) != 1:
            raise ValueError(f"the end token {END_TOKEN!r} must be one prompt-tokenizer id, got ids {end}")
        self.end_token_id = end[0]
        clash = [
            i for i in [*self.action_prompt_ids, self.end_token_id] if self.fast_first <= i <= self.fast_last
        ]
        if clash:
            raise ValueError(
                f"text ids {clash} of {ACTION_PROMPT!r} / {END_TOKEN!r} lie in the FAST id range"
            )

    # ------------------------------------------------------------------ token maps
    def _text_ids(self, text: str) -> list[int]:
        """The prompt tokenizer's ids of a fixed text ("Action: ", "|"); unknown words are an error."""
        if isinstance(self.tokenizer, WordPromptTokenizer) and self.tokenizer.unknown_words(text):
            raise ValueError(
                f"the word vocabulary lacks {self.tokenizer.unknown_words(text)} of {text!r}; build it with "
                "the recipe's builder (make_pi0_fast_policy / make_pi05_policy add the prompt words)"
            )
        ids, valid = self.tokenizer.encode([text], 64)  # (1, 64)
        out = ids[0][valid[0]].tolist()
        if not out:
            raise ValueError(f"{text!r} encodes to no tokens")
        return out

    def fast_to_lm(self, fast_ids: torch.Tensor) -> torch.Tensor:
        """FAST ids (any shape) -> LM ids ``V - 1 - skip - f``."""
        return self.fast_last - fast_ids

    def lm_to_fast(self, lm_ids: torch.Tensor) -> torch.Tensor:
        """LM ids in the FAST range -> FAST ids (the map is its own inverse)."""
        return self.fast_last - lm_ids

    def is_fast_id(self, lm_ids: torch.Tensor) -> torch.Tensor:
        return (lm_ids >= self.fast_first) & (lm_ids <= self.fast_last)

    # ------------------------------------------------------------------ prompt
    def state_strings(self, state: torch.Tensor) -> list[str]:
        """State (B, S) in robot units -> "b_1 b_2 ... b_S" with b = openpi's 256-bin index of the
        q01/q99-normalized value (``np.digitize(s, linspace(-1, 1, 257)[:-1]) - 1``, clipped)."""
        n = self.config.state_bins
        s = self.normalizer.normalize(STATE_KEY, state.float()).clamp(-1.0, 1.0)  # (B, S)
        edges = torch.linspace(-1.0, 1.0, n + 1, device=s.device)[:-1]  # (n,) left bin edges
        bins = (torch.bucketize(s, edges, right=True) - 1).clamp(0, n - 1)  # (B, S)
        return [" ".join(str(int(b)) for b in row) for row in bins.tolist()]

    def _instructions_and_states(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The cleaned instruction and the state string of each sample."""
        texts = batch["task"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        state = self.current_state(batch, len(texts))  # (B, S), finite
        return [clean_instruction(t) for t in texts], self.state_strings(state)

    def prompts(self, batch: dict[str, Any]) -> list[str]:
        """The prefix text of each sample: ``"Task: {instruction}, State: {bins};\\n"`` (before the
        prompt budget is applied: `embed_prefix` shortens a too-long instruction)."""
        instructions, states = self._instructions_and_states(batch)
        return [PREFIX_TEMPLATE.format(instruction=t, state=s) for t, s in zip(instructions, states)]

    # ------------------------------------------------------------------ FAST tokens of a batch
    def fast_tokens(self, batch: dict[str, Any]) -> list[list[int]]:
        """The batch's action chunks (B, H, A) in robot units -> FAST ids per sample (varying length).

        Padded chunk steps (``action_is_pad``; the dataset repeats the last action there) are encoded
        like real ones: a DCT coefficient mixes every step, so no step can be left out of the loss.
        """
        c = self.config
        if ACTION_KEY not in batch:
            raise KeyError(f"batch is missing '{ACTION_KEY}' (have {sorted(batch)})")
        actions = torch.as_tensor(batch[ACTION_KEY]).detach().float().cpu()
        if actions.dim() == 2:  # (B, A) -> (B, 1, A)
            actions = actions.unsqueeze(1)
        if actions.shape[1:] != (c.chunk, c.action_dim):
            raise ValueError(
                f"'{ACTION_KEY}': expected (B, {c.chunk}, {c.action_dim}), got {tuple(actions.shape)}"
            )
        if not bool(torch.isfinite(actions).all()):
            raise ValueError(
                f"batch['{ACTION_KEY}'] contains NaN or Inf; check the dataset or its statistics"
            )
        return self.fast_tokenizer.encode_batch(actions.numpy())

    def fast_postfixes(self, batch: dict[str, Any]) -> list[list[int]]:
        """Each sample's postfix LM ids: ``"Action: "``, its chunk's FAST tokens, ``"|"`` (varying length)."""
        return [
            [
                *self.action_prompt_ids,
                *self.fast_to_lm(torch.tensor(f, dtype=torch.long)).tolist(),
                self.end_token_id,
            ]
            for f in self.fast_tokens(batch)
        ]

    # ------------------------------------------------------------------ persistence
    def _save_extra(self, directory: Path) -> dict[str, Any]:
        """The FAST tokenizer in ``fast/`` (tokenizer.json + fast_config.json), named in config.json."""
        self.fast_tokenizer.save(directory / FAST_DIR)
        return {"fast_tokenizer": FAST_DIR}

    @classmethod
    def _load_extra(cls, directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return {"fast_tokenizer": FastTokenizer.load(directory / meta.get("fast_tokenizer", FAST_DIR))}


@register_policy_class
class Pi0FastPolicy(FastTokenMethods, LMPolicyMethods, nn.Module):
    """See the module docstring. Same public contract as `vlaforge.policies.octo.policy.Policy`; the input
    plumbing and checkpoint I/O are `LMPolicyMethods` (shared with `VLAPolicy` and `Pi0Policy`), the
    FAST prompt / id map / ``fast/`` files `FastTokenMethods` (shared with π0.5)."""

    policy_class = POLICY_CLASS
    config_class = Pi0FastConfig
    label = "π0-FAST"
    family = POLICY_CLASS
    layout = "pi0-fast"
    head_name = "fast"
    # openpi's gemma_2b_lora: the backbone's blocks, rank 16; vision tower and projector train.
    capabilities = Capabilities(
        chunking=True,
        batching=True,
        gradient_checkpointing=True,
        kv_cache="prefix",
        compile="decoding",
        lora_preset={
            "rank": 16,
            "alpha": 16.0,
            "targets": ["lm.layers.*"],
            "train_also": ["vision_tower.*", "projector.*"],
        },
    )

    def __init__(
        self,
        config: Pi0FastConfig,
        normalizer: Normalizer,
        tokenizer: PromptTokenizer,
        fast_tokenizer: FastTokenizer,
        *,
        lm_on_meta: bool = False,
    ):
        """lm_on_meta: build the LM on the meta device (no random init of billions of weights); the caller
        must then load every weight with ``load_state_dict(..., assign=True)``."""
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.tokenizer = tokenizer
        self.fast_tokenizer = fast_tokenizer
        c = config
        lm_cfg = LMConfig(**c.lm)
        self._check_parts(lm_cfg)
        self._check_fast_tokenizer()
        with on_meta_device(lm_on_meta):
            self.lm = DecoderLM(lm_cfg)
        (spec,) = c.vision.values()
        self.vision_tower = vision_tower_from_spec(spec)
        self.projector = LinearProjector(self.vision_tower.width, lm_cfg.hidden_size)
        self.camera_names = sorted(c.cameras)
        self.n_image_tokens = self.vision_tower.num_patches * len(self.camera_names)
        self._init_fast_ids(lm_cfg.vocab_size)
        self.decode_stats = {
            "predictions": 0,
            "decode_failures": 0,  # chunks returned as the fallback (sum of the three reasons below)
            "no_end_token": 0,  # no "|" within max_decode_tokens
            "non_fast_tokens": 0,  # a text token before "|"
            "invalid_fast_tokens": 0,  # FAST ids that do not decode to H·A coefficients
        }

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.lm.embed_tokens.weight.device

    # ------------------------------------------------------------------ prefix
    def embed_prefix(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images + (BOS) prefix text -> embeddings (B, P, D), valid (B, P), token ids (B, P)
        (``IGNORE`` for image tokens and padding: the ids are the prompt-token targets)."""
        c = self.config
        instructions, states = self._instructions_and_states(batch)
        B = len(instructions)
        ids, text_valid = (
            self.encode_prompts(  # (B, L), (B, L) left-padded; the instruction cut to the budget
                instructions, lambda i, t: PREFIX_TEMPLATE.format(instruction=t, state=states[i])
            )
        )
        images, image_valid = self.camera_tokens(batch, B)  # (B, C*N, D), (B, C*N)
        parts, valid = [images], [image_valid]
        id_parts = [torch.full(image_valid.shape, IGNORE, dtype=torch.long, device=self.device)]
        if c.bos_token_id >= 0:
            bos = torch.full((B, 1), c.bos_token_id, dtype=torch.long, device=self.device)
            parts.append(self.lm.embed(bos).to(images.dtype))  # (B, 1, D)
            valid.append(torch.ones(B, 1, dtype=torch.bool, device=self.device))
            id_parts.append(bos)
        parts.append(self.lm.embed(ids).to(images.dtype))  # (B, L, D)
        valid.append(text_valid)
        id_parts.append(torch.where(text_valid, ids, IGNORE))
        return torch.cat(parts, 1), torch.cat(valid, 1), torch.cat(id_parts, 1)  # (B, P, D), (B, P), (B, P)

    @staticmethod
    def attention_mask(valid: torch.Tensor, n_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
        """valid (B, S) with the first ``n_prefix`` tokens the prefix -> mask (B, S, S), positions (B, S).

        Prefix bidirectional, postfix causal and reading the prefix, padded keys masked out (a padded
        query still reads itself); positions count real tokens only.
        """
        S = valid.shape[1]
        base = build_attention_mask(prefix_lm_blocks(n_prefix, S - n_prefix, True), device=valid.device)
        return apply_key_padding(base, valid), LMPolicyMethods._positions(valid)  # positions (B, S)

    # ------------------------------------------------------------------ training
    def sequence(self, batch: dict[str, Any]) -> FastSequence:
        """The teacher-forced training sequence of a batch (see :class:`FastSequence`)."""
        posts = self.fast_postfixes(batch)
        prefix, valid, prefix_ids = self.embed_prefix(batch)  # (B, P, D), (B, P), (B, P)
        B, P = valid.shape
        K = len(self.action_prompt_ids)
        M = max(len(p) for p in posts)
        y = torch.full((B, M), IGNORE, dtype=torch.long)  # (B, M) postfix ids, right-padded
        for i, p in enumerate(posts):
            y[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        y = y.to(self.device)
        y_valid = y != IGNORE  # (B, M)
        fed = y[:, :-1].clamp(min=0)  # (B, M-1): the last token is only predicted; padding fed as id 0
        x = torch.cat([prefix, self.lm.embed(fed).to(prefix.dtype)], dim=1)  # (B, S, D)
        valid_all = torch.cat([valid, y_valid[:, :-1]], dim=1)  # (B, S)
        mask, positions = self.attention_mask(valid_all, P)
        targets = torch.cat([prefix_ids, y], dim=1)[:, 1:]  # (B, S): position s predicts token s + 1
        loss_mask = torch.zeros_like(valid_all)
        loss_mask[:, P - 1 :] = y_valid  # position P - 1 + j predicts postfix token j
        fast_mask = loss_mask.clone()
        fast_mask[:, P - 1 : P - 1 + K] = False  # "Action: " is not an action token
        return FastSequence(x, mask, positions, targets, loss_mask, fast_mask, P)

    def sequence_loss(self, seq: FastSequence) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the ``loss_mask`` positions: mean per sample, then over the batch (openpi)."""
        out = self.lm(
            inputs_embeds=seq.embeds,
            attention_mask=seq.attention_mask,
            position_ids=seq.positions,
            logits="none",
        )
        h = out.hidden_states[seq.loss_mask]  # (N, D): only the positions that carry loss
        logits = self.lm.compute_logits(h).float()  # (N, V)
        targets = seq.targets[seq.loss_mask]  # (N,)
        ce, hit = token_cross_entropy(logits, targets, seq.loss_mask)  # (B, S), (B, S)
        loss = per_sample_mean(ce, seq.loss_mask).mean()
        with torch.no_grad():
            acc = hit[seq.fast_mask].float().mean()
            n_fast = seq.fast_mask.sum(1).float().mean() - 1  # minus the end token
        return loss, {"loss": float(loss.detach()), "accuracy": float(acc), "fast_tokens": float(n_fast)}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.sequence_loss(self.sequence(batch))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, batch: dict[str, Any], *, use_cache: bool = True) -> GreedyOutput:
        """Greedy decoding after prefix + "Action: ": tokens (B, T) LM ids, T <= max_decode_tokens
        (a row that emitted "|" repeats it while others continue)."""
        c = self.config
        prefix, valid, _ = self.embed_prefix(batch)  # (B, P, D), (B, P)
        B, P = valid.shape
        ap = torch.tensor(self.action_prompt_ids, dtype=torch.long, device=self.device)[None].expand(B, -1)
        x = torch.cat([prefix, self.lm.embed(ap).to(prefix.dtype)], dim=1)  # (B, P + K, D)
        valid_all = torch.cat([valid, torch.ones_like(ap, dtype=torch.bool)], dim=1)  # (B, P + K)
        mask, positions = self.attention_mask(valid_all, P)
        allowed = None
        if c.constrained_decoding:
            allowed = [*range(self.fast_first, self.fast_last + 1), self.end_token_id]
        return generate_greedy(
            self.lm,
            inputs_embeds=x,
            attention_mask=mask,
            position_ids=positions,
            max_new_tokens=c.max_decode_tokens,
            allowed_token_ids=allowed,
            eos_token_id=self.end_token_id,
            use_cache=use_cache,
        )

    def decode_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated LM ids (B, T) -> actions (B, H, A) in robot units, valid (B,) bool.

        Each row is read up to its first "|"; a row without "|", with a non-FAST token before it, or with
        FAST ids the tokenizer cannot decode becomes the tokenizer's fallback (zeros in normalized units),
        is counted in ``decode_stats`` and logged.
        """
        actions, errors = self.decode_token_rows(tokens)
        return actions, torch.tensor([e is None for e in errors], dtype=torch.bool)

    def decode_token_rows(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[str | None]]:
        """`decode_tokens` with, per row, None or why it is the fallback (``"<reason>: <detail>"``)."""
        c = self.config
        fallback = self.fast_tokenizer.unnormalize(np.zeros((c.chunk, c.action_dim))).astype(np.float32)
        out, errors = [], []
        for row in tokens.detach().cpu().long():
            ends = (row == self.end_token_id).nonzero()
            reason, error = None, ""
            if len(ends) == 0:
                reason, error = "no_end_token", f"no end token {END_TOKEN!r} in {len(row)} generated tokens"
            else:
                seq = row[: int(ends[0])]
                if not bool(self.is_fast_id(seq).all()):
                    bad = seq[~self.is_fast_id(seq)].tolist()
                    reason, error = "non_fast_tokens", f"non-FAST token ids {bad[:8]} before {END_TOKEN!r}"
                else:
                    dec = self.fast_tokenizer.decode(self.lm_to_fast(seq).tolist())
                    if dec.valid:
                        out.append(dec.actions)
                        errors.append(None)
                        continue
                    reason, error = "invalid_fast_tokens", str(dec.error)
            self.decode_stats["decode_failures"] += 1
            self.decode_stats[reason] += 1
            log.warning(
                "π0-FAST decode failed (%s); returning the fallback chunk (zeros in normalized units). "
                "decode_stats=%s",
                error,
                self.decode_stats,
            )
            out.append(fallback)
            errors.append(f"{reason}: {error}")
        actions = torch.from_numpy(np.stack(out)).to(self.device)  # (B, H, A)
        return actions, errors

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
        """Batched inference: actions (B, H, A) in robot units. steps/generator: unused (greedy).

        use_cache=False recomputes the whole sequence for every generated token (the reference path).
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
        """`predict_batch` plus per chunk ``decode_failed`` (the fallback chunk) and ``decode_error``."""
        del steps, generator
        reject_dataset(dataset)
        with self.evaluating():
            gen = self.generate(batch, use_cache=use_cache)
            actions, errors = self.decode_token_rows(gen.tokens)  # (B, H, A), B x (None | why)
            self.decode_stats["predictions"] += actions.shape[0]
            return actions.float(), [decode_info(e) for e in errors]
