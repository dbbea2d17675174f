"""LeRobot 0.3.2's own π0 (``lerobot.policies.pi0``) built offline at a CPU size, for the parity tests.

LeRobot 0.3.2 fixes two things in code that no ``PI0Config`` field changes; both are substituted here
without touching a line of its modeling code:

* **sizes**: ``PI0FlowMatching.__init__`` builds ``PaliGemmaWithExpertConfig(...)`` with no sub-configs,
  whose defaults are PaliGemma-3B + the 300M expert (passing ``paligemma_config`` dicts is broken in
  0.3.2: its ``__init__`` reads ``self.paligemma_config`` before setting it). The name
  ``PaliGemmaWithExpertConfig`` in ``modeling_pi0`` is replaced by a function that builds LeRobot's
  config and then swaps in tiny transformers ``PaliGemmaConfig`` / ``GemmaConfig`` objects;
* **precision**: ``PaliGemmaWithExpertModel.to_bfloat16_like_physical_intelligence`` and the forward
  passes cast to ``torch.bfloat16`` unconditionally. The two modules' ``torch`` name is replaced by a
  proxy of the torch module whose ``bfloat16`` is ``float32``, so the same code runs in fp32 (the issue's
  "fp32" comparison; in bf16 the rounding alone is ~1e-2).
* the tokenizer: ``PI0Policy.__init__`` calls ``AutoTokenizer.from_pretrained("google/paligemma-3b-pt-224")``
  (a download); it gets a local ``PreTrainedTokenizerFast`` instead, which adds ``<bos>`` like PaliGemma's.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from pathlib import Path

import torch

from vlaforge.convert.pi0 import GemmaVariant

VOCAB_WORDS = "\n put the black bowl on plate open middle drawer of cabinet pick up red cube".split(" ")
VLM = GemmaVariant(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16)
EXPERT = GemmaVariant(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=16)
SIGLIP = {"width": 48, "layers": 2, "heads": 2, "mlp": 96, "patch": 8}
IMG = 32  # SigLIP input size (LeRobot's resize_imgs_with_padding)


def write_tokenizer(root: Path) -> Path:
    """A PaliGemma-like tokenizer.json: <pad> 0, <eos> 1, <bos> 2 (added in front by the post-processor,
    as PaliGemma's tokenizer does), '\\n' its own token, words split on spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = [w for w in dict.fromkeys(VOCAB_WORDS) if w]
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="removed"), pre_tokenizers.Split("\n", behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    return root


def vocab_size() -> int:
    return 4 + len([w for w in dict.fromkeys(VOCAB_WORDS) if w])


class _Float32Torch(types.ModuleType):
    """The torch module, except that ``bfloat16`` names ``float32``."""

    bfloat16 = torch.float32

    def __getattr__(self, name: str):
        return getattr(torch, name)


@contextlib.contextmanager
def lerobot_pi0_tiny_fp32(tokenizer_dir: Path) -> Iterator[types.ModuleType]:
    """Patch LeRobot 0.3.2's π0 modules as described above; yields ``modeling_pi0``."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi0 import paligemma_with_expert as pwe
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto import CONFIG_MAPPING

    original = pwe.PaliGemmaWithExpertConfig

    def tiny_config(**kwargs):
        cfg = original(**kwargs)  # LeRobot's own config object (its defaults are the 3B sizes) ...
        v = vocab_size()
        cfg.paligemma_config = CONFIG_MAPPING["paligemma"](  # ... with tiny sub-configs swapped in
            bos_token_id=2,
            eos_token_id=1,
            pad_token_id=0,
            hidden_size=VLM.width,
            image_token_index=v,
            projection_dim=VLM.width,
            text_config={
                "model_type": "gemma",
                "hidden_act": "gelu_pytorch_tanh",
                "hidden_activation": "gelu_pytorch_tanh",
                "hidden_size": VLM.width,
                "intermediate_size": VLM.mlp_dim,
                "num_attention_heads": VLM.num_heads,
                "num_hidden_layers": VLM.depth,
                "num_key_value_heads": VLM.num_kv_heads,
                "head_dim": VLM.head_dim,
                "vocab_size": v,
                "rms_norm_eps": 1e-6,
            },
            vision_config={
                "model_type": "siglip_vision_model",
                "hidden_size": SIGLIP["width"],
                "intermediate_size": SIGLIP["mlp"],
                "num_attention_heads": SIGLIP["heads"],
                "num_hidden_layers": SIGLIP["layers"],
                "patch_size": SIGLIP["patch"],
                "image_size": IMG,
                "num_image_tokens": (IMG // SIGLIP["patch"]) ** 2,
                "projection_dim": VLM.width,
                "vision_use_head": False,
            },
        )
        cfg.paligemma_config.vocab_size = v
        cfg.gemma_expert_config = CONFIG_MAPPING["gemma"](
            hidden_act="gelu_pytorch_tanh",
            hidden_activation="gelu_pytorch_tanh",
            hidden_size=EXPERT.width,
            intermediate_size=EXPERT.mlp_dim,
            num_attention_heads=EXPERT.num_heads,
            num_hidden_layers=EXPERT.depth,
            num_key_value_heads=EXPERT.num_kv_heads,
            head_dim=EXPERT.head_dim,
            vocab_size=v,
            rms_norm_eps=1e-6,
            max_position_embeddings=8192,
        )
        return cfg

    def local_tokenizer(*_args, **_kwargs):
        return PreTrainedTokenizerFast(
            tokenizer_file=str(tokenizer_dir / "tokenizer.json"),
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
        )

    fp32 = _Float32Torch("torch")
    saved = (
        modeling_pi0.torch,
        pwe.torch,
        modeling_pi0.PaliGemmaWithExpertConfig,
        modeling_pi0.AutoTokenizer,
    )
    try:
        modeling_pi0.torch = fp32
        pwe.torch = fp32
        modeling_pi0.PaliGemmaWithExpertConfig = tiny_config
        modeling_pi0.AutoTokenizer = types.SimpleNamespace(from_pretrained=local_tokenizer)
        yield modeling_pi0
    finally:
        modeling_pi0.torch, pwe.torch, modeling_pi0.PaliGemmaWithExpertConfig, modeling_pi0.AutoTokenizer = (
            saved
        )
