"""LeRobot 0.6.1's own π0.5 (``lerobot.policies.pi05``) built offline at a CPU size, for the parity tests.

LeRobot 0.6.1 runs π0.5 on stock transformers (its adaRMS Gemma lives in ``lerobot/policies/pi_gemma.py``)
and computes in fp32 when ``PI05Config.dtype = "float32"``, so unlike the 0.3.2 π0 helper nothing has to
be cast. Three things are fixed in its code that no ``PI05Config`` field changes; each is substituted
here by replacing a name in ``modeling_pi05`` / ``tokenizer_processor``, without touching a line of
LeRobot's code:

* **Gemma sizes**: ``get_gemma_config(variant)`` knows only the released ``gemma_2b`` / ``gemma_300m``
  shapes; it is replaced by a table of tiny shapes under the same names (``VLM`` / ``EXPERT``);
* **SigLIP and vocabulary sizes**: ``PaliGemmaWithExpertModel`` builds ``CONFIG_MAPPING["paligemma"]()``
  (SigLIP So400m, 257152 tokens) and sets its 2048-wide projection; the two classes it then builds
  (``PaliGemmaForConditionalGenerationWithPiGemma``, ``PiGemmaForCausalLM``) are wrapped by functions that
  put the tiny SigLIP (``SIGLIP``), the projection to ``VLM.width`` and the tiny vocabulary in that
  config object first and then call LeRobot's classes;
* **tokenizer**: the pre-processor's ``TokenizerProcessorStep`` calls
  ``AutoTokenizer.from_pretrained("google/paligemma-3b-pt-224")`` (a download); it gets a local word-level
  ``PreTrainedTokenizerFast`` with PaliGemma's special ids (pad 0, eos 1, bos 2 prepended as PaliGemma's
  tokenizer does) whose words cover π0.5's prompt ``"Task: …, State: 0 … 255;\\nAction: "``.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from vlaforge.convert.pi0 import GemmaVariant

# π0.5's prompt: words of the tasks, the prompt's own words and punctuation, the state bins -1..256.
TASK_WORDS = "put the black bowl on plate open middle drawer of cabinet pick up red cube".split()
PROMPT_WORDS = ["Task", "State", "Action", ":", ",", ";", "\n"]
BINS = [str(i) for i in range(-1, 257)]  # -1 / 256: openpi's and LeRobot's bins of values outside [-1, 1]
# LeRobot 0.6.1's joint attention reshapes to ``1 * 8 * head_dim`` (8 heads, hard-coded): keep 8 heads.
VLM = GemmaVariant(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)
EXPERT = GemmaVariant(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16)
SIGLIP = {"width": 48, "layers": 2, "heads": 2, "mlp": 96, "patch": 8}
IMG = 32  # SigLIP input size (PI05Config.image_resolution)


# vlaforge's converted π0.5 keeps openpi's FAST-token ids (1024 ids below the last 128 of the vocabulary):
# the tiny vocabulary is filled up with unused words to hold them.
VOCAB = 1280


def vocabulary() -> list[str]:
    words = ["<pad>", "<eos>", "<bos>", "<unk>", *dict.fromkeys(TASK_WORDS + PROMPT_WORDS + BINS)]
    return words + [f"<unused{i}>" for i in range(VOCAB - len(words))]


def vocab_size() -> int:
    return len(vocabulary())


def write_tokenizer(root: Path) -> Path:
    """A PaliGemma-like tokenizer.json: <pad> 0, <eos> 1, <bos> 2 (added in front by the post-processor),
    words split on spaces; '\\n', ':', ',' and ';' are tokens of their own."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="removed")]
        + [pre_tokenizers.Split(p, behavior="isolated") for p in ("\n", ":", ",", ";")]
    )
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    return root


@contextlib.contextmanager
def lerobot_pi05_tiny(tokenizer_dir: Path) -> Iterator[types.ModuleType]:
    """Substitute LeRobot 0.6.1's sizes and tokenizer as described above; yields ``modeling_pi05``."""
    from lerobot.policies.pi05 import modeling_pi05
    from lerobot.processor import tokenizer_processor
    from transformers import PreTrainedTokenizerFast

    v = vocab_size()
    real_paligemma = modeling_pi05.PaliGemmaForConditionalGenerationWithPiGemma
    real_expert = modeling_pi05.PiGemmaForCausalLM
    shapes = {"gemma_2b": VLM, "gemma_300m": EXPERT}

    def tiny_gemma_config(variant: str):
        s = shapes[variant]
        return modeling_pi05.GemmaConfig(s.width, s.depth, s.mlp_dim, s.num_heads, s.num_kv_heads, s.head_dim)

    def tiny_paligemma(config):
        vc = config.vision_config  # LeRobot's own config object, sizes made tiny before the model is built
        vc.hidden_size, vc.intermediate_size = SIGLIP["width"], SIGLIP["mlp"]
        vc.num_hidden_layers, vc.num_attention_heads = SIGLIP["layers"], SIGLIP["heads"]
        vc.patch_size, vc.projection_dim = SIGLIP["patch"], VLM.width
        assert vc.image_size == IMG, vc.image_size  # set by LeRobot from PI05Config.image_resolution
        config.text_config.vocab_size = v
        config._vocab_size = v  # noqa: SLF001 (LeRobot sets the same private field to 257152)
        config.image_token_index = v
        config.text_config.num_image_tokens = (IMG // SIGLIP["patch"]) ** 2
        return real_paligemma(config=config)

    def tiny_expert(config):
        config.vocab_size = v
        return real_expert(config=config)

    def local_tokenizer(*_args, **_kwargs):
        return PreTrainedTokenizerFast(
            tokenizer_file=str(tokenizer_dir / "tokenizer.json"),
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
        )

    with (
        mock.patch.multiple(
            modeling_pi05,
            get_gemma_config=tiny_gemma_config,
            PaliGemmaForConditionalGenerationWithPiGemma=tiny_paligemma,
            PiGemmaForCausalLM=tiny_expert,
        ),
        mock.patch.object(
            tokenizer_processor, "AutoTokenizer", types.SimpleNamespace(from_pretrained=local_tokenizer)
        ),
    ):
        yield modeling_pi05
