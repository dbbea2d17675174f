"""`LMConfig`: the shape of a Llama- or Gemma-style decoder-only language model.

One dataclass covers both families because they are the same transformer with three switches
(see :mod:`vlaforge.models.lm.decoder`): Gemma scales token embeddings by sqrt(hidden), uses
RMSNorm with a ``(1 + weight)`` gain, and a tanh-GELU gated MLP; Llama uses a plain RMSNorm gain
and a SiLU gated MLP.

:meth:`LMConfig.from_hf_config` reads the ``config.json`` that Hugging Face writes for
``LlamaForCausalLM`` / ``GemmaForCausalLM`` (both the transformers 4.x layout with a top-level
``rope_theta`` and the 5.x layout with ``rope_parameters``), applying the same defaults as the
transformers config classes, so a downloaded checkpoint directory is all we need.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["llama", "gemma"]
FAMILIES: tuple[str, ...] = ("llama", "gemma")
# Activation names as Hugging Face spells them (ACT2FN keys): silu = Llama's SwiGLU gate,
# gelu_pytorch_tanh = Gemma's GeGLU gate (tanh approximation), gelu = exact erf GELU.
HIDDEN_ACTS: tuple[str, ...] = ("silu", "gelu_pytorch_tanh", "gelu")

# Defaults of transformers' LlamaConfig / GemmaConfig for keys a config.json may omit.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    },
    "gemma": {
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "hidden_act": "gelu_pytorch_tanh",
        "head_dim": 256,
    },
}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "gemma": "GemmaForCausalLM"}


@dataclass(frozen=True)
class LMConfig:
    """Shape of a decoder-only LM. Field names are ours; :meth:`from_hf_config` maps HF's.

    head_dim: per-head width; NOT necessarily hidden_size / num_heads (Gemma-7B: 16 x 256 = 4096
        while hidden_size is 3072).
    num_kv_heads: grouped-query attention; 1 = multi-query (Gemma-2B), num_heads = plain MHA (Llama-2-7B).
    max_position: the context length the model was trained for; generation refuses to go past it.
    tie_embeddings: the output projection reuses the token embedding matrix (Gemma); no lm_head weight.
    """

    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position: int = 2048
    tie_embeddings: bool = False
    hidden_act: str = "silu"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"LMConfig.family must be one of {FAMILIES}, got {self.family!r}")
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LMConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"LMConfig: num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"LMConfig.head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        if not self.rope_theta > 0:
            raise ValueError(f"LMConfig.rope_theta must be > 0, got {self.rope_theta}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"LMConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"LMConfig.hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"LMConfig.tie_embeddings must be a bool, got {self.tie_embeddings!r}")

    @property
    def num_parameters(self) -> int:
        """Parameter count implied by the shapes (embeddings counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * self.num_heads * hd * 2 + d * self.num_kv_heads * hd * 2  # q, o + k, v
        layer = attn + 3 * d * f + 2 * d  # + gate/up/down + two norms
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * layer + d + head

    def replace(self, **changes: Any) -> LMConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------- HF config.json

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> LMConfig:
        """Read a Hugging Face ``config.json`` dict of a Llama or Gemma causal LM.

        Raises ValueError naming the key when the file describes something this implementation
        does not compute identically (another model type, RoPE scaling, biased projections).
        """
        if not isinstance(hf, dict):
            raise TypeError(f"from_hf_config expects the parsed config.json dict, got {type(hf).__name__}")
        model_type = hf.get("model_type")
        if model_type not in FAMILIES:
            hint = ""
            if isinstance(hf.get("text_config"), dict):
                hint = (
                    f" This looks like a multimodal config ({model_type!r}); pass its language part: "
                    "LMConfig.from_hf_config(config['text_config'])."
                )
            raise ValueError(
                f"config.json model_type must be 'llama' or 'gemma' (LlamaForCausalLM / GemmaForCausalLM), "
                f"got {model_type!r}.{hint}"
            )
        defaults = _HF_DEFAULTS[model_type]

        def need(key: str) -> Any:
            if key not in hf:
                raise ValueError(f"config.json ({model_type}) is missing required key '{key}'")
            return hf[key]

        for key in ("attention_bias", "mlp_bias"):
            if hf.get(key):
                raise ValueError(
                    f"config.json sets '{key}': true; DecoderLM has bias-free projections as in "
                    "Llama-2 / Gemma and cannot load these weights"
                )
        num_heads = int(need("num_attention_heads"))
        hidden = int(need("hidden_size"))
        head_dim = hf.get("head_dim") or defaults.get("head_dim") or hidden // num_heads
        if model_type == "gemma":
            # transformers 4.38-4.41 read `hidden_activation`; the legacy value "gelu" in Google's
            # releases means the tanh approximation (GemmaConfig rewrites it the same way).
            act = hf.get("hidden_activation") or hf.get("hidden_act") or defaults["hidden_act"]
            act = "gelu_pytorch_tanh" if act in ("gelu", "gelu_tanh") else act
        else:
            act = hf.get("hidden_act") or defaults["hidden_act"]
        return cls(
            family=model_type,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rope_theta=_read_rope_theta(hf, defaults["rope_theta"]),
            rms_norm_eps=float(hf.get("rms_norm_eps", defaults["rms_norm_eps"])),
            max_position=int(hf.get("max_position_embeddings", defaults["max_position_embeddings"])),
            tie_embeddings=bool(hf.get("tie_word_embeddings", defaults["tie_word_embeddings"])),
            hidden_act=act,
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` dict transformers (4.x and 5.x) reads back into Llama/GemmaForCausalLM."""
        return {
            "architectures": [_ARCHITECTURES[self.family]],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position,
            "rms_norm_eps": self.rms_norm_eps,
            # Both spellings: 4.x reads rope_theta, 5.x reads rope_parameters (and accepts either).
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
        }


def _read_rope_theta(hf: dict[str, Any], default: float) -> float:
    """rope_theta from either config layout; refuse RoPE variants we do not implement."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for source, d in (("rope_parameters", params), ("rope_scaling", scaling)):
        if not isinstance(d, dict):
            raise ValueError(f"config.json '{source}' must be a dict or null, got {d!r}")
        rope_type = d.get("rope_type", d.get("type", "default"))
        if rope_type != "default":
            raise ValueError(
                f"config.json {source}.rope_type is {rope_type!r}; only the default RoPE (Llama-2, Gemma) "
                "is implemented. Llama-3.1-style 'llama3' or 'linear'/'dynamic' scaling would silently "
                "change the positions, so the checkpoint is refused."
            )
    theta = params.get("rope_theta", hf.get("rope_theta", default))
    return float(theta)


# ---------------------------------------------------------------------------------------------- presets

LM_PRESETS: dict[str, LMConfig] = {
    # Tiny variants: a forward pass in milliseconds on CPU; used by tests and tiny recipes.
    "llama-tiny": LMConfig(
        family="llama", vocab_size=512, hidden_size=64, intermediate_size=172, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, max_position=1024,
    ),
    "gemma-tiny": LMConfig(
        family="gemma", vocab_size=512, hidden_size=64, intermediate_size=256, num_layers=2,
        num_heads=4, num_kv_heads=1, head_dim=32, max_position=1024, tie_embeddings=True,
        hidden_act="gelu_pytorch_tanh",
    ),
    # Real sizes (shapes only; weights come from a downloaded checkpoint). OpenVLA's backbone:
    "llama2-7b": LMConfig(
        family="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
        num_heads=32, num_kv_heads=32, head_dim=128, rms_norm_eps=1e-5, max_position=4096,
    ),
    # Gemma-2B; PaliGemma-3B's language model (pi0's backbone) is this with vocab_size=257152
    # (1024 location + 128 segmentation tokens added): lm_preset("gemma-2b").replace(vocab_size=257152).
    "gemma-2b": LMConfig(
        family="gemma", vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_layers=18,
        num_heads=8, num_kv_heads=1, head_dim=256, max_position=8192, tie_embeddings=True,
        hidden_act="gelu_pytorch_tanh",
    ),
}  # fmt: skip


def lm_preset(name: str) -> LMConfig:
    """A named :data:`LM_PRESETS` entry."""
    try:
        return LM_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown LM preset {name!r}; known presets: {sorted(LM_PRESETS)}") from None
