"""Run an exported policy with onnxruntime: `OnnxPolicy(dir)`, a drop-in `PolicyLike` without torch.

An export directory (written by `vlaforge export ... --format onnx`) holds

    model.onnx          the graph: uint8 images, state, text, noise -> action chunk in robot units
    export.json         inputs/outputs (names, shapes, dtypes), the spec, the vocabulary, the
                        policy config, the normalization statistics (already inside the graph;
                        listed for reference), the sampler, and the export-time verification
    text_features.npz   language "minilm" only: the frozen MiniLM features of the instructions
                        precomputed at export (`--instructions`)

`OnnxPolicy.predict(observations)` does what `Policy.predict` does around the network: stack the
last T observations, validate them against the spec, tokenize the instruction with the saved
vocabulary, draw the sampling noise, run the graph, return an `ActionChunk`. Given the same
`torch.Generator` as `Policy.predict` it draws the same noise, so the two return the same chunk.
This module needs numpy and onnxruntime only (torch only to draw from a torch generator).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.export import ExportError, require_modules
from vlaforge.types import IMAGE_PREFIX, STATE_KEY, ActionChunk, Observation, PolicySpec

MODEL_FILE = "model.onnx"
META_FILE = "export.json"
TEXT_FEATURES_FILE = "text_features.npz"
SCHEMA = 1

TEXT_IDS = "text.ids"
TEXT_MASK = "text.mask"
TEXT_FEATURES = "text.features"
NOISE = "noise"
ACTION_OUTPUT = "action"

# The word splitting of vlaforge.models.word_tokenizer (which imports torch), kept identical here so the
# runner stays torch-free; tests/export checks both tokenize alike.
_WORD_RE = re.compile(r"\w+|[^\w\s]")
PAD_ID, UNK_ID = 0, 1

TextEncoderFn = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape ("B" = the dynamic batch axis), numpy dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d.get("description", ""))

    def check(self, value: Any, batch: int | None = None) -> np.ndarray:
        """`value` as a C-contiguous array of this spec; ValueError naming the input if it does not fit."""
        if not isinstance(value, np.ndarray):
            raise TypeError(f"input '{self.name}': expected a numpy array, got {type(value).__name__}")
        if value.dtype != np.dtype(self.dtype):
            raise ValueError(f"input '{self.name}': expected dtype {self.dtype}, got {value.dtype}")
        want = tuple("B" if d == "B" else int(d) for d in self.shape)
        ok = value.ndim == len(want) and all(w == "B" or w == v for w, v in zip(want, value.shape))
        if not ok or (batch is not None and value.shape[0] != batch):
            b = "B" if batch is None else batch
            raise ValueError(
                f"input '{self.name}': expected shape {tuple(b if w == 'B' else w for w in want)}, "
                f"got {tuple(value.shape)}"
            )
        return np.ascontiguousarray(value)


def encode_words(index: dict[str, int], texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """`WordTokenizer.encode` in numpy: texts -> ids (B, max_len) int64, mask (B, max_len) bool.

    Lower-cased words and single punctuation marks; unknown words -> <unk>; truncated to max_len;
    right-padded with <pad> = 0.
    """
    ids = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)  # (B, L)
    mask = np.zeros((len(texts), max_len), dtype=bool)  # (B, L)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"instruction {i} must be a str, got {type(text).__name__}")
        tok = [index.get(w, UNK_ID) for w in _WORD_RE.findall(text.lower())][:max_len]
        ids[i, : len(tok)] = tok
        mask[i, : len(tok)] = True
    return ids, mask


def read_meta(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """(directory, parsed export.json); errors name the missing file or the unsupported schema."""
    d = Path(directory)
    for name in (META_FILE, MODEL_FILE):
        if not (d / name).is_file():
            raise FileNotFoundError(
                f"{d} is not an ONNX export: {name} is missing (write one with "
                f"`vlaforge export RUN_OR_POLICY_DIR --format onnx --out {d}`)"
            )
    try:
        meta = json.loads((d / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{d / META_FILE} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != "onnx" or "inputs" not in meta:
        raise ExportError(f"{d / META_FILE} does not describe an ONNX export (format/inputs missing)")
    if int(meta.get("schema", 0)) > SCHEMA:
        raise ExportError(
            f"{d / META_FILE} has schema {meta['schema']}, newer than this vlaforge reads ({SCHEMA}); upgrade"
        )
    return d, meta


class OnnxPolicy:
    """An exported policy run by onnxruntime, with `Policy`'s `spec` / `predict` contract.

    directory: an export directory (see the module docstring).
    threads: onnxruntime intra-op threads (None: onnxruntime's default, one per core).
    seed: seed of the numpy generator used when `predict` gets no generator.
    providers: onnxruntime execution providers (default CPU).
    text_encoder: language "minilm" only: texts -> (features (B, L, Hd) float32, mask (B, L) bool) for
        instructions that were not precomputed at export, e.g. a wrapper around
        `vlaforge.models.pretrained_text.PretrainedTextEncoder(...).frozen_features`.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        threads: int | None = None,
        seed: int | None = None,
        providers: Sequence[str] | None = None,
        text_encoder: TextEncoderFn | None = None,
    ):
        require_modules("onnxruntime", purpose="OnnxPolicy")
        import onnxruntime as ort

        self.directory, self.meta = read_meta(directory)
        s = self.meta["spec"]
        self.spec = PolicySpec(
            cameras={k: (int(v[0]), int(v[1])) for k, v in s["cameras"].items()},
            state_dim=int(s["state_dim"]),
            action_dim=int(s["action_dim"]),
            chunk=int(s["chunk"]),
            history=int(s["history"]),
            fps=float(s["fps"]),
        )
        self.inputs = {d["name"]: TensorSpec.from_json(d) for d in self.meta["inputs"]}
        self.recipe: str = self.meta.get("recipe", "")
        self.head: str = self.meta.get("head", "")
        sampler = self.meta["sampler"]
        self.steps = int(sampler["steps"])  # network evaluations unrolled in the graph
        self.noise_draws = int(sampler["noise_draws"])
        # predict(steps=...) values that mean this graph: its step count, or the count asked for at export
        self._steps_ok = {self.steps, sampler.get("requested_steps")}

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.directory / MODEL_FILE), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        graph_inputs = {i.name for i in self.session.get_inputs()}
        if graph_inputs != set(self.inputs):
            raise ExportError(
                f"{self.directory}: model.onnx inputs {sorted(graph_inputs)} do not match export.json "
                f"{sorted(self.inputs)}; the directory mixes two exports"
            )

        lang = self.meta["language"]
        self.language: str = lang["type"]
        self.text_max_len = int(lang["max_len"])
        self._vocab_index: dict[str, int] = {}
        self._text_table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._text_encoder = text_encoder
        if self.language == "words":
            self._vocab_index = {w: i for i, w in enumerate(lang["vocab"])}
        elif lang.get("features_file"):
            with np.load(self.directory / lang["features_file"], allow_pickle=False) as table:
                feats, mask = table["features"], table["mask"].astype(bool)  # (N, L, Hd), (N, L)
            self._text_table = {t: (feats[i], mask[i]) for i, t in enumerate(lang["instructions"])}
        self._rng = np.random.default_rng(seed)

    @property
    def precomputed_instructions(self) -> list[str]:
        """Language "minilm": the instructions whose text features are known (exported or encoded since)."""
        return sorted(self._text_table)

    # ------------------------------------------------------------------ inputs
    def encode_text(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Instructions -> the graph's text inputs (ids + mask, or MiniLM features + mask), batch len(texts)."""
        texts = list(texts)
        if self.language == "words":
            ids, mask = encode_words(self._vocab_index, texts, self.text_max_len)
            return {TEXT_IDS: ids, TEXT_MASK: mask}
        missing = sorted({t for t in texts if t not in self._text_table})
        if missing and self._text_encoder is None:
            raise ValueError(
                f"no precomputed MiniLM features for instruction(s) {missing} (exported: "
                f"{sorted(self._text_table)}); re-export with --instructions listing them, or pass "
                "OnnxPolicy(..., text_encoder=fn) returning (features (B, L, Hd), mask (B, L))"
            )
        if missing:
            feats, mask = self._text_encoder(missing)  # type: ignore[misc]
            for i, t in enumerate(missing):
                self._text_table[t] = (np.asarray(feats[i], np.float32), np.asarray(mask[i], bool))
        feats = np.stack([self._text_table[t][0] for t in texts])  # (B, L, Hd)
        mask = np.stack([self._text_table[t][1] for t in texts])  # (B, L)
        return {TEXT_FEATURES: feats.astype(np.float32), TEXT_MASK: mask}

    def observations_to_inputs(
        self, observations: Observation | Sequence[Observation]
    ) -> dict[str, np.ndarray]:
        """The last T observations (oldest first) -> graph inputs of batch 1, noise excluded.

        A single observation for a T > 1 policy is repeated (episode start), as `Policy` does.
        """
        obs_list = [observations] if isinstance(observations, Observation) else list(observations)
        T = self.spec.history
        if len(obs_list) == 1 and T > 1:
            obs_list = obs_list * T
        if len(obs_list) != T:
            raise ValueError(f"policy reads {T} observations (history), got {len(obs_list)}")
        for o in obs_list:
            o.validate(self.spec.cameras, self.spec.state_dim)
        inputs = {
            IMAGE_PREFIX + cam: np.stack([o.images[cam] for o in obs_list])[None] for cam in self.spec.cameras
        }  # (1, T, H, W, 3) each
        inputs[STATE_KEY] = np.stack([np.asarray(o.state, np.float32) for o in obs_list])[None]  # (1, T, S)
        inputs.update(self.encode_text([obs_list[-1].instruction]))
        return inputs

    def draw_noise(self, batch: int, generator: Any = None) -> np.ndarray | None:
        """Standard-normal noise (B, K, H, A) for a sampling head (None for a deterministic one).

        generator: a `torch.Generator` draws exactly what `Policy.predict_batch` draws with it (one
        (B, H*A) tensor per draw, in order); a `numpy.random.Generator`, or None for this policy's own.
        """
        if not self.noise_draws:
            return None
        H, A, K = self.spec.chunk, self.spec.action_dim, self.noise_draws
        if generator is None or isinstance(generator, np.random.Generator):
            rng = self._rng if generator is None else generator
            return rng.standard_normal((batch, K, H, A), dtype=np.float32)
        import torch  # a torch generator: the caller has torch

        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or numpy Generator, got {type(generator).__name__}"
            )
        draws = [torch.randn((batch, H * A), generator=generator) for _ in range(K)]  # K x (B, H*A)
        return torch.stack(draws, dim=1).reshape(batch, K, H, A).numpy()

    # ------------------------------------------------------------------ running
    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on validated inputs (names, dtypes and shapes of `self.inputs`): actions (B, H, A)."""
        unknown = sorted(set(inputs) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(inputs))
        if unknown or missing:
            raise ValueError(
                f"graph inputs: missing {missing}, unknown {unknown}; expected {list(self.inputs)}"
            )
        first = next(iter(self.inputs))
        batch = int(np.shape(inputs[first])[0]) if np.ndim(inputs[first]) else None
        feeds = {name: spec.check(inputs[name], batch) for name, spec in self.inputs.items()}
        (actions,) = self.session.run([ACTION_OUTPUT], feeds)
        return actions  # (B, H, A)

    def predict(
        self,
        observations: Observation | Sequence[Observation],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: Any = None,
        noise: np.ndarray | None = None,
    ) -> ActionChunk:
        """The next action chunk (H, A) in robot units, as `Policy.predict`.

        steps: None or the exported step count (the sampler is unrolled in the graph); ignored by the
            one-pass heads, as `Policy.predict` ignores it.
        generator: torch or numpy generator of the sampling noise (see `draw_noise`); noise: (1, K, H, A)
        to give the noise directly.
        """
        if dataset is not None:
            raise ValueError(f"dataset='{dataset}': exported policies serve a single dataset; omit it")
        if steps is not None and self.noise_draws and steps not in self._steps_ok:
            raise ValueError(
                f"steps={steps}: this graph was exported with {self.steps} sampling steps unrolled; "
                f"re-export with `vlaforge export ... --steps {steps}`"
            )
        inputs = self.observations_to_inputs(observations)
        if self.noise_draws:
            inputs[NOISE] = self.draw_noise(1, generator) if noise is None else noise
        actions = self.run(inputs)[0]  # (H, A)
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError("policy produced non-finite actions; refusing to return them")
        return ActionChunk(
            actions.astype(np.float32), control_hz=self.spec.fps, info={"runtime": "onnxruntime"}
        )

    def __repr__(self) -> str:
        return f"OnnxPolicy({str(self.directory)!r}, recipe={self.recipe!r}, head={self.head!r})"
