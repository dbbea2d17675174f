"""`Pi05Policy`: π0.5 (arXiv 2504.16054) with knowledge insulation (arXiv 2505.23705) on π0's code.

A :class:`~vlaforge.policies.pi0.policy.Pi0Policy` (Gemma backbone + action expert, joint attention,
flow matching, Euler sampling with a KV cache, RTC) with the FAST prompt and FAST ids of π0-FAST
(:class:`~vlaforge.policies.pi0.fast_policy.FastTokenMethods`). One training sequence (C cameras of N
patches, L prompt tokens left-padded, postfix of M tokens right-padded, H chunk)::

    [ images (C*N) | (BOS) "Task: {task}, State: {bins};\\n" (L) | "Subtask: " text ";" | "Action: " FAST "|" | actions (H) ]
    `----------------- prefix (P): backbone, bidirectional -----'  `------ postfix: backbone, causal ------' `- expert -'
                                                                    `-- optional --'

* **State as text**: the q01/q99-normalized state as 256-bin integers in the prompt (openpi's π0.5 /
  π0-FAST prefix); no state token. Actions are q01/q99-normalized too (clipped), zero-padded to 32.
* **Flow time by adaptive RMSNorm**: action tokens are ``action_in_proj(a)`` only; the time features
  ``swish(time_mlp_out(swish(time_mlp_in(φ(τ)))))`` (openpi's ``time_mlp_*``) drive every norm of the
  expert (:class:`~vlaforge.policies.pi0.expert.AdaRMSNorm`: scale, shift and residual gate, identity at
  init).
* **FAST head through the backbone**: the postfix holds ``"Action: "`` + the chunk's FAST tokens + ``"|"``
  (the FAST tokenizer fitted on the dataset, ids ``V - 1 - skip - f``), trained by next-token
  cross-entropy; the continuous chunk is trained by flow matching on the expert in the same pass.
  Loss = CE(FAST) [+ CE(subtask)] + ``flow_loss_weight`` (α = 10) · flow MSE, each CE averaged per
  sample over its tokens, then over the batch (the subtask term over the samples that have one).
* **Subtask** (``predict_subtask``): a sample with ``batch["subtask"]`` (a string) has
  ``"Subtask: " + text + ";"`` before the FAST tokens; CE on the text and ";". The actions read it.
  At inference the backbone first decodes the subtask greedily (with the KV cache), then the expert
  samples actions conditioned on it; ``policy.last_subtasks`` / ``ActionChunk.info["subtask"]``.

Attention (`sequence_mask`): the prefix reads itself; the postfix is causal and reads the prefix; the
actions read the prefix, the subtask tokens and each other, **not the FAST tokens** (which are a
training signal only: inference never generates them, so the actions must not depend on them); no
backbone token reads an action token. **Knowledge insulation** (``knowledge_insulation``, default on):
the expert's queries read stop-gradient keys/values of the backbone tokens
(``JointTransformer(insulate=True)``), so the flow loss trains the expert (and the action/time layers)
only, and the backbone learns from the cross-entropy only. With it off the mask is the same and the flow
loss's gradient reaches the backbone through those keys/values.

Positions count real tokens; the actions sit after the prefix and the subtask, so their positions
are the same in training (where FAST tokens come before them in the sequence) and at inference.

Flow matching, Euler sampling, the KV cache and RTC are π0's (``Pi0Policy``): τ = 0 noise, τ = 1
data, ``u = A − ε``, 10 steps; ``predict`` runs the prefix (+ the decoded subtask) once into a
:class:`~vlaforge.models.lm.KVCache` and each step runs the expert on the H action tokens only.

Checkpoints: ``config.json`` (``policy_class: "pi05"``) + weights + normalization + ``fast/`` (the FAST
tokenizer) through `LMPolicyMethods` and `FastTokenMethods`.

**Without a FAST tokenizer** (``fast_tokenizer=None``; imported π0.5 checkpoints, see ``convert_pi0.py``:
openpi keeps its FAST tokenizer elsewhere and trains π0.5 by flow only): flow inference (``predict``,
RTC, the subtask decoding) is unchanged, because the FAST head only adds the cross-entropy term of
training; the ``config.fast_vocab_size`` ids below the last ``fast_skip_tokens`` stay reserved for FAST.
``config.json`` then says ``"fast_tokenizer": null``. Training needs one: ``loss`` refuses before any
compute and names the fixes (``set_fast_tokenizer(fit_fast_tokenizer(...))``, or ``--fast-tokenizer``).

**Prompt** (``config.prompt``): the recipes' ``"Task: ..., State: ...;\\n"`` with ``"Action: "`` opening the
FAST postfix, or openpi's / LeRobot's π0.5 prompt ``OPENPI_PROMPT`` (imported checkpoints), which already
ends with ``"Action: "`` in the prefix and keeps the task's case; the FAST postfix is then ``FAST "|"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.attention import TokenBlock, apply_key_padding, build_attention_mask
from vlaforge.models.lm import DecoderLM, KVCache, LMConfig
from vlaforge.models.lm.generate import greedy_loop
from vlaforge.models.lm.loss import per_sample_mean, token_cross_entropy
from vlaforge.models.prompt import PromptTokenizer, WordPromptTokenizer
from vlaforge.models.time_embedding import sincos_time_embedding
from vlaforge.policies.base import register_policy_class
from vlaforge.policies.pi0.expert import ActionExpert, JointTransformer
from vlaforge.policies.pi0.fast_policy import FAST_DIR, IGNORE, FastTokenMethods
from vlaforge.policies.pi0.fast_tokenizer import FastTokenizer
from vlaforge.policies.pi0.pi05_config import (
    OPENPI_PROMPT,
    SUBTASK_END,
    SUBTASK_PROMPT,
    Pi05Config,
    clean_task_openpi,
)
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.transforms.normalize import Normalizer

log = logging.getLogger("vlaforge.pi05")
POLICY_CLASS = "pi05"
SUBTASK_KEY = "subtask"  # batch["subtask"]: list[str] (B,), "" = no label for that sample
# What a postfix token is trained as (its loss term): fed only, subtask text / ";", FAST block.
FED, SUBTASK, FAST = 0, 1, 2
MAX_WARNED = 1024  # distinct subtask texts remembered for the one-warning-per-text rule


def decode_text(tokenizer: PromptTokenizer, ids: Sequence[int]) -> str:
    """Prompt-tokenizer ids -> text: words joined by spaces (word vocabularies) or the HF decoder."""
    if isinstance(tokenizer, WordPromptTokenizer):
        vocab = tokenizer.words.vocab
        return " ".join(vocab[i] for i in ids if 0 <= i < len(vocab))
    return str(tokenizer.tok.decode(list(ids)))  # type: ignore[attr-defined]


@dataclass
class Pi05Sequence:
    """One teacher-forced training batch (the last postfix token is predicted, not fed).

    context (B, P + M - 1, D): backbone embeddings, prefix then the fed postfix tokens;
    attention_mask (B, P + M - 1 + H, same) bool and positions (B, P + M - 1 + H): the joint sequence
        with the H action tokens last;
    targets (B, M): postfix LM ids (``IGNORE`` = padding); position ``P - 1 + j`` predicts ``targets[:, j]``;
    kinds (B, M): ``FED`` / ``SUBTASK`` / ``FAST`` (which loss term the token belongs to; padding ``FED``);
    n_context (B,): postfix tokens the actions read (the subtask block; 0 without one);
    n_prefix: P.
    """

    context: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    kinds: torch.Tensor
    n_context: torch.Tensor
    n_prefix: int


@register_policy_class
class Pi05Policy(FastTokenMethods, Pi0Policy):
    """See the module docstring. π0's contract (`Pi0Policy`) with π0-FAST's prompt and FAST ids.

    π0's state token does not exist here (`embed_state` refuses); `action_inputs` returns the action
    tokens and the adaRMS time condition; the expert is adaptive and (by default) insulated.
    """

    policy_class = POLICY_CLASS
    config_class = Pi05Config
    label = "π0.5"
    family = POLICY_CLASS  # layout, head, capabilities and LoRA preset: π0's (inherited)
    config: Pi05Config
    fast_tokenizer: FastTokenizer | None  # type: ignore[assignment]  # None: flow inference only

    def __init__(
        self,
        config: Pi05Config,
        normalizer: Normalizer,
        tokenizer: PromptTokenizer,
        fast_tokenizer: FastTokenizer | None,
        *,
        lm_on_meta: bool = False,
    ):
        """lm_on_meta: build the transformer on the meta device (``LMPolicyMethods.load`` assigns every
        weight); fast_tokenizer: fitted on (chunk, action_dim) chunks of the training data, or None (an
        imported checkpoint: flow inference works, training needs `set_fast_tokenizer` first)."""
        super().__init__(config, normalizer, tokenizer, lm_on_meta=lm_on_meta)
        self.fast_tokenizer = fast_tokenizer
        self._check_fast_tokenizer()
        self._init_fast_ids(self.backbone.config.vocab_size)
        self.subtask_prompt_ids: list[int] = []
        self.subtask_end_id = -1
        if config.predict_subtask:
            self.subtask_prompt_ids = self._text_ids(SUBTASK_PROMPT)
            end = self._text_ids(SUBTASK_END)
            if len(end) != 1:
                raise ValueError(
                    f"the subtask end {SUBTASK_END!r} must be one prompt-tokenizer id, got {end}"
                )
            self.subtask_end_id = end[0]
        self.last_subtasks: list[str] = []  # the subtasks decoded by the last sampling call
        self.decode_stats = {"subtasks": 0, "subtask_no_end": 0}  # decoded / cut at subtask_max_len
        self._warned_subtasks: set[str] = set()

    # ------------------------------------------------------------------ FAST tokenizer (optional)
    def _check_fast_tokenizer(self) -> None:
        if self.fast_tokenizer is not None:
            super()._check_fast_tokenizer()

    def _init_fast_ids(self, vocab_size: int) -> None:
        """`FastTokenMethods._init_fast_ids`; without a FAST tokenizer the block is the
        ``config.fast_vocab_size`` ids a fitted one may use at most, and the "Action: " / "|" ids (used by
        the FAST loss only) are computed when one is attached."""
        c = self.config
        if self.fast_tokenizer is not None:
            super()._init_fast_ids(vocab_size)
        else:
            self.vocab_size = vocab_size
            self.fast_last = vocab_size - 1 - c.fast_skip_tokens
            self.fast_first = self.fast_last - c.fast_vocab_size + 1
            self.action_prompt_ids, self.end_token_id = [], -1
        if self.fast_first < 0:
            n = self.fast_last - self.fast_first + 1
            raise ValueError(
                f"the LM vocabulary of {vocab_size} ids cannot hold {n} FAST ids below its last "
                f"fast_skip_tokens={c.fast_skip_tokens} ids"
            )

    def set_fast_tokenizer(self, fast_tokenizer: FastTokenizer) -> None:
        """Attach a FAST tokenizer (fitted on this policy's (chunk, action_dim) chunks) to train the FAST
        loss, e.g. on an imported checkpoint: ``policy.set_fast_tokenizer(fit_fast_tokenizer(policy.config,
        dataset, normalized_action_mask(policy.config)))``. A tokenizer that does not fit leaves the policy
        as it was (ValueError)."""
        old = self.fast_tokenizer
        self.fast_tokenizer = fast_tokenizer
        try:
            self._check_fast_tokenizer()
            self._init_fast_ids(self.backbone.config.vocab_size)
        except ValueError:
            self.fast_tokenizer = old
            self._init_fast_ids(self.backbone.config.vocab_size)
            raise

    def _require_fast_tokenizer(self) -> None:
        """Training's FAST term needs the FAST tokenizer: the error says how to get one (before any
        compute)."""
        if self.fast_tokenizer is None:
            raise ValueError(
                "this π0.5 policy has no FAST tokenizer (imported π0.5 checkpoints ship none), so it cannot "
                "train its FAST-token loss. Fit one on your dataset and attach it: "
                "policy.set_fast_tokenizer(fit_fast_tokenizer(policy.config, dataset, "
                "normalized_action_mask(policy.config))) (vlaforge.policies.pi0.fast_recipes / "
                "vlaforge.policies.lm_recipes), or convert with "
                "`vlaforge convert-pi0 ... --fast-tokenizer DIR` (a FastTokenizer.save directory). "
                "Flow inference (predict) needs none"
            )

    def _save_extra(self, directory: Path) -> dict[str, Any]:
        """``fast/`` (FastTokenMethods), or ``"fast_tokenizer": null`` without a FAST tokenizer."""
        if self.fast_tokenizer is None:
            return {"fast_tokenizer": None}
        return super()._save_extra(directory)

    @classmethod
    def _load_extra(cls, directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
        if meta.get("fast_tokenizer", FAST_DIR) is None:
            return {"fast_tokenizer": None}
        return super()._load_extra(directory, meta)

    # ------------------------------------------------------------------ parts (Pi0Policy hooks)
    def _make_transformer(self, backbone: DecoderLM, expert_config: LMConfig) -> JointTransformer:
        """adaRMS expert (condition width = expert width, openpi's ``adarms_cond``), insulated by config."""
        c = self.config
        expert = ActionExpert(expert_config, time_conditioning="adarms", cond_dim=c.expert_width)
        return JointTransformer(backbone, expert, insulate=c.knowledge_insulation)

    def _build_action_layers(self, width: int) -> None:
        """Action tokens = ``action_in_proj(a)``; time MLP -> adaRMS condition; expert outputs -> velocities."""
        c = self.config
        self.action_in_proj = nn.Linear(c.max_action_dim, width)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, c.max_action_dim)

    def prompt_parts(self, batch: dict[str, Any]) -> tuple[list[str], Callable[[int, str], str]]:
        """The cleaned instructions, and the prompt ``"Task: {instruction}, State: {bins};\\n"`` of row i
        (with ``OPENPI_PROMPT``: ``+ "Action: "``, and the instructions keep their case, as openpi's)."""
        instructions, states = self._instructions_and_states(batch)
        if self.config.prompt == OPENPI_PROMPT:
            texts = batch["task"]
            instructions = [clean_task_openpi(t) for t in ([texts] if isinstance(texts, str) else texts)]
        return instructions, lambda i, t: self.config.prompt.format(instruction=t, state=states[i])

    def embed_state(self, batch: dict[str, Any], B: int) -> torch.Tensor:
        raise ValueError("π0.5 reads the state as text in the prompt (prompt_parts); it has no state token")

    def action_inputs(self, x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noisy actions (B, H, 32), τ (B,) -> tokens ``action_in_proj(a)`` (B, H, De) and the adaRMS
        condition ``swish(time_mlp_out(swish(time_mlp_in(φ(τ)))))`` (B, De)."""
        c = self.config
        tokens = self.action_in_proj(x.to(self.action_in_proj.weight.dtype))  # (B, H, De)
        phi = sincos_time_embedding(tau, c.expert_width, c.time_min_period, c.time_max_period)  # (B, De)
        cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(phi.to(tokens.dtype)))))  # (B, De)
        return tokens, cond

    # ------------------------------------------------------------------ mask
    def sequence_mask(
        self, prefix_valid: torch.Tensor, post_valid: torch.Tensor, n_context: torch.Tensor, n_actions: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> mask (B, L, L) and positions (B, L) of ``[prefix (P) | postfix (M) | actions (n_actions)]``.

        prefix_valid (B, P), post_valid (B, M): real tokens; n_context (B,): the first n_context postfix
        tokens are the subtask block, the rest FAST tokens. Prefix bidirectional; postfix causal, reading
        the prefix; actions bidirectional, reading the prefix and the subtask tokens only; padded keys
        masked out (a padded query reads itself). Positions count real tokens; the actions continue after
        the subtask (FAST tokens take no positions from them).
        """
        B, P = prefix_valid.shape
        M, H = post_valid.shape[1], n_actions
        dev = prefix_valid.device
        blocks = [
            TokenBlock("prefix", P),
            TokenBlock("postfix", M, ("prefix",), causal=True),
            TokenBlock("action", H, ("prefix", "postfix")),
        ]
        base = build_attention_mask(blocks, device=dev)  # (L, L)
        ones = torch.ones(B, H, dtype=torch.bool, device=dev)
        context = post_valid & (torch.arange(M, device=dev)[None] < n_context.to(dev)[:, None])  # (B, M)
        mask = apply_key_padding(base, torch.cat([prefix_valid, post_valid, ones], 1))  # (B, L, L)
        if H:
            actions = apply_key_padding(base, torch.cat([prefix_valid, context, ones], 1))  # (B, L, L)
            mask[:, P + M :] = actions[:, P + M :]
        backbone_pos = self._positions(torch.cat([prefix_valid, post_valid], 1))  # (B, P + M)
        first = prefix_valid.long().sum(1) + n_context.to(dev).long()  # (B,) the first action position
        action_pos = first[:, None] + torch.arange(H, device=dev)[None]  # (B, H)
        return mask, torch.cat([backbone_pos, action_pos], 1)

    # ------------------------------------------------------------------ training sequence
    def subtask_ids(self, text: str) -> list[int]:
        """The prompt-tokenizer ids of a subtask text, cut to ``subtask_max_len`` (one warning per text
        that is cut or has words the vocabulary lacks)."""
        n = self.config.subtask_max_len
        ids, valid = self.tokenizer.encode([text], len(text.encode()) + 1)  # every token of the text
        out = ids[0][valid[0]].tolist()
        unknown = (
            self.tokenizer.unknown_words(text) if isinstance(self.tokenizer, WordPromptTokenizer) else []
        )
        if (len(out) > n or unknown) and text not in self._warned_subtasks:
            if len(self._warned_subtasks) >= MAX_WARNED:
                self._warned_subtasks.clear()
            self._warned_subtasks.add(text)
            log.warning(
                "π0.5 subtask %r: %s%s. Pass the dataset's subtask texts to make_pi05_policy(subtasks=...) "
                "or raise subtask_max_len.",
                text,
                f"{len(out)} tokens, cut to subtask_max_len={n}" if len(out) > n else "fits",
                f"; unknown words {unknown} become <unk>" if unknown else "",
            )
        return out[:n]

    def subtask_labels(self, batch: dict[str, Any], B: int) -> list[str]:
        """``batch["subtask"]`` as B strings ("" = no label); all "" when the batch has none."""
        labels = batch.get(SUBTASK_KEY)
        if labels is None:
            return [""] * B
        labels = [labels] if isinstance(labels, str) else [str(t) for t in labels]
        if len(labels) != B:
            raise ValueError(f"batch['{SUBTASK_KEY}'] has {len(labels)} strings for a batch of {B}")
        labels = [t.strip() for t in labels]
        if any(labels) and not self.config.predict_subtask:
            raise ValueError(
                f"the batch carries '{SUBTASK_KEY}' labels but this π0.5 policy was built with "
                "predict_subtask=False (it would never decode them at inference): build it with "
                "make_pi05_policy(..., subtasks=[the dataset's subtask texts]) or predict_subtask=True"
            )
        return labels

    def postfixes(self, batch: dict[str, Any]) -> tuple[list[list[int]], list[list[int]], list[int]]:
        """Per sample: postfix LM ids, their kinds (``FED`` / ``SUBTASK`` / ``FAST``) and the subtask
        block's length (what the actions read): ``["Subtask: " text ";"] + "Action: " FAST "|"`` (with
        ``OPENPI_PROMPT`` the prefix already ends with "Action: ": ``FAST "|"``)."""
        self._require_fast_tokenizer()
        fast = self.fast_postfixes(batch)
        if self.config.prompt == OPENPI_PROMPT:
            fast = [f[len(self.action_prompt_ids) :] for f in fast]
        labels = self.subtask_labels(batch, len(fast))
        ids, kinds, n_context = [], [], []
        for label, f in zip(labels, fast):
            sub: list[int] = []
            kind: list[int] = []
            if label:
                text = [*self.subtask_ids(label), self.subtask_end_id]
                sub = [*self.subtask_prompt_ids, *text]
                kind = [FED] * len(self.subtask_prompt_ids) + [SUBTASK] * len(text)
            ids.append(sub + f)
            kinds.append(kind + [FAST] * len(f))
            n_context.append(len(sub))
        return ids, kinds, n_context

    def sequence(self, batch: dict[str, Any]) -> Pi05Sequence:
        """The teacher-forced joint sequence of a batch (see :class:`Pi05Sequence`)."""
        posts, kinds, n_ctx = self.postfixes(batch)
        prefix, valid = self.embed_prefix(batch)  # (B, P, D), (B, P)
        B, P = valid.shape
        M = max(len(p) for p in posts)
        y = torch.full((B, M), IGNORE, dtype=torch.long)  # (B, M) postfix ids, right-padded
        k = torch.full((B, M), FED, dtype=torch.long)
        for i, (p, kd) in enumerate(zip(posts, kinds)):
            y[i, : len(p)] = torch.tensor(p, dtype=torch.long)
            k[i, : len(kd)] = torch.tensor(kd, dtype=torch.long)
        y, k = y.to(self.device), k.to(self.device)
        n_context = torch.tensor(n_ctx, dtype=torch.long, device=self.device)  # (B,)
        fed = y[:, :-1].clamp(min=0)  # (B, M-1): the last token is only predicted; padding fed as id 0
        context = torch.cat([prefix, self.backbone.embed(fed).to(prefix.dtype)], dim=1)  # (B, P + M - 1, D)
        mask, positions = self.sequence_mask(valid, (y != IGNORE)[:, :-1], n_context, self.config.chunk)
        return Pi05Sequence(context, mask, positions, y, k, n_context, P)

    # ------------------------------------------------------------------ loss
    def loss_terms(
        self, batch: dict[str, Any], *, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """One joint pass -> loss terms {"fast", "flow"[, "subtask"]} (tensors) and accuracy metrics.

        fast / subtask: next-token cross-entropy over the FAST block / the subtask text and ";",
        averaged per sample, then over the batch (subtask: over the samples that have a label);
        flow: π0's flow-matching MSE over real chunk steps and real action dimensions.
        """
        actions, amask = self._targets(batch)  # (B, H, 32), (B, H, 32)
        seq = self.sequence(batch)
        tau, noise, x_tau = self.flow.interpolate(actions, generator)
        hidden, v = self._joint(x_tau, tau, seq.attention_mask, seq.positions, prefix=seq.context)
        assert hidden is not None
        h = hidden[:, seq.n_prefix - 1 :]  # (B, M, D): position P - 1 + j predicts postfix token j
        trained = seq.kinds != FED  # (B, M)
        logits = self.backbone.compute_logits(h[trained]).float()  # (N, V)
        targets = seq.targets[trained]  # (N,)
        ce, hit = token_cross_entropy(logits, targets, trained)  # (B, M), (B, M)

        def per_sample(kind: int) -> tuple[torch.Tensor, torch.Tensor]:
            m = seq.kinds == kind  # (B, M)
            return per_sample_mean(ce, m), m  # (B,), (B, M)

        fast_ce, fast_m = per_sample(FAST)
        terms = {"fast": fast_ce.mean(), "flow": self.flow.loss(v, actions, noise, amask.float())}
        metrics = {"fast_accuracy": float(hit[fast_m].float().mean())}
        sub_ce, sub_m = per_sample(SUBTASK)
        rows = sub_m.any(1)  # (B,) samples with a subtask label
        if bool(rows.any()):
            terms["subtask"] = sub_ce[rows].mean()
            metrics["subtask_accuracy"] = float(hit[sub_m].float().mean())
        return terms, metrics

    def loss(
        self, batch: dict[str, Any], *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(FAST) [+ CE(subtask)] + flow_loss_weight · flow MSE (one pass through backbone and expert)."""
        terms, metrics = self.loss_terms(batch, generator=generator)
        loss = terms["fast"] + self.config.flow_loss_weight * terms["flow"]
        if "subtask" in terms:
            loss = loss + terms["subtask"]
        out = {"loss": float(loss.detach()), **{f"{k}_loss": float(v.detach()) for k, v in terms.items()}}
        return loss, {**out, **metrics}

    # ------------------------------------------------------------------ inference
    def _sampling_velocity(
        self, batch: dict[str, Any], use_cache: bool
    ) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]:
        """Prefix (+ the greedily decoded subtask) once, then velocity(x, τ) per Euler step.

        With ``use_cache`` the backbone tokens are computed once into a KV cache and each call runs the
        expert on the action tokens only; without it each call recomputes the whole joint sequence
        (and the subtask is decoded without a cache too).
        """
        c = self.config
        prefix, valid = self.embed_prefix(batch)  # (B, P, D), (B, P)
        B, P = valid.shape
        H = c.chunk
        cache: KVCache | None = None
        post = torch.zeros(B, 0, dtype=torch.long, device=self.device)  # (B, M) subtask block ids
        n_context = torch.zeros(B, dtype=torch.long, device=self.device)
        if c.predict_subtask:
            post, n_context, cache = self._decode_subtasks(prefix, valid, use_cache=use_cache, reserve=H)
        M = post.shape[1]
        post_valid = torch.ones(B, M, dtype=torch.bool, device=self.device)  # tokens after ";": only keys
        mask, positions = self.sequence_mask(valid, post_valid, n_context, H)  # (B, L, L), (B, L)
        if use_cache:
            if cache is None:
                cache = self._cache(B, P + H, self.transformer.dtype)
                self.transformer([prefix, None], mask[:, :P, :P], positions[:, :P], cache)
            n_cached = cache.length  # P + M

            def velocity(xt: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
                assert cache is not None
                cache.crop(n_cached)  # overwrite the previous step's action keys/values
                return self._velocity(xt, tau, mask[:, P + M :], positions[:, P + M :], cache=cache)

        else:
            context = torch.cat([prefix, self.backbone.embed(post).to(prefix.dtype)], dim=1)  # (B, P + M, D)

            def velocity(xt: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
                return self._velocity(xt, tau, mask, positions, prefix=context)

        return velocity, B

    def _cache(self, batch: int, length: int, dtype: torch.dtype) -> KVCache:
        cfg = self.backbone.config
        return KVCache(
            cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim, dtype=dtype, device=self.device
        )

    def _decode_subtasks(
        self, prefix: torch.Tensor, valid: torch.Tensor, *, use_cache: bool, reserve: int
    ) -> tuple[torch.Tensor, torch.Tensor, KVCache | None]:
        """Greedy subtask decoding after the prefix: ``"Subtask: "`` is fed, then text until ";" or
        ``subtask_max_len`` text tokens (FAST ids are never chosen).

        -> subtask block ids (B, M) (a finished row repeats ";"), n_context (B,) (the block through its
        first ";", what the actions read), and with ``use_cache`` the KV cache holding prefix + block
        (``reserve`` more slots for the actions). Sets ``last_subtasks``.
        """
        c = self.config
        B, P = valid.shape
        marker = torch.tensor(self.subtask_prompt_ids, dtype=torch.long, device=self.device)
        K, T = marker.numel(), c.subtask_max_len + 1  # the fed marker, the generated text + ";"
        end = self.subtask_end_id
        ids = torch.full((B, K + T), end, dtype=torch.long, device=self.device)  # (B, K + T)
        ids[:, :K] = marker
        mask, positions = self.sequence_mask(
            valid, torch.ones_like(ids, dtype=torch.bool), ids.new_zeros(B), 0
        )
        cache = self._cache(B, P + K + T + reserve, self.transformer.dtype) if use_cache else None

        def run(start: int, stop: int) -> torch.Tensor:
            """The backbone over sequence tokens [start, stop) (the prefix, then ``ids``), reading the
            cached ones before ``start`` -> the last token's output (B, D)."""
            parts = [prefix[:, start:]] if start < P else []
            parts.append(self.backbone.embed(ids[:, max(start - P, 0) : stop - P]).to(prefix.dtype))
            x = torch.cat(parts, 1)  # (B, stop - start, D)
            out, _ = self.transformer([x, None], mask[:, start:stop, :stop], positions[:, start:stop], cache)
            assert out is not None
            return out[:, -1]

        def logits_of(h: torch.Tensor) -> torch.Tensor:
            return self.backbone.compute_logits(h).float()  # (B, V)

        def feed(tok: torch.Tensor, t: int) -> torch.Tensor:
            ids[:, K + t] = tok
            n = P + K + t + 1
            # cached: only the new token (every generated token goes into the cache: the actions read
            # the block); uncached: the whole sequence again
            return run(n - 1, n) if cache is not None else run(0, n)

        h = run(0, P + K)
        vocab = self.backbone.output_weight.shape[0]
        allowed = torch.ones(vocab, dtype=torch.bool, device=self.device)  # (V,)
        allowed[self.fast_first : self.fast_last + 1] = False  # text only
        gen = greedy_loop(
            h, feed, logits_of, T, allowed=allowed, eos_token_id=end, feed_last=cache is not None
        )
        n_gen = gen.tokens.shape[1]
        ids[:, K : K + n_gen] = gen.tokens
        ids = ids[:, : K + n_gen]  # (B, M)
        is_end = ids[:, K:] == end  # (B, M - K)
        has_end = is_end.any(1)
        first_end = is_end.long().argmax(1)  # index of the first ";" (0 when there is none)
        n_context = torch.where(has_end, K + first_end + 1, torch.full_like(first_end, ids.shape[1]))  # (B,)
        self.last_subtasks = [
            decode_text(self.tokenizer, ids[b, K : int(n_context[b]) - int(has_end[b])].tolist())
            for b in range(B)
        ]
        self.decode_stats["subtasks"] += B
        self.decode_stats["subtask_no_end"] += int((~has_end).sum())
        return ids, n_context, cache

    @torch.no_grad()
    def decode_subtasks(self, batch: dict[str, Any], *, use_cache: bool = True) -> list[str]:
        """The subtask text the backbone predicts for each sample (greedy; needs ``predict_subtask``)."""
        if not self.config.predict_subtask:
            raise ValueError("this π0.5 policy was built with predict_subtask=False: it decodes no subtask")
        with self.evaluating():
            prefix, valid = self.embed_prefix(batch)
            self._decode_subtasks(prefix, valid, use_cache=use_cache, reserve=0)
        return list(self.last_subtasks)

    def predict_batch_info(
        self, batch: dict[str, Any], **kwargs: Any
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """`predict_batch` plus, with ``predict_subtask``, each chunk's decoded subtask (``info["subtask"]``)."""
        actions = self.predict_batch(batch, **kwargs)  # (B, H, A); sets last_subtasks
        if not self.config.predict_subtask:
            return actions, [{} for _ in range(actions.shape[0])]
        return actions, [{"subtask": s} for s in self.last_subtasks]
