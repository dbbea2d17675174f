"""`ConfigMethods`: what every policy family's config dataclass shares (validation helpers, spec,
JSON round trip, checked `replace`).

A config is plain data (JSON in `config.json` of every checkpoint); modules receive plain arguments
taken from it, never the config object itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Self

from vlaforge.models.prompt import PROMPT_OVERFLOW
from vlaforge.types import PolicySpec

# The keys of a config's ``pretrained`` record (`ConfigMethods._check_pretrained`, `policies/pretrained.py`).
PRETRAINED_KEYS = ("lm", "lm_layers", "vision")


class ConfigMethods:
    """What every policy config dataclass (`octo.PolicyConfig`, `vla.VLAConfig`, `pi0.Pi0Config`) does alike.

    Each config keeps its own field list (their layouts differ; the field order is the JSON order), so
    this is a plain mixin over the embodiment fields they both have, not a base dataclass.
    """

    cameras: dict[str, list[int]]
    state_dim: int
    action_dim: int
    chunk: int
    history: int
    fps: float
    unnormalized_action_dims: list[int]
    # Keys that config.json files of older vlaforge versions hold and this one no longer has: dropped
    # on loading, so those checkpoints keep loading (e.g. the LM configs' CLI-only `augment` / `head`).
    retired_fields: ClassVar[tuple[str, ...]] = ()

    def _check_unnormalized_dims(self, bad: Callable[[str, str], ValueError]) -> None:
        """Gripper-style indices must address a real action dimension (negative ones count from the end)."""
        for d in self.unnormalized_action_dims:
            if self.action_dim and not -self.action_dim <= d < self.action_dim:
                raise bad(
                    "unnormalized_action_dims", f"index {d} out of range for action_dim={self.action_dim}"
                )

    def _check_prompt_overflow(self, bad: Callable[[str, str], ValueError]) -> None:
        """The pretrained-LM configs' ``prompt_overflow`` names a known policy (`PROMPT_OVERFLOW`)."""
        if self.prompt_overflow not in PROMPT_OVERFLOW:
            raise bad("prompt_overflow", f"choose one of {PROMPT_OVERFLOW}")

    def _check_pretrained(self, bad: Callable[[str, str], ValueError]) -> None:
        """``pretrained`` (the recipes on pretrained parts, `policies/pretrained.py`): where the recipe
        builder took the weights from: ``lm`` (a packaged name, .gguf file or HF directory), ``lm_layers``
        (the first N decoder layers kept), ``vision`` (the Lite0 weights). Provenance once built: a
        checkpoint holds every weight and never reads these sources."""
        p = self.pretrained  # type: ignore[attr-defined]
        if not isinstance(p, dict):
            raise bad("pretrained", "must be a dict with keys from " + str(PRETRAINED_KEYS))
        unknown = sorted(set(p) - set(PRETRAINED_KEYS))
        if unknown:
            raise bad("pretrained", f"unknown keys {unknown}; known: {list(PRETRAINED_KEYS)}")
        for key in ("lm", "vision"):
            if p.get(key) is not None and (not isinstance(p[key], str) or not p[key]):
                raise bad("pretrained", f"'{key}' must be a packaged name or a path (a non-empty string)")
        n = p.get("lm_layers")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise bad("pretrained", "'lm_layers' must be a positive int (the first N layers) or null (all)")
        if n is not None and p.get("lm") is None:
            raise bad("pretrained", "'lm_layers' truncates a pretrained LM: name it in 'lm'")

    @property
    def spec(self) -> PolicySpec:
        return PolicySpec(
            cameras={k: (int(v[0]), int(v[1])) for k, v in self.cameras.items()},
            state_dim=self.state_dim,
            action_dim=self.action_dim,
            chunk=self.chunk,
            history=self.history,
            fps=self.fps,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Rebuild from `to_dict()` output; unknown keys are an error rather than silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        d = {k: v for k, v in d.items() if k not in cls.retired_fields}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__} has unknown fields {unknown}; it was written by a different vlaforge "
                f"version (this one knows {sorted(known)})"
            )
        return cls(**d)

    def replace(self, **overrides: Any) -> Self:
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for k in overrides:
            if k not in known:
                raise ValueError(f"unknown {type(self).__name__} field '{k}'; valid fields: {sorted(known)}")
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]
