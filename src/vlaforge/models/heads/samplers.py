"""Stateless samplers, configured by values, that turn a trained network into samples.

Each sampler is an immutable dataclass with one method, ``sample(fn, x_init, *, generator)``.
It holds no per-call state, so one policy can serve concurrent requests with one sampler
object (the diffusers complaint: mutable ``set_timesteps`` state leaking between batches).

* :class:`DDPMSampler` — ancestral sampling through every training step (Octo), x̂0 clipped.
  ``fn(x, t)`` predicts the noise ε, with t (B,) long in [0, T).
* :class:`DDIMSampler` — deterministic (eta = 0) sampling on a subset of the training steps
  (Diffusion Policy uses 10 on robots). Same ``fn`` as DDPM.
* :class:`EulerSampler` — forward Euler integration of a flow-matching velocity field from
  noise (τ = 0) to data (τ = 1) (π0: 10 steps). ``fn(x, tau)`` with tau (B,) float.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vlaforge.models.heads.schedules import CosineSchedule

NoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)


def _check_step_noise(step_noise: torch.Tensor | None, draws: int, x: torch.Tensor) -> None:
    """Explicit per-step noise must hold one x-shaped tensor per draw the sampler makes."""
    if step_noise is not None and tuple(step_noise.shape) != (draws, *x.shape):
        raise ValueError(
            f"step_noise must be (draws={draws}, *x.shape={tuple(x.shape)}), got {tuple(step_noise.shape)}"
        )


@dataclass(frozen=True)
class DDPMSampler:
    """Ancestral DDPM: x_{t-1} = μ̃_t(x_t, x̂0) + σ_t · z through every training step.

    x̂0 = (x_t − sqrt(1 − ᾱ_t) · ε̂) / sqrt(ᾱ_t) is clipped to ±clip before forming the posterior
    mean μ̃_t = sqrt(ᾱ_{t-1}) β_t / (1 − ᾱ_t) · x̂0 + sqrt(α_t) (1 − ᾱ_{t-1}) / (1 − ᾱ_t) · x_t.
    Without clipping this equals Octo's update 1/sqrt(α_t) · (x_t − β_t / sqrt(1 − ᾱ_t) · ε̂); with
    it (as in Diffusion Policy / diffusers) a small ε̂ error at the last, almost pure-noise
    step (α_t ≈ 0.001 in the cosine schedule, an error amplified ~30x) cannot blow up the sample.

    variance: "large" σ_t² = β_t (Octo) or "small" σ_t² = β_t (1 − ᾱ_{t-1}) / (1 − ᾱ_t) (diffusers default).
    """

    schedule: CosineSchedule
    clip: float | None = 5.0
    variance: str = "large"

    def __post_init__(self) -> None:
        if self.variance not in ("large", "small"):
            raise ValueError(f"DDPMSampler.variance must be 'large' or 'small', got {self.variance!r}")

    def noise_draws(self) -> int:
        """Fresh noises drawn after the initial one: one per step but the last (T - 1)."""
        return self.schedule.steps - 1

    def sample(
        self,
        fn: NoiseFn,
        x_init: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        step_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """step_noise: (noise_draws(), B, ...) the z of every stochastic step in order, instead of drawing
        them from ``generator`` (an exported graph takes all its randomness as an input)."""
        _check_step_noise(step_noise, self.noise_draws(), x_init)
        x = x_init  # (B, ...) pure noise x_T
        betas = self.schedule.betas(x.device)  # (T,)
        alphas = self.schedule.alphas(x.device)  # (T,)
        alpha_bars = self.schedule.alpha_bars(x.device)  # (T,)
        one = torch.ones((), device=x.device)
        b = x.shape[0]
        draw = 0
        for t in reversed(range(self.schedule.steps)):
            ab_t, ab_prev = alpha_bars[t], (alpha_bars[t - 1] if t > 0 else one)
            eps = fn(x, torch.full((b,), t, dtype=torch.long, device=x.device))  # (B, ...)
            x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()  # (B, ...) predicted clean sample
            if self.clip is not None:
                x0 = x0.clamp(-self.clip, self.clip)
            x = (ab_prev.sqrt() * betas[t] * x0 + alphas[t].sqrt() * (1 - ab_prev) * x) / (1 - ab_t)
            if t > 0:
                var = betas[t] if self.variance == "large" else betas[t] * (1 - ab_prev) / (1 - ab_t)
                if step_noise is None:
                    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                else:
                    z = step_noise[draw]  # (B, ...)
                draw += 1
                x = x + var.sqrt() * z
        return x


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM on ``steps`` evenly spaced training timesteps; eta = 0 is deterministic, eta = 1 ~ DDPM.

    The predicted clean sample x̂0 is clipped to ±clip and ε̂ is recomputed from it, which keeps
    the early, very noisy steps (ᾱ_t ≈ 0 at the end of a cosine schedule) from exploding.
    Being deterministic (eta = 0), DDIM exposes the denoiser's errors more than DDPM, whose
    fresh noise at every step absorbs them: prefer DDPM for small/under-trained models.
    """

    schedule: CosineSchedule
    steps: int = 10
    eta: float = 0.0
    clip: float | None = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= self.schedule.steps:
            raise ValueError(
                f"DDIMSampler.steps must be an int in [1, {self.schedule.steps}] (the schedule's training "
                f"steps), got {self.steps!r}"
            )
        if self.eta < 0:
            raise ValueError(f"DDIMSampler.eta must be >= 0, got {self.eta}")
        # Computed once here, eagerly: inside a traced `sample` (ONNX export) `.tolist()` of a tensor
        # would be data-dependent and the Python loop over the timesteps could not be unrolled.
        t_max = self.schedule.steps - 1
        start = t_max if self.steps == self.schedule.steps else max(t_max - 1, 0)
        ts = torch.linspace(start, 0, self.steps).round().long().tolist()
        object.__setattr__(self, "_timesteps", tuple(sorted(set(ts), reverse=True)))

    def timesteps(self) -> list[int]:
        """Descending training timesteps visited, evenly spaced, ending at 0.

        With steps == T every timestep is visited. With fewer steps the walk starts at T - 2, not
        T - 1: the cosine schedule's last level has ᾱ ≈ 6e-6 (almost no signal), where an
        ε-predicting net cannot recover x̂0 (its error is amplified ~400x) and a deterministic
        sampler carries that error to the end (Lin et al. 2023; diffusers' default "leading"
        spacing never visits T - 1 either). The initial N(0, I) noise is an excellent x_{T-2}.
        """
        return list(self._timesteps)  # set in __post_init__

    def noise_draws(self) -> int:
        """Fresh noises drawn after the initial one: none when deterministic (eta = 0), else one per
        step but the last."""
        return len(self.timesteps()) - 1 if self.eta > 0 else 0

    def sample(
        self,
        fn: NoiseFn,
        x_init: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        step_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """step_noise: (noise_draws(), B, ...) the noise of every stochastic step (eta > 0) in order,
        instead of drawing it from ``generator``."""
        _check_step_noise(step_noise, self.noise_draws(), x_init)
        x = x_init  # (B, ...)
        alpha_bars = self.schedule.alpha_bars(x.device)  # (T,)
        one = torch.ones((), device=x.device)
        ts = self.timesteps()
        b = x.shape[0]
        for i, t in enumerate(ts):
            ab_t = alpha_bars[t]
            ab_prev = alpha_bars[ts[i + 1]] if i + 1 < len(ts) else one
            eps = fn(x, torch.full((b,), t, dtype=torch.long, device=x.device))  # (B, ...)
            x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()  # (B, ...) predicted clean sample
            if self.clip is not None:
                x0 = x0.clamp(-self.clip, self.clip)
                eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
            sigma = self.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp_min(0).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
            if self.eta > 0 and i + 1 < len(ts):
                if step_noise is None:
                    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                else:
                    z = step_noise[i]  # (B, ...)
                x = x + sigma * z
        return x


@dataclass(frozen=True)
class EulerSampler:
    """x_{τ+dt} = x_τ + dt · v(x_τ, τ), from τ = 0 (noise) to τ = 1 (data) in ``steps`` equal steps."""

    steps: int = 10
    clip: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"EulerSampler.steps must be a positive int, got {self.steps!r}")

    def sample(
        self, fn: NoiseFn, x_init: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        del generator  # deterministic given the initial noise
        x = x_init  # (B, ...) noise at τ = 0
        dt = 1.0 / self.steps
        b = x.shape[0]
        for i in range(self.steps):
            tau = torch.full((b,), i * dt, device=x.device, dtype=x.dtype)  # (B,)
            x = x + dt * fn(x, tau)  # (B, ...)
        if self.clip is not None:
            x = x.clamp(-self.clip, self.clip)
        return x
