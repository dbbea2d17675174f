"""Block-wise attention masks: the ONE place where "who may look at whom" is decided.

Every model of the family is one transformer pass over a sequence of named token blocks
(see docs/architecture.md). A block lists the blocks it may read; inside itself it reads
either everything (bidirectional) or only earlier tokens (causal). From that list we build
one boolean (N, N) matrix, True = the query (row) may attend to the key (column), which is
exactly the convention of ``torch.nn.functional.scaled_dot_product_attention``.

Why masks matter for these models:

* **Octo**: readout tokens read the task and the observations up to their own timestep, but
  *nothing reads the readouts*. So adding/removing an action head (fine-tuning to a new
  action space) never changes the transformer's features for task/observation tokens, and
  the observation stream stays causal in time (obs_t never sees obs_{t+1}).
* **π0**: the prefix (images + language) never reads the state or the actions, so the prefix
  can be computed once and cached (KV cache) while only the action block is recomputed at
  each of the ~10 flow-integration steps.
* **RT-2 / OpenVLA**: a bidirectional prefix followed by causally decoded action tokens
  (:func:`prefix_lm_blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenBlock:
    """A named, contiguous run of ``length`` tokens in the sequence.

    attends_to: names of the *other* blocks this block may read (fully). A block always reads
        itself; listing its own name is allowed and changes nothing.
    causal: inside the block, token i reads tokens j <= i only (autoregressive decoding);
        otherwise every token of the block reads every other token of the block.
    """

    name: str
    length: int
    attends_to: tuple[str, ...] = ()
    causal: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TokenBlock.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.length, int) or self.length < 0:
            raise ValueError(f"TokenBlock '{self.name}': length must be an int >= 0, got {self.length!r}")
        if isinstance(self.attends_to, str):
            raise TypeError(
                f"TokenBlock '{self.name}': attends_to must be a tuple of block names, got the string "
                f"{self.attends_to!r}; write attends_to=({self.attends_to!r},)"
            )
        # Accept lists for convenience but store a tuple so the block stays hashable/frozen.
        object.__setattr__(self, "attends_to", tuple(self.attends_to))


def _check_blocks(blocks: Sequence[TokenBlock]) -> None:
    names = [b.name for b in blocks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate token block names {dupes}; every block needs a unique name")
    known = set(names)
    for b in blocks:
        unknown = [n for n in b.attends_to if n not in known]
        if unknown:
            raise ValueError(
                f"block '{b.name}' attends to unknown block(s) {unknown}; known blocks are {names}"
            )


def block_slices(blocks: Sequence[TokenBlock]) -> dict[str, slice]:
    """Name -> slice of the block's tokens in the concatenated sequence (blocks in the given order)."""
    _check_blocks(blocks)
    out: dict[str, slice] = {}
    start = 0
    for b in blocks:
        out[b.name] = slice(start, start + b.length)
        start += b.length
    return out


def build_attention_mask(
    blocks: Sequence[TokenBlock], device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (N, N) mask, N = sum of block lengths; ``mask[q, k]`` is True when query q may read key k.

    Every non-empty row has at least its own diagonal entry set (a block always reads itself),
    so scaled-dot-product attention never sees a fully masked row (which would produce NaN).
    """
    slices = block_slices(blocks)
    n = sum(b.length for b in blocks)
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)  # (N, N)
    for b in blocks:
        q = slices[b.name]
        for other in b.attends_to:
            if other != b.name:
                mask[q, slices[other]] = True
        if b.causal:
            mask[q, q] = torch.ones(b.length, b.length, dtype=torch.bool, device=device).tril()
        else:
            mask[q, q] = True
    return mask


def apply_key_padding(mask: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Combine a block mask (N, N) with per-sample valid keys (B, N) -> (B, N, N).

    Padding tokens (e.g. the tail of a short instruction, a missing camera) must not be read by
    anyone. The diagonal is kept so a padding *query* still reads itself: its output is
    meaningless but finite, whereas an all-False row would make attention return NaN that
    then leaks into gradients.
    """
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"mask must be (N, N), got {tuple(mask.shape)}")
    if key_valid.dim() != 2 or key_valid.shape[1] != mask.shape[1]:
        raise ValueError(f"key_valid must be (B, {mask.shape[1]}) bool, got {tuple(key_valid.shape)}")
    n = mask.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)  # (N, N)
    return (mask[None] & key_valid.bool()[:, None, :]) | eye[None]  # (B, N, N)


# --------------------------------------------------------------------------------------------------
# Layouts of the model family. Each returns a list of TokenBlocks; build_attention_mask turns it into
# the (N, N) matrix and block_slices tells the caller where each block sits.
# --------------------------------------------------------------------------------------------------


def octo_blocks(n_task: int, n_obs: int, n_readout: int, history: int) -> list[TokenBlock]:
    """Octo's layout: ``task, obs_0 .. obs_{T-1}, readout_0 .. readout_{T-1}`` (T = history).

    * task sees task (language, goal image);
    * obs_t sees task and obs_s for s <= t (causal in time, full inside a step);
    * readout_t sees task, obs_s for s <= t, and itself;
    * nobody sees a readout: readouts are pure "read heads", so the features of task and
      observation tokens do not depend on which action head is attached.

    Readouts come last so ``block_slices`` gives the head one contiguous run per timestep.
    """
    if history < 1:
        raise ValueError(f"octo_blocks: history must be >= 1, got {history}")
    blocks = [TokenBlock("task", n_task)]
    for t in range(history):
        blocks.append(TokenBlock(f"obs_{t}", n_obs, ("task", *(f"obs_{s}" for s in range(t)))))
    for t in range(history):
        blocks.append(TokenBlock(f"readout_{t}", n_readout, ("task", *(f"obs_{s}" for s in range(t + 1)))))
    return blocks


def pi0_blocks(n_prefix: int, n_state: int, n_action: int) -> list[TokenBlock]:
    """π0's layout: ``prefix`` (images + language), ``state``, ``action`` (noisy actions + flow time).

    Full attention inside each block, causal between blocks: prefix sees prefix; state sees
    prefix + state; actions see all three. The prefix never reads later blocks, which is what
    makes its keys/values cacheable across the flow-integration steps.
    """
    return [
        TokenBlock("prefix", n_prefix),
        TokenBlock("state", n_state, ("prefix",)),
        TokenBlock("action", n_action, ("prefix", "state")),
    ]


def prefix_lm_blocks(n_prefix: int, n_action: int, action_causal: bool = True) -> list[TokenBlock]:
    """``prefix`` (bidirectional) then ``action`` reading the prefix.

    action_causal=True: RT-2 / OpenVLA / π0-FAST discrete action tokens decoded one by one.
    action_causal=False: OpenVLA-OFT placeholder tokens decoded in one bidirectional pass.
    """
    return [TokenBlock("prefix", n_prefix), TokenBlock("action", n_action, ("prefix",), causal=action_causal)]
