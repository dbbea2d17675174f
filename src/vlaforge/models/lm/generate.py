"""Greedy decoding for :class:`DecoderLM`, with a KV cache and RT-2-style constrained vocabularies.

The prompt may be token ids or embeddings (image tokens projected into the LM width followed by
text embeddings, as RT-2 / OpenVLA feed it) with any boolean attention mask over the prompt. The
rule for generated tokens is the one a causal LM follows: **each generated token reads exactly the
prompt keys that the last prompt token reads, plus every generated token up to itself.** With a
left-padded prompt that means "all real prompt tokens"; with a prefix-LM prompt mask it means the
whole bidirectional prefix. Both the cached and the uncached paths build their masks from that one
rule (:func:`extend_prompt_mask`), which is why they agree token for token.

RT-2 constrains decoding to the action tokens for robot prompts: ``allowed_token_ids`` sets the
logits of every other id to -inf before the arg-max (the returned logits are the raw ones).

Three ways to run the same decoding, all producing the same tokens:

* ``use_cache=False``: the whole sequence recomputed for every token (the reference);
* ``use_cache=True`` (default): the prompt once into a :class:`KVCache`, then one token per step
  attending over the growing cache view ``[:length]``;
* the static-shape step (``static_cache=True``, or by default once ``model.compile_decoding()`` is on):
  each step writes its key/value at a cache slot given as a tensor and attends over the whole buffer
  under the mask row of the filled slots, so every step has the same shapes and one ``torch.compile``d
  graph serves them all (gpt-fast / HF ``StaticCache``). Run eagerly it equals the growing cache to
  float rounding (the softmax sums a few more exact zeros).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from vlaforge.models.lm.cache import KVCache
from vlaforge.models.lm.decoder import DecoderLM, DecoderOutput, causal_mask, self_mask

State = TypeVar("State")  # what a decoder returns per step (`greedy_loop`)


@dataclass
class GreedyOutput:
    """tokens: (B, T) int64 generated ids (after an EOS, a finished row repeats eos_token_id);
    logits: (B, T, V) the model's raw logits at each step (before the allowed-token constraint)."""

    tokens: torch.Tensor
    logits: torch.Tensor


def prompt_mask(attention_mask: torch.Tensor | None, b: int, n: int, device: torch.device) -> torch.Tensor:
    """The prompt's full (B, Lp, Lp) bool mask from None (causal), key padding (B, Lp) or (B|1, Lp, Lp)."""
    if attention_mask is None:
        return causal_mask(n, 0, device)[None].expand(b, n, n)
    if attention_mask.dtype != torch.bool:
        raise TypeError(f"attention_mask must be torch.bool, got {attention_mask.dtype}")
    attention_mask = attention_mask.to(device)
    if attention_mask.dim() == 2:
        if attention_mask.shape != (b, n):
            raise ValueError(f"key padding mask must be (B={b}, Lp={n}), got {tuple(attention_mask.shape)}")
        if not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "generation needs LEFT padding: the last prompt token of every row must be real "
                "(attention_mask[:, -1] all True); right-padded rows would continue after a pad token"
            )
        return (causal_mask(n, 0, device)[None] & attention_mask[:, None, :]) | self_mask(n, 0, device)[None]
    if attention_mask.dim() == 3 and attention_mask.shape[1:] == (n, n) and attention_mask.shape[0] in (1, b):
        return attention_mask.expand(b, n, n)
    raise ValueError(
        f"prompt attention_mask must be (B={b}, Lp={n}) padding or (B or 1, {n}, {n}), got {tuple(attention_mask.shape)}"
    )


def extend_prompt_mask(prompt: torch.Tensor, n_new: int) -> torch.Tensor:
    """(B, Lp, Lp) prompt mask -> (B, Lp + n_new, Lp + n_new) with ``n_new`` generated tokens appended.

    Prompt rows never read generated tokens; a generated token reads what the last prompt token
    reads, and the generated tokens up to itself (causal).
    """
    b, n, _ = prompt.shape
    total = n + n_new
    mask = torch.zeros(b, total, total, dtype=torch.bool, device=prompt.device)  # (B, N, N)
    mask[:, :n, :n] = prompt
    if n_new:
        mask[:, n:, :n] = prompt[:, -1:, :]  # (B, n_new, Lp): the last prompt row's keys
        mask[:, n:, n:] = causal_mask(n_new, 0, prompt.device)
    return mask


def _allowed_mask(allowed: Sequence[int] | torch.Tensor, vocab: int, device: torch.device) -> torch.Tensor:
    ids = torch.as_tensor(allowed, dtype=torch.long, device=device).flatten()
    if ids.numel() == 0:
        raise ValueError("allowed_token_ids is empty; pass at least one token id")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(
            f"allowed_token_ids must lie in [0, {vocab}), got min {int(ids.min())} max {int(ids.max())}"
        )
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    mask[ids] = True
    return mask  # (V,)


@torch.no_grad()
def generate_greedy(
    model: DecoderLM,
    input_ids: torch.Tensor | None = None,
    *,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    max_new_tokens: int,
    allowed_token_ids: Sequence[int] | torch.Tensor | None = None,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    static_cache: bool | None = None,
) -> GreedyOutput:
    """Arg-max decoding of up to ``max_new_tokens`` tokens after a prompt.

    input_ids (B, Lp) or inputs_embeds (B, Lp, D): the prompt (embeddings are used as given; build
        text parts with ``model.embed(ids)`` so Gemma's scale is applied).
    attention_mask: None (causal), (B, Lp) bool left-padding mask, or (B|1, Lp, Lp) bool prompt mask.
    position_ids (B|1, Lp): prompt positions (default: as DecoderLM.forward); generated token t sits
        at ``last prompt position + 1 + t``.
    allowed_token_ids: if given, only these ids can be emitted (include eos_token_id if it may end).
    use_cache=False recomputes the whole sequence every step (the reference the cache is tested against).
    static_cache: decode through the static-shape step (see the module docstring); None (default) =
        whenever ``model.compile_decoding()`` is on, which also makes the step compiled. True without
        compile_decoding runs the static step eagerly (how it is tested against the growing cache).
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("generate_greedy: pass exactly one of input_ids or inputs_embeds")
    if static_cache and not use_cache:
        raise ValueError("generate_greedy: static_cache=True is a KV-cache path; it needs use_cache=True")
    static = use_cache and (model.decode_compiled if static_cache is None else bool(static_cache))
    prompt = model.embed(input_ids) if input_ids is not None else inputs_embeds
    assert prompt is not None
    b, n_prompt, _ = prompt.shape  # (B, Lp, D)
    device = prompt.device
    cfg = model.config

    if position_ids is None:
        if attention_mask is not None and attention_mask.dim() == 2:
            position_ids = (attention_mask.to(device).long().cumsum(-1) - 1).clamp(min=0)  # (B, Lp)
        else:
            position_ids = torch.arange(n_prompt, device=device)[None]  # (1, Lp)
    position_ids = position_ids.to(device).expand(b, n_prompt)  # (B, Lp)
    last_pos = position_ids[:, -1]  # (B,)
    if int(last_pos.max()) + max_new_tokens > cfg.max_position:
        raise ValueError(
            f"prompt positions up to {int(last_pos.max())} + {max_new_tokens} new tokens exceed the model's "
            f"max_position {cfg.max_position}"
        )
    # Full mask over prompt + the generated tokens that are fed back (the last one never is).
    full_mask = extend_prompt_mask(prompt_mask(attention_mask, b, n_prompt, device), max_new_tokens - 1)
    allowed = (
        _allowed_mask(allowed_token_ids, cfg.vocab_size, device) if allowed_token_ids is not None else None
    )

    cache = KVCache.for_model(model, b, n_prompt + max_new_tokens - 1) if use_cache else None
    out = model(
        inputs_embeds=prompt,
        attention_mask=full_mask[:, :n_prompt, :n_prompt],
        position_ids=position_ids,
        kv_cache=cache,
        logits="last",
    )
    # Static path: the next slot to write, as a tensor, so no step bakes its index into a graph.
    cache_position = torch.full((1,), n_prompt, dtype=torch.long, device=device) if static else None
    embeds = prompt  # (B, Lp + t, D) for the uncached path
    positions = position_ids

    def feed(tok: torch.Tensor, t: int) -> DecoderOutput:
        """Generated token t (B,) into the model -> its output (the next step's logits)."""
        nonlocal embeds, positions
        new_pos = (last_pos + 1 + t)[:, None]  # (B, 1)
        n_total = n_prompt + t + 1
        if cache is not None and cache_position is not None:
            out = model(
                input_ids=tok[:, None],  # (B, 1): embedded inside the (compiled) step
                attention_mask=full_mask[:, n_total - 1 : n_total],  # (B, 1, max_len): the filled slots
                position_ids=new_pos,
                kv_cache=cache,
                cache_position=cache_position,
                logits="last",
            )
            cache_position.add_(1)  # in place: the next step's slot
            cache.advance(1)  # bookkeeping only; the static step never reads length
        elif cache is not None:
            out = model(
                inputs_embeds=model.embed(tok[:, None]),  # (B, 1, D)
                attention_mask=full_mask[:, n_total - 1 : n_total, :n_total],  # (B, 1, cached + 1)
                position_ids=new_pos,
                kv_cache=cache,
                logits="last",
            )
        else:
            embeds = torch.cat([embeds, model.embed(tok[:, None])], dim=1)  # (B, n_total, D)
            positions = torch.cat([positions, new_pos], dim=1)  # (B, n_total)
            out = model(
                inputs_embeds=embeds,
                attention_mask=full_mask[:, :n_total, :n_total],
                position_ids=positions,
                logits="last",
            )
        return out

    def last_logits(o: DecoderOutput) -> torch.Tensor:
        assert o.logits is not None
        return o.logits[:, -1].float()  # (B, V)

    return greedy_loop(out, feed, last_logits, max_new_tokens, allowed=allowed, eos_token_id=eos_token_id)


def greedy_loop(
    first: State,
    feed: Callable[[torch.Tensor, int], State],
    logits_of: Callable[[State], torch.Tensor],
    max_new_tokens: int,
    *,
    allowed: torch.Tensor | None = None,
    eos_token_id: int | None = None,
    feed_last: bool = False,
) -> GreedyOutput:
    """The arg-max loop every greedy decoder here runs (`generate_greedy`; π0.5's subtask decoding,
    whose model is the joint backbone + expert transformer): pick, end rows at EOS, feed the token back.

    first: the model's output after the prompt; feed(tok (B,), t) runs generated token t through the
    model and returns its output; logits_of(output) -> the next token's float logits (B, V).
    allowed: (V,) bool, the ids that may be emitted (None = all); the returned logits are the raw ones.
    A row that emitted eos_token_id repeats it.
    Stops after max_new_tokens or when every row has ended; the last token is fed too with
    ``feed_last`` (a cache that later tokens read must hold it).
    """
    state = first
    finished: torch.Tensor | None = None
    tokens: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        step_logits = logits_of(state)  # (B, V)
        if finished is None:
            finished = torch.zeros(step_logits.shape[0], dtype=torch.bool, device=step_logits.device)
        scores = step_logits if allowed is None else step_logits.masked_fill(~allowed, float("-inf"))
        tok = scores.argmax(dim=-1)  # (B,)
        if eos_token_id is not None:
            tok = torch.where(finished, torch.full_like(tok, eos_token_id), tok)
            finished = finished | (tok == eos_token_id)
        tokens.append(tok)
        logits.append(step_logits)
        done = t == max_new_tokens - 1 or (eos_token_id is not None and bool(finished.all()))
        if done and not feed_last:
            break
        state = feed(tok, t)
        if done:
            break
    return GreedyOutput(torch.stack(tokens, dim=1), torch.stack(logits, dim=1))
