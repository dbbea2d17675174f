"""PolicyConfig: every value needed to rebuild an Octo-layout policy, validated at construction.

A config is plain data (JSON in `config.json` of every checkpoint); modules receive plain
arguments taken from it, never the config object itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vlaforge.policies.config import ConfigMethods
from vlaforge.types import PolicySpec

CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes incompatibly
HEADS = ("diffusion", "flow", "binned", "l1", "mse")
LANGUAGE = ("words", "minilm")
NORM_MODES = ("mean_std", "quantile", "min_max")


@dataclass
class PolicyConfig(ConfigMethods):
    recipe: str = "octo-tiny"
    # --- embodiment (filled from the dataset) ---
    cameras: dict[str, list[int]] = field(default_factory=dict)  # name -> [height, width] the policy expects
    state_dim: int = 0
    action_dim: int = 0
    chunk: int = 4  # H, actions predicted per call
    history: int = 2  # T, observation steps read per call
    fps: float = 10.0
    # Cross-embodiment mixtures: the datasets trained on and each one's real [state_dim, action_dim]
    # (state_dim / action_dim above are the padded maxima). Empty = one dataset, plain statistics.
    datasets: list[str] = field(default_factory=list)
    dataset_dims: dict[str, list[int]] = field(default_factory=dict)
    # Each dataset's control rate where it differs from fps, and its cameras named differently from the
    # policy's: dataset -> {its camera name: the policy's camera name} (MixtureDataset's camera map).
    dataset_fps: dict[str, float] = field(default_factory=dict)
    dataset_cameras: dict[str, dict[str, str]] = field(default_factory=dict)
    # --- model ---
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 512
    dropout: float = 0.0
    encoder_image_size: list[int] | None = (
        None  # resize camera images to [h, w] before the stem (None: as is)
    )
    stem_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    patch: int = 2  # final patch conv after the stem (tokens per camera = (size / 2^len(stem) / patch)^2)
    # {} : the conv stem above, per camera (Octo). {"lite0": {"lite0": {"features", "frozen"}, "image_size"}}:
    # one pretrained EfficientNet-Lite0 shared by the cameras (`models/vision/spec.py`), then per camera a
    # linear projection + learned positions (octo-lite0); the stem fields are then unused.
    vision: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Recipes on pretrained parts: {"vision": source} read by the recipe builder (policies/pretrained.py).
    pretrained: dict[str, Any] = field(default_factory=dict)
    n_readouts: int = 1  # readout tokens per timestep
    language: str = "words"  # "words": tokenizer built from the dataset; "minilm": frozen sentence encoder
    text_max_len: int = 16
    # learned position embeddings on the instruction's tokens (Octo); False: none, so rewording that moves a
    # word does not change its token (the LIBERO paraphrase test, docs/libero.md)
    text_positions: bool = True
    head: str = "diffusion"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    # --- normalization ---
    state_norm: str = "mean_std"
    action_norm: str = "mean_std"
    unnormalized_action_dims: list[int] = field(default_factory=list)  # e.g. the gripper (Octo/OpenVLA)
    augment: bool = True
    format_version: int = CHECKPOINT_FORMAT

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ValueError:
            return ValueError(f"PolicyConfig.{fld}={getattr(self, fld)!r}: {msg}")

        if self.head not in HEADS:
            raise bad("head", f"unknown head; choose one of {HEADS}")
        if self.language not in LANGUAGE:
            raise bad("language", f"choose one of {LANGUAGE}")
        for fld in ("state_norm", "action_norm"):
            if getattr(self, fld) not in NORM_MODES:
                raise bad(fld, f"choose one of {NORM_MODES}")
        if self.head == "binned" and self.action_norm != "quantile":
            # 256 uniform bins over [-1, 1] need q01/q99 scaling (RT-2/OpenVLA), not mean/std.
            self.action_norm = "quantile"
        for fld in ("chunk", "history", "width", "depth", "heads", "mlp_dim", "n_readouts", "text_max_len"):
            if getattr(self, fld) < 1:
                raise bad(fld, "must be >= 1")
        if self.width % self.heads:
            raise bad("width", f"must be divisible by heads={self.heads}")
        if self.vision and (len(self.vision) != 1 or "lite0" not in next(iter(self.vision.values()))):
            raise bad("vision", "Octo's image tokens come from the conv stem ({}) or one Lite0 spec")
        self._check_pretrained(bad)
        if self.pretrained.get("lm") is not None:
            raise bad("pretrained", "the Octo layout has no pretrained LM (its language is words or MiniLM)")
        if self.pretrained.get("vision") is not None and not self.vision:
            raise bad("pretrained", "pretrained vision weights need a Lite0 'vision' spec")
        for name, hw in self.cameras.items():
            if len(hw) != 2 or min(hw) < 1:
                raise bad("cameras", f"camera '{name}' needs [height, width], got {hw}")
            if self.vision:
                continue  # Lite0 resizes every frame to its image_size
            down = 2 ** len(self.stem_channels) * self.patch
            if hw[0] % down or hw[1] % down:
                raise bad(
                    "cameras",
                    f"camera '{name}' size {hw} must be divisible by 2^len(stem_channels)*patch={down}",
                )
        self._check_unnormalized_dims(bad)
        self._check_datasets(bad)
        if self.format_version != CHECKPOINT_FORMAT:
            raise bad(
                "format_version",
                f"this vlaforge reads checkpoint format {CHECKPOINT_FORMAT}; re-train or convert the checkpoint",
            )

    def _check_datasets(self, bad: Any) -> None:
        if len(set(self.datasets)) != len(self.datasets):
            raise bad("datasets", "names must be unique")
        for name in self.datasets:
            if not isinstance(name, str) or not name or "@" in name:
                raise bad("datasets", f"name {name!r} must be a non-empty string without '@'")
        if set(self.dataset_dims) != set(self.datasets):
            raise bad(
                "dataset_dims",
                f"needs exactly one [state_dim, action_dim] per dataset in datasets={self.datasets}",
            )
        for fld in ("dataset_fps", "dataset_cameras"):
            unknown = sorted(set(getattr(self, fld)) - set(self.datasets))
            if unknown:
                raise bad(fld, f"names datasets {unknown} that are not in datasets={self.datasets}")
        for name, rate in self.dataset_fps.items():
            if not rate > 0:
                raise bad("dataset_fps", f"'{name}' needs a control rate > 0, got {rate}")
        for name, cams in self.dataset_cameras.items():
            unknown = sorted(set(cams.values()) - set(self.cameras))
            if unknown:
                raise bad("dataset_cameras", f"'{name}' maps onto cameras {unknown} the policy does not have")
        for name, dims in self.dataset_dims.items():
            if len(dims) != 2 or min(dims) < 1:
                raise bad("dataset_dims", f"'{name}' needs [state_dim, action_dim] >= 1, got {dims}")
            if self.state_dim and dims[0] > self.state_dim or self.action_dim and dims[1] > self.action_dim:
                raise bad(
                    "dataset_dims",
                    f"'{name}' {dims} exceeds the padded sizes [{self.state_dim}, {self.action_dim}]",
                )

    def dataset_spec(self, name: str, *, own_cameras: bool = False) -> PolicySpec:
        """The spec of one dataset of a mixture: its real state and action sizes and its control rate.

        own_cameras: name the cameras as that dataset (and its environment) does, not as the policy does.
        """
        if name not in self.dataset_dims:
            raise KeyError(f"unknown dataset '{name}'; this policy was trained on {self.datasets}")
        s, a = self.dataset_dims[name]
        spec = dataclasses.replace(
            self.spec, state_dim=int(s), action_dim=int(a), fps=float(self.dataset_fps.get(name, self.fps))
        )
        if own_cameras:
            to_own = {ours: theirs for theirs, ours in self.dataset_cameras.get(name, {}).items()}
            spec = dataclasses.replace(spec, cameras={to_own.get(c, c): hw for c, hw in spec.cameras.items()})
        return spec
