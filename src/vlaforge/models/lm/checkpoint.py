"""Load Hugging Face Llama / Gemma checkpoint directories into :class:`DecoderLM`, strictly; save back.

A downloaded ``meta-llama/Llama-2-7b-hf`` or ``google/gemma-2b`` directory holds ``config.json`` and
either ``model.safetensors`` or ``model.safetensors.index.json`` + shards. Only safetensors are
read (pickled ``pytorch_model.bin`` files are refused; convert them once with transformers).

Key names (HF -> ours)::

    model.embed_tokens.weight                     embed_tokens.weight
    model.layers.N.input_layernorm.weight         layers.N.attn_norm.weight
    model.layers.N.self_attn.{q,k,v,o}_proj.weight  layers.N.attn.{q,k,v,o}_proj.weight
    model.layers.N.post_attention_layernorm.weight  layers.N.mlp_norm.weight
    model.layers.N.mlp.{gate,up,down}_proj.weight   layers.N.mlp.{gate,up,down}_proj.weight
    model.norm.weight                             final_norm.weight
    lm_head.weight                                lm_head.weight (untied models only)

The check is strict, nanoGPT-style: every expected weight must be present with the right shape and
nothing else may be in the files; all problems are reported together in one
:class:`LMCheckpointError`, with the file each key came from. Two exceptions, both harmless:
``*.rotary_emb.inv_freq`` buffers written by old transformers versions (recomputed here), and an
``lm_head.weight`` in a tied model's files when it equals the embedding matrix.

``key_prefix`` loads the language model out of a larger checkpoint (e.g. ``"language_model."`` in
an OpenVLA / PaliGemma file): keys outside the prefix belong to other modules and are skipped, keys
inside it are checked strictly.

Large models are built on the meta device and the file tensors are assigned, so loading a 7B model
neither runs a random init nor holds two copies of the weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vlaforge.errors import CheckpointError
from vlaforge.models.lm.config import LMConfig
from vlaforge.models.lm.decoder import DecoderLM

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Buffers some transformers versions saved although they are derived from the config.
IGNORED_KEY_SUFFIXES = ("rotary_emb.inv_freq",)
_MAX_LISTED = 25  # per category in an error message

_TOP_LEVEL = {
    "model.embed_tokens.weight": "embed_tokens.weight",
    "model.norm.weight": "final_norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_PARTS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn.q_proj.weight",
    "self_attn.k_proj.weight": "attn.k_proj.weight",
    "self_attn.v_proj.weight": "attn.v_proj.weight",
    "self_attn.o_proj.weight": "attn.o_proj.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_OUR_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_TOP_LEVEL_INV = {v: k for k, v in _TOP_LEVEL.items()}
_LAYER_PARTS_INV = {v: k for k, v in _LAYER_PARTS.items()}


class LMCheckpointError(CheckpointError):
    """A language-model checkpoint does not match the model: lists every missing, unexpected and
    wrongly shaped key (``missing``, ``unexpected``, ``mismatched`` hold them for programs)."""

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[str] | None = None,
    ):
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


def read_json(file: Path, what: str, error: type[CheckpointError] = CheckpointError) -> Any:
    """``file`` parsed as JSON; a missing or malformed file is an ``error`` naming it (``what``: the fix)."""
    if not file.is_file():
        raise error(f"{file}: not found; {what}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{file}: not valid JSON ({e})") from e


def hf_to_ours(name: str) -> str | None:
    """HF parameter name -> DecoderLM state_dict name, or None when it is not a decoder weight."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"layers.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}"
    return None


def layer_index(name: str) -> int:
    """The decoder layer of a DecoderLM state_dict name (``layers.3.attn.q_proj.weight`` -> 3); -1 for the
    embeddings, the final norm and the output head."""
    m = _OUR_LAYER.match(name)
    return int(m.group(1)) if m else -1


def ours_to_hf(name: str) -> str:
    """DecoderLM state_dict name -> HF parameter name."""
    if name in _TOP_LEVEL_INV:
        return _TOP_LEVEL_INV[name]
    m = _OUR_LAYER.match(name)
    if m and m.group(2) in _LAYER_PARTS_INV:
        return f"model.layers.{m.group(1)}.{_LAYER_PARTS_INV[m.group(2)]}"
    raise KeyError(f"no Hugging Face name for DecoderLM parameter {name!r}")


# ---------------------------------------------------------------------------------------------- reading


def read_lm_config(path: str | Path) -> LMConfig:
    """LMConfig from ``<path>/config.json`` (a Llama / Gemma causal-LM config)."""
    file = Path(path) / CONFIG_FILE
    raw = read_json(file, f"a Hugging Face checkpoint directory needs {CONFIG_FILE}", LMCheckpointError)
    try:
        return LMConfig.from_hf_config(raw)
    except (ValueError, TypeError) as e:
        raise LMCheckpointError(f"{file}: {e}") from e


def weight_files(path: str | Path) -> dict[str, list[str]]:
    """Safetensors file -> the tensor names it holds, for a single-file or sharded checkpoint.

    For a sharded checkpoint, the index must name existing shards and every key it lists must be in
    the shard it points to.
    """
    root = Path(path)
    if not root.is_dir():
        raise LMCheckpointError(f"{root}: not a directory (expected a Hugging Face checkpoint directory)")
    index, single = root / INDEX_FILE, root / SAFETENSORS_FILE
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LMCheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from e
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if not (root / s).is_file()]
        if absent:
            raise LMCheckpointError(f"{index}: lists shard file(s) that do not exist in {root}: {absent}")
        files = {str(root / s): _keys_of(root / s) for s in shards}
        wrong = [k for k, s in weight_map.items() if k not in set(files[str(root / s)])]
        if wrong:
            raise LMCheckpointError(
                f"{index}: {len(wrong)} key(s) are not in the shard the index names: {_listing(wrong)}"
            )
        return files
    if single.is_file():
        return {str(single): _keys_of(single)}
    present = sorted(p.name for p in root.iterdir())
    hint = (
        " Only safetensors are read (no pickle): convert once with transformers "
        "(from_pretrained(...).save_pretrained(dir, safe_serialization=True))."
        if any(n.endswith(".bin") or n.endswith(".pt") for n in present)
        else ""
    )
    raise LMCheckpointError(
        f"{root}: no {SAFETENSORS_FILE} or {INDEX_FILE}; the directory holds {present}.{hint}"
    )


def _keys_of(file: Path) -> list[str]:
    try:
        with safe_open(str(file), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise LMCheckpointError(f"{file}: cannot read safetensors header ({e})") from e


def _listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "\n    " + "\n    ".join(shown) + more


def load_hf_checkpoint(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    key_prefix: str = "",
    config: LMConfig | dict[str, Any] | None = None,
    num_layers: int | None = None,
) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of a local Hugging Face checkpoint directory (eval mode).

    dtype: weights are cast to it (use torch.bfloat16 for 7B models on a GPU: 13.5 GB instead of 27).
    key_prefix: HF names are read as ``key_prefix + name`` (e.g. "language_model." for a VLM file);
        keys outside the prefix are ignored.
    config: overrides ``config.json`` (an LMConfig, or an HF config dict such as a VLM's text_config).
    num_layers: keep only the first ``num_layers`` decoder layers (SmolVLA keeps the first half of
        SmolVLM's LM); the weights of the later layers are not read, and the model's config says
        ``num_layers``. The embeddings, the final norm and the output head are kept. None: all layers.
    """
    root = Path(path)
    if not root.is_dir():
        raise LMCheckpointError(
            f"{root}: not a directory; pass a local Hugging Face checkpoint directory (config.json + safetensors)"
        )
    if isinstance(config, dict):
        cfg = LMConfig.from_hf_config(config)
    elif isinstance(config, LMConfig):
        cfg = config
    else:
        cfg = read_lm_config(root)
    full_layers = cfg.num_layers  # layers full_layers.. would be unexpected keys
    if num_layers is not None:
        if (
            isinstance(num_layers, bool)
            or not isinstance(num_layers, int)
            or not 1 <= num_layers <= full_layers
        ):
            raise ValueError(
                f"{root}: num_layers={num_layers!r}: keep between 1 and the model's {full_layers} layers"
            )
        cfg = cfg.replace(num_layers=num_layers)
    dropped_from = cfg.num_layers  # layers dropped_from..full_layers-1 are in the files but not read
    files = weight_files(root)

    with torch.device("meta"):
        model = DecoderLM(cfg)  # shapes only: no memory, no random init
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    sources: dict[str, tuple[str, str]] = {}  # our name -> (file, HF key)
    tied_head: tuple[str, str] | None = None
    unexpected: list[str] = []
    mismatched: list[str] = []
    for file, keys in files.items():
        with safe_open(file, framework="pt") as f:
            for key in keys:
                if not key.startswith(key_prefix):
                    continue
                hf_name = key[len(key_prefix) :]
                if hf_name.endswith(IGNORED_KEY_SUFFIXES):
                    continue
                ours = hf_to_ours(hf_name)
                if ours is not None and dropped_from <= layer_index(ours) < full_layers:
                    continue  # a layer after the kept ones (num_layers=)
                if ours == "lm_head.weight" and cfg.tie_embeddings:
                    tied_head = (file, key)  # checked against the embeddings after loading
                    continue
                if ours is None or ours not in expected:
                    unexpected.append(f"{key}  (in {Path(file).name})")
                    continue
                shape = tuple(f.get_slice(key).get_shape())
                if shape != expected[ours]:
                    mismatched.append(
                        f"{key}: file has {list(shape)}, model expects {list(expected[ours])}  (in {Path(file).name})"
                    )
                sources[ours] = (file, key)
    missing = [ours_to_hf(k) for k in expected if k not in sources]
    missing = [key_prefix + k for k in missing]
    if missing or unexpected or mismatched:
        parts = [f"{root}: checkpoint does not match the {cfg.family} model described by its config"]
        if missing:
            parts.append(f"  missing {len(missing)} key(s):{_listing(missing)}")
        if unexpected:
            parts.append(f"  unexpected {len(unexpected)} key(s):{_listing(unexpected)}")
        if mismatched:
            parts.append(f"  {len(mismatched)} shape mismatch(es):{_listing(mismatched)}")
        if unexpected and not key_prefix and all(hf_to_ours(u.split()[0]) is None for u in unexpected):
            parts.append("  (a VLM checkpoint? pass key_prefix=, e.g. 'language_model.')")
        raise LMCheckpointError(
            "\n".join(parts), missing=missing, unexpected=unexpected, mismatched=mismatched
        )

    state: dict[str, torch.Tensor] = {}
    by_file: dict[str, list[tuple[str, str]]] = {}
    for ours, (file, key) in sources.items():
        by_file.setdefault(file, []).append((ours, key))
    for file, pairs in by_file.items():
        with safe_open(file, framework="pt") as f:
            for ours, key in pairs:
                state[ours] = f.get_tensor(key).to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)

    if tied_head is not None:
        with safe_open(tied_head[0], framework="pt") as f:
            head = f.get_tensor(tied_head[1]).to(device=device, dtype=dtype)
        if head.shape != model.embed_tokens.weight.shape or not torch.equal(head, model.embed_tokens.weight):
            raise LMCheckpointError(
                f"{tied_head[0]}: holds {tied_head[1]} that differs from the token embeddings, but "
                f"{CONFIG_FILE} ties them (tie_word_embeddings); fix the config or the file"
            )
    return model.eval()


# ---------------------------------------------------------------------------------------------- saving


def save_hf_checkpoint(
    model: DecoderLM,
    path: str | Path,
    *,
    max_shard_bytes: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``config.json`` + safetensors with Hugging Face names (sharded above ``max_shard_bytes``).

    The directory loads back with :func:`load_hf_checkpoint` and with transformers'
    ``LlamaForCausalLM`` / ``GemmaForCausalLM.from_pretrained``.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    state = {
        ours_to_hf(k): (v.detach().to(dtype) if dtype is not None else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    stored_dtype = next(iter(state.values())).dtype
    hf_config = model.config.to_hf_config()
    hf_config["torch_dtype"] = hf_config["dtype"] = str(stored_dtype).removeprefix("torch.")
    (root / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")

    metadata = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(state, str(root / SAFETENSORS_FILE), metadata=metadata)
        return root
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(root / fname), metadata=metadata)
        weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return root
