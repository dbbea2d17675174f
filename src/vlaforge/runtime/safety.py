"""SafetyFilter: the last check between a policy and the motors.

A learned policy can output anything: NaNs after a bad normalisation, a jump across the table, a
gripper that chatters. The filter enforces per-embodiment limits on every action, *after* chunk
execution and right before the robot, and records every change it makes so that interventions are
visible in the server's reply and in evaluation reports instead of silently hiding a bad policy.

Positions are handled in *step* space: for each tick the commanded position change
``step = target - current`` (absolute actions) or ``step = action * delta_scale`` (delta actions, e.g.
Meta-World's end-effector deltas). Limits, in priority order (a later one never undoes an earlier one):

1. non-finite action -> **safe hold** (zero position step, previous gripper / previous action); counted.
2. ``action_low/high``: per-dimension clip.
3. workspace box ``workspace_low/high`` on the commanded position target.
4. per-step speed: ``|step| <= min(max_delta, max_velocity / control_hz)`` per position dimension.
5. acceleration: ``|step_t - step_{t-1}| <= max_acceleration / control_hz**2`` per dimension. Best effort:
   when the workspace forces a stop at a wall, the wall wins (and the intervention says so).
6. gripper rate: ``|g_t - g_{t-1}| <= max_gripper_delta``.

The current position comes from the state (``state_position_dims``) when given, otherwise from the
filter's own last commanded target; without either, the workspace of delta actions cannot be checked.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("non_finite", "action_bounds", "workspace", "velocity", "acceleration", "gripper_rate")


def _vec(value: Any, name: str, n: int | None = None) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if n is not None and arr.shape != (n,):
        raise ValueError(f"SafetyLimits.{name}: expected {n} values, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"SafetyLimits.{name}: values must be finite, got {arr.tolist()}")
    return arr


@dataclass
class SafetyLimits:
    """Per-embodiment limits. Every limit is optional; units are the robot's.

    action_low/high: (A,) bounds of the action vector.
    position_dims: indices of the action's position dimensions (e.g. [0, 1, 2] for x, y, z).
    action_is_delta: position dims are per-step changes (scaled by delta_scale) instead of targets.
    state_position_dims: where the current position sits in the state (default: position_dims).
    workspace_low/high: (P,) box the commanded position target must stay in.
    max_delta: per-step position change; max_velocity (units/s) and max_acceleration (units/s^2) use
        control_hz to convert to per-step limits.
    gripper_dim / max_gripper_delta: gripper command rate limit per step.
    """

    action_low: list[float] | None = None
    action_high: list[float] | None = None
    position_dims: list[int] = field(default_factory=list)
    action_is_delta: bool = False
    delta_scale: float = 1.0
    state_position_dims: list[int] | None = None
    workspace_low: list[float] | None = None
    workspace_high: list[float] | None = None
    max_delta: float | None = None
    max_velocity: float | None = None
    max_acceleration: float | None = None
    control_hz: float = 10.0
    gripper_dim: int | None = None
    max_gripper_delta: float | None = None

    def __post_init__(self) -> None:
        low, high = _vec(self.action_low, "action_low"), _vec(self.action_high, "action_high")
        if (low is None) != (high is None):
            raise ValueError("SafetyLimits: set both action_low and action_high, or neither")
        if low is not None and (low.shape != high.shape or np.any(low > high)):
            raise ValueError(f"SafetyLimits.action_low must be <= action_high elementwise: {low} vs {high}")
        P = len(self.position_dims)
        if len(set(self.position_dims)) != P or any(d < 0 for d in self.position_dims):
            raise ValueError(
                f"SafetyLimits.position_dims: distinct non-negative ints, got {self.position_dims}"
            )
        if self.state_position_dims is not None and len(self.state_position_dims) != P:
            raise ValueError(
                f"SafetyLimits.state_position_dims: need {P} entries (one per position dim), "
                f"got {self.state_position_dims}"
            )
        wl, wh = _vec(self.workspace_low, "workspace_low", P), _vec(self.workspace_high, "workspace_high", P)
        if (wl is None) != (wh is None):
            raise ValueError("SafetyLimits: set both workspace_low and workspace_high, or neither")
        if wl is not None and (P == 0 or np.any(wl > wh)):
            raise ValueError(
                "SafetyLimits.workspace_*: needs position_dims and workspace_low <= workspace_high"
            )
        for name in ("max_delta", "max_velocity", "max_acceleration", "max_gripper_delta"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"SafetyLimits.{name}: expected a finite value >= 0 or None, got {v!r}")
        if not (np.isfinite(self.control_hz) and self.control_hz > 0):
            raise ValueError(f"SafetyLimits.control_hz: expected > 0, got {self.control_hz!r}")
        if not (np.isfinite(self.delta_scale) and self.delta_scale > 0):
            raise ValueError(f"SafetyLimits.delta_scale: expected > 0, got {self.delta_scale!r}")
        if (self.gripper_dim is None) != (self.max_gripper_delta is None):
            raise ValueError("SafetyLimits: gripper_dim and max_gripper_delta go together")
        if self.gripper_dim is not None and self.gripper_dim in self.position_dims:
            raise ValueError(f"SafetyLimits.gripper_dim={self.gripper_dim} is also a position dim")
        if self.action_is_delta and low is not None and P:
            idx = np.asarray(self.position_dims)
            if idx.max() >= low.shape[0] or np.any(low[idx] > 0) or np.any(high[idx] < 0):
                raise ValueError(
                    "SafetyLimits.action_low/high must include 0 on the position dims of delta actions "
                    "(standing still must be allowed)"
                )

    @property
    def step_limit(self) -> float | None:
        """Per-step position change limit from max_delta and max_velocity (the tighter one)."""
        limits = [v for v in (self.max_delta,) if v is not None]
        if self.max_velocity is not None:
            limits.append(self.max_velocity / self.control_hz)
        return min(limits) if limits else None

    @property
    def accel_limit(self) -> float | None:
        """Per-step change of the per-step position change."""
        return None if self.max_acceleration is None else self.max_acceleration / self.control_hz**2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SafetyLimits:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"SafetyLimits: unknown field(s) {sorted(unknown)}")
        return cls(**d)


def load_limits(path: str | Path) -> SafetyLimits:
    """Read a JSON file of `SafetyLimits` fields; errors name the file and what is wrong with it."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"safety limits file {p} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"safety limits file {p} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"safety limits file {p} must hold a JSON object of SafetyLimits fields")
    try:
        return SafetyLimits.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"safety limits file {p}: {e}") from None


@dataclass
class Intervention:
    """One change the filter made to one action."""

    kind: str  # one of KINDS
    dims: list[int]
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "dims": self.dims, "detail": self.detail}


class SafetyFilter:
    """Stateful per-robot filter: call `filter` once per executed action, `reset` at episode start."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self._counts: Counter[str] = Counter()
        self._calls = 0
        self._steps_changed = 0
        self.reset()

    def reset(self, *, at_rest: bool = True) -> None:
        """Forget the trajectory (new episode); counters are kept, see `stats`.

        at_rest: the robot starts still, so the first step is already acceleration-limited from zero.
        """
        self._last_action: np.ndarray | None = None
        self._last_target: np.ndarray | None = None
        P = len(self.limits.position_dims)
        self._last_step: np.ndarray | None = np.zeros(P) if at_rest and P else None

    def stats(self) -> dict[str, int]:
        return {
            "calls": self._calls,
            "steps_changed": self._steps_changed,
            **{k: self._counts[k] for k in KINDS},
        }

    # ------------------------------------------------------------------ helpers
    def _current(self, state: np.ndarray | None) -> np.ndarray | None:
        lim = self.limits
        if state is not None and lim.position_dims:
            s = np.asarray(state, dtype=np.float64).reshape(-1)
            idx = lim.state_position_dims if lim.state_position_dims is not None else lim.position_dims
            if max(idx) >= s.shape[0]:
                raise ValueError(f"SafetyFilter: state has {s.shape[0]} dims, position dims {idx} do not fit")
            cur = s[idx]
            if np.all(np.isfinite(cur)):
                return cur
        return self._last_target

    def _hold(self, n: int, current: np.ndarray | None) -> np.ndarray:
        lim = self.limits
        a = np.zeros(n) if self._last_action is None else self._last_action.copy()
        if lim.action_low is not None:
            a = np.clip(a, lim.action_low, lim.action_high)
        if lim.position_dims:
            if lim.action_is_delta:
                a[lim.position_dims] = 0.0  # zero step: stay where you are
            elif current is not None:
                a[lim.position_dims] = (
                    current
                    if lim.workspace_low is None
                    else np.clip(current, lim.workspace_low, lim.workspace_high)
                )
        return a

    # ------------------------------------------------------------------ the filter
    def filter(
        self, action: np.ndarray, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[Intervention]]:
        """Return (safe action float32 (A,), interventions). `state` gives the current position."""
        lim = self.limits
        raw = np.asarray(action, dtype=np.float64).reshape(-1)  # (A,)
        n = raw.shape[0]
        if lim.action_low is not None and len(lim.action_low) != n:
            raise ValueError(f"SafetyFilter: action has {n} dims, limits are for {len(lim.action_low)}")
        if lim.position_dims and max(lim.position_dims) >= n:
            raise ValueError(
                f"SafetyFilter: position_dims {lim.position_dims} do not fit an action of {n} dims"
            )
        self._calls += 1
        out: list[Intervention] = []
        current = self._current(state)
        P = lim.position_dims

        if not np.all(np.isfinite(raw)):
            bad = np.flatnonzero(~np.isfinite(raw)).tolist()
            a = self._hold(n, current)
            out.append(Intervention("non_finite", bad, "non-finite action replaced by a safe hold"))
            step = np.zeros(len(P)) if P else None
            target = None if current is None or not P else (a[P] if not lim.action_is_delta else current)
            return self._finish(a, out, step, target)

        a = raw.copy()
        if lim.action_low is not None:
            self._clip(
                a, np.arange(n), np.asarray(lim.action_low), np.asarray(lim.action_high), "action_bounds", out
            )

        step = target = None
        if P:
            pos = a[P]
            if lim.action_is_delta:
                step = pos * lim.delta_scale
                target = None if current is None else current + step
            else:
                target = pos.copy()
                step = None if current is None else target - current
            if target is not None and lim.workspace_low is not None:
                clipped = self._clip_vec(target, lim.workspace_low, lim.workspace_high, "workspace", P, out)
                if current is not None and np.any(clipped != target):
                    # recompute only when the wall moved the target: (current + step) - current is not
                    # exactly step in floating point, and the speed check would count that round-off
                    step = clipped - current
                target = clipped
            if step is not None:
                vmax = lim.step_limit
                if vmax is not None:
                    step = self._clip_vec(step, -vmax, vmax, "velocity", P, out)
                amax = lim.accel_limit
                if amax is not None and self._last_step is not None:
                    lo, hi = self._last_step - amax, self._last_step + amax
                    if vmax is not None:
                        lo, hi = np.maximum(lo, -vmax), np.minimum(hi, vmax)
                    step = self._clip_vec(step, lo, hi, "acceleration", P, out)
                if current is not None:
                    target = current + step
                    if lim.workspace_low is not None:  # the wall wins over acceleration
                        clipped = self._clip_vec(
                            target, lim.workspace_low, lim.workspace_high, "workspace", P, out
                        )
                        if np.any(clipped != target):
                            step = clipped - current
                        target = clipped
                a[P] = step / lim.delta_scale if lim.action_is_delta else target
            elif target is not None:
                a[P] = target

        g = lim.gripper_dim
        if g is not None and self._last_action is not None:
            prev = self._last_action[g]
            lo, hi = prev - lim.max_gripper_delta, prev + lim.max_gripper_delta
            if not lo <= a[g] <= hi:
                out.append(
                    Intervention(
                        "gripper_rate", [g], f"{a[g]:.4g} -> within {lim.max_gripper_delta} of {prev:.4g}"
                    )
                )
                a[g] = min(max(a[g], lo), hi)
        if lim.action_low is not None:  # float round-off from the step arithmetic must not leave the bounds
            a = np.clip(a, lim.action_low, lim.action_high)
        return self._finish(a, out, step, target)

    def _finish(
        self, a: np.ndarray, out: list[Intervention], step: np.ndarray | None, target: np.ndarray | None
    ) -> tuple[np.ndarray, list[Intervention]]:
        self._last_action = a.copy()
        self._last_step = None if step is None else np.asarray(step, dtype=np.float64).copy()
        if target is not None:
            self._last_target = np.asarray(target, dtype=np.float64).copy()
        for iv in out:
            self._counts[iv.kind] += 1
        self._steps_changed += bool(out)
        return a.astype(np.float32), out

    def filter_chunk(
        self, actions: np.ndarray, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[list[Intervention]]]:
        """Filter a whole chunk (H, A) as a trajectory that starts at `state` (a fresh trajectory each call).

        The server uses this: it cannot know how many actions the robot will execute, so it checks the
        chunk as if all were executed from the observed state. The robot-side filter sees the truth.
        """
        actions = np.asarray(actions)
        if actions.ndim != 2:
            raise ValueError(f"SafetyFilter.filter_chunk: expected actions (H, A), got shape {actions.shape}")
        self.reset(at_rest=False)  # the robot is moving: only steps inside the chunk are compared
        rows, per_step = [], []
        for h in range(actions.shape[0]):
            safe, iv = self.filter(actions[h], state if h == 0 else None)
            rows.append(safe)
            per_step.append(iv)
        return np.stack(rows), per_step  # (H, A)

    # ------------------------------------------------------------------ clipping with bookkeeping
    @staticmethod
    def _clip_vec(
        x: np.ndarray, lo: Any, hi: Any, kind: str, dims: list[int], out: list[Intervention]
    ) -> np.ndarray:
        y = np.clip(x, lo, hi)
        changed = np.flatnonzero(y != x)
        if changed.size:
            out.append(
                Intervention(kind, [int(dims[i]) for i in changed], f"clipped by {np.abs(y - x).max():.4g}")
            )
        return y

    def _clip(
        self, a: np.ndarray, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: str, out: list
    ) -> None:
        a[idx] = self._clip_vec(a[idx], lo, hi, kind, idx.tolist(), out)
