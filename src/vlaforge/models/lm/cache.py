"""A preallocated key/value cache for :class:`~vlaforge.models.lm.decoder.DecoderLM`.

Why preallocated rather than a list of tensors grown with ``torch.cat``: decoding T tokens after
a prompt of P tokens with ``cat`` copies the whole cache at every step (O(T * (P + T)) memory
traffic per layer) and allocates a new buffer each time, which also defeats CUDA graphs and
``torch.compile``. Here each layer owns one ``(B, KVH, max_len, head_dim)`` buffer for keys and
one for values; a forward pass writes its new keys/values into slots ``[length, length + L)`` and
attends over the view ``[:length + L]``. Only the ``num_kv_heads`` heads are stored (Gemma-2B:
1 KV head, 8x smaller than caching all query heads).

Typical uses:

* autoregressive decoding (RT-2 / OpenVLA action tokens): prompt once, then one token per step;
* a cached prefix reused many times (pi0's flow steps): run the prefix, remember ``n = cache.length``,
  and before each suffix pass call ``cache.crop(n)`` so the suffix slots are overwritten;
* static-shape decoding (what ``torch.compile`` needs, as gpt-fast and HF's ``StaticCache`` do):
  :meth:`KVCache.write_at` writes at slots given as a *tensor* and returns the whole buffers, so every
  decode step has the same shapes and one compiled graph serves them all. The attention then reads all
  ``max_len`` slots under a mask of the filled ones (``DecoderLM.forward(cache_position=...)``).

Keys are stored *after* RoPE, so cached entries never need their positions again.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer key/value buffers ``(B, num_kv_heads, max_len, head_dim)`` plus a fill level.

    The decoder calls :meth:`update` once per layer with the current chunk's keys/values (which
    writes them at ``[length, length + L)`` and returns the filled views) and :meth:`advance` once
    after the last layer. ``length`` therefore counts tokens whose keys are valid in every layer.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        for name, value in (
            ("num_layers", num_layers),
            ("batch_size", batch_size),
            ("max_len", max_len),
            ("num_kv_heads", num_kv_heads),
            ("head_dim", head_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive int, got {value!r}")
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """A cache shaped for ``model`` (a DecoderLM), on the model's device and dtype by default."""
        config = model.config
        p = next(model.parameters())
        return cls(
            config.num_layers,
            batch_size,
            max_len,
            config.num_kv_heads,
            config.head_dim,
            dtype=dtype or p.dtype,
            device=device or p.device,
        )

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v ``(B, KVH, L, hd)`` at ``[length, length + L)``; return keys/values ``[:length + L]``."""
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if k.shape[0] != buf_k.shape[0] or k.shape[1] != buf_k.shape[1] or k.shape[3] != buf_k.shape[3]:
            raise ValueError(
                f"KVCache layer {layer}: new keys {tuple(k.shape)} do not fit the cache "
                f"(B={buf_k.shape[0]}, KVH={buf_k.shape[1]}, head_dim={buf_k.shape[3]})"
            )
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KVCache is full: {self.length} cached + {k.shape[2]} new tokens > max_len {self.max_len}; "
                "allocate a larger cache (KVCache.for_model(model, batch, max_len=...))"
            )
        buf_k[:, :, self.length : end] = k
        buf_v[:, :, self.length : end] = v
        return buf_k[:, :, :end], buf_v[:, :, :end]  # (B, KVH, length + L, hd)

    def write_at(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Static-shape update: write k, v ``(B, KVH, L, hd)`` at slots ``cache_position`` (L,) int64;
        return the whole buffers ``(B, KVH, max_len, hd)``.

        Unlike :meth:`update` this neither reads nor moves ``length``: a Python int would be baked into a
        compiled graph as a constant (one recompilation per decode step), while a slot index held in a
        tensor is data. The caller masks the slots that hold no key yet and tracks the fill level itself
        (``generate_greedy`` does). Slots are not range-checked: that would read the tensor's value
        (a host sync) every step; the caller sizes the cache so that they fit.
        """
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if k.shape[0] != buf_k.shape[0] or k.shape[1] != buf_k.shape[1] or k.shape[3] != buf_k.shape[3]:
            raise ValueError(
                f"KVCache layer {layer}: new keys {tuple(k.shape)} do not fit the cache "
                f"(B={buf_k.shape[0]}, KVH={buf_k.shape[1]}, head_dim={buf_k.shape[3]})"
            )
        if cache_position.shape != (k.shape[2],):
            raise ValueError(
                f"KVCache.write_at: cache_position must be ({k.shape[2]},) slot indices for {k.shape[2]} new "
                f"tokens, got shape {tuple(cache_position.shape)}"
            )
        buf_k.index_copy_(2, cache_position, k.to(buf_k.dtype))
        buf_v.index_copy_(2, cache_position, v.to(buf_v.dtype))
        return buf_k, buf_v  # (B, KVH, max_len, hd)

    def advance(self, n: int) -> None:
        """Mark ``n`` more tokens as cached (called by the decoder after its last layer)."""
        if self.length + n > self.max_len:
            raise ValueError(f"KVCache.advance({n}) past max_len {self.max_len} (length {self.length})")
        self.length += n

    def crop(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens (their slots are overwritten next time)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"KVCache.crop: length must be in [0, {self.length}], got {length}")
        self.length = length

    def reset(self) -> None:
        self.length = 0
