"""The pure-tensor inference graph of an Octo-layout `Policy`, the thing that is traced to ONNX.

`Policy.predict_batch` takes strings (instructions) and draws its sampling noise from a torch
generator; neither exists in an ONNX graph. `ExportGraph` is the same computation with those two
moved to the caller:

    images  uint8 (B, T, Hi, Wi, 3) per camera, as the robot's cameras give them
    state   float32 (B, T, S) in robot units (normalized inside the graph)
    text    word ids (B, L) int64 + mask (B, L) bool      [language "words": the saved vocabulary]
            or frozen text features (B, L, Hd) + mask     [language "minilm": MiniLM run outside]
    noise   float32 (B, K, H, A), only for sampling heads: K = 1 initial noise (flow, DDIM with
            eta = 0) or 1 + one per stochastic step (DDPM: T), in the order `predict_batch` draws them
 -> action  float32 (B, H, A) in robot units (unnormalized inside the graph)

Everything between is the policy's own code (`observation_tokens`, `readout_tokens`, `octo_mask`,
`readout_features`, the transformer blocks, the head's network and sampler), so the graph cannot
drift from `predict_batch`; `export_onnx` checks it against `predict_batch` after every export. Two
pieces are called below their usual entry point because the entry point inspects tensor *values*,
which a traced graph cannot: `LanguageEncoder.forward` checks the id range (the runner's tokenizer
guarantees it) and `BlockTransformer.forward` checks that every mask row has a key (`octo_mask`
keeps the diagonal, so it always has).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlaforge.export import ExportError
from vlaforge.export.onnx import ACTION_OUTPUT, NOISE, TEXT_FEATURES, TEXT_IDS, TEXT_MASK, TensorSpec
from vlaforge.models.heads.samplers import DDIMSampler, DDPMSampler, EulerSampler
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.octo.recipes import RECIPES
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

BATCH = "B"  # the dynamic batch axis in TensorSpec shapes


@dataclass(frozen=True)
class SamplerPlan:
    """How the head turns features into a chunk inside the graph.

    kind: "regression" | "argmax" (one pass), "euler" (flow), "ddpm" | "ddim" (diffusion).
    steps: network evaluations unrolled in the graph. noise_draws: K of the noise input (0: no input).
    requested_steps: the `steps` asked for (None: the head's default); DDIM may visit fewer timesteps
        than requested when rounding merges two. sampler: the sampler the graph runs (None: one pass).
    """

    kind: str
    steps: int
    noise_draws: int
    requested_steps: int | None = None
    sampler: EulerSampler | DDPMSampler | DDIMSampler | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": self.steps,
            "noise_draws": self.noise_draws,
            "requested_steps": self.requested_steps,
        }


def check_exportable(policy: Any) -> Policy:
    """The policy, if this exporter supports it; otherwise an ExportError saying what is supported."""
    if not isinstance(policy, Policy):
        recipe = getattr(getattr(policy, "config", None), "recipe", "?")
        raise ExportError(
            f"{type(policy).__name__} (recipe '{recipe}') cannot be exported to ONNX yet: the pretrained-LM "
            "policies (OpenVLA, OpenVLA-OFT, RT-2, pi0, pi0.5, pi0-FAST) are not supported yet. Supported: the "
            f"Octo-layout Policy ({', '.join(RECIPES)}) with any head (l1, mse, binned, flow, diffusion)."
        )
    c = policy.config
    if c.datasets:
        raise ExportError(
            f"policy was trained on a mixture of datasets {c.datasets}: exporting mixture policies (per-dataset "
            "statistics) is not supported yet"
        )
    if policy.device.type != "cpu":
        raise ExportError(
            f"export runs on the CPU; the policy is on {policy.device}: call policy.cpu() first"
        )
    wrong = sorted({str(p.dtype) for p in policy.parameters() if p.dtype != torch.float32})
    if wrong:
        raise ExportError(f"export needs float32 weights, the policy has {wrong}: call policy.float() first")
    if c.head == "binned" and float(policy.head.temperature) > 0:
        raise ExportError(
            f"binned head with temperature={policy.head.temperature}: only arg-max decoding (temperature 0) "
            "can be exported; sampling bins is not supported yet"
        )
    return policy


def sampler_plan(policy: Policy, steps: int | None = None) -> SamplerPlan:
    """The head's sampling, resolved the way `head.sample(features, steps=steps)` resolves it."""
    head: Any = policy.head
    name = policy.config.head
    if name in ("l1", "mse", "binned"):
        if steps is not None:
            raise ExportError(f"steps={steps}: the {name} head has no sampling steps; omit it")
        return SamplerPlan("argmax" if name == "binned" else "regression", 1, 0)
    if name == "flow":
        euler = EulerSampler(steps or head.steps, clip=head.max_action)
        return SamplerPlan("euler", euler.steps, 1, steps, euler)
    if name == "diffusion":
        kind = head.sampler
        if kind == "ddpm" and steps is not None and steps != head.schedule.steps:
            kind = "ddim"  # as DiffusionHead.sample: DDPM cannot skip steps, DDIM on the same model can
        try:
            smp = head._make_sampler(kind, steps)
        except ValueError as e:
            raise ExportError(f"steps={steps}: {e}") from e
        n_steps = head.schedule.steps if kind == "ddpm" else len(smp.timesteps())
        return SamplerPlan(kind, n_steps, 1 + smp.noise_draws(), steps, smp)
    raise ExportError(f"head '{name}' is not supported by the ONNX exporter")


class ExportGraph(nn.Module):
    """`Policy.predict_batch` as a function of tensors only: see the module docstring for the I/O.

    forward(*tensors) takes the tensors in the order of `self.inputs` and returns actions (B, H, A).
    """

    def __init__(self, policy: Policy, *, steps: int | None = None):
        super().__init__()
        self.policy = check_exportable(policy)
        self.plan = sampler_plan(self.policy, steps)
        self.inputs = input_specs(self.policy, self.plan)
        self.outputs = [
            TensorSpec(
                ACTION_OUTPUT,
                (BATCH, policy.config.chunk, policy.config.action_dim),
                "float32",
                "action chunk in robot units",
            )
        ]

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        p = self.policy
        x = dict(zip(self.input_names, tensors, strict=True))
        batch = {IMAGE_PREFIX + cam: x[IMAGE_PREFIX + cam] for cam in p.camera_names}
        batch[STATE_KEY] = x[STATE_KEY]
        obs = p.observation_tokens(batch)  # (B, T, n_obs, D): images -> stems, normalized state
        text = self._text_tokens(x)  # (B, L, D)
        features = p.encode_tokens(text, x[TEXT_MASK], obs, checked=False)  # (B, D): Policy.encode's forward
        actions = self._sample(features, x.get(NOISE))  # (B, H, A) normalized
        return p.normalizer.unnormalize(ACTION_KEY, actions.float())  # (B, H, A) robot units

    def _text_tokens(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        enc: Any = self.policy.text_encoder
        if self.policy.config.language == "words":
            ids = x[TEXT_IDS]  # (B, L) int64, padding = 0
            return enc.add_positions(enc.embed(ids))  # LanguageEncoder.forward, (B, L, D)
        feats = x[TEXT_FEATURES]  # (B, L, Hd) frozen MiniLM features
        return enc.add_positions(enc.proj(feats))  # PretrainedTextEncoder.forward after the frozen model

    def _sample(self, features: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        head: Any = self.policy.head
        plan = self.plan
        if plan.sampler is None:  # regression / arg-max bins: one deterministic pass
            return head.sample(features)  # (B, H, A)
        assert noise is not None
        b = features.shape[0]
        x_init = noise[:, 0].reshape(b, -1)  # (B, H*A), the first draw of predict_batch
        if plan.kind == "euler":  # FlowHead.sample
            x = plan.sampler.sample(lambda xt, tau: head.net(xt, tau, features), x_init)  # (B, H*A)
            return x.view(b, head.horizon, head.action_dim)
        step_noise = None
        if plan.noise_draws > 1:  # (B, K, H, A) -> (K-1, B, H*A): the z of every stochastic step
            step_noise = noise[:, 1:].reshape(b, plan.noise_draws - 1, -1).transpose(0, 1)
        x = plan.sampler.sample(lambda xt, t: head._eps(xt, t, features), x_init, step_noise=step_noise)
        return x.clamp(-head.max_action, head.max_action).view(
            b, head.horizon, head.action_dim
        )  # DiffusionHead

    def example_inputs(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random tensors shaped and typed like `self.inputs` (tracing and checks; values are arbitrary)."""
        g = torch.Generator().manual_seed(seed)
        vocab = getattr(self.policy.tokenizer, "vocab_size", 2)
        out = []
        for spec in self.inputs:
            shape = tuple(batch if d == BATCH else int(d) for d in spec.shape)
            if spec.dtype == "uint8":
                out.append(torch.randint(0, 256, shape, generator=g, dtype=torch.uint8))
            elif spec.dtype == "int64":
                out.append(torch.randint(0, vocab, shape, generator=g, dtype=torch.int64))
            elif spec.dtype == "bool":
                out.append(torch.rand(shape, generator=g) < 0.5)
            else:
                out.append(torch.randn(shape, generator=g))
        return tuple(out)


def input_specs(policy: Policy, plan: SamplerPlan) -> list[TensorSpec]:
    """Graph inputs in order: cameras (sorted), state, text, noise."""
    c = policy.config
    T = c.history
    specs = [
        TensorSpec(
            IMAGE_PREFIX + cam,
            (BATCH, T, *(int(v) for v in c.cameras[cam]), 3),
            "uint8",
            f"camera '{cam}', RGB channels-last, T={T} steps oldest first",
        )
        for cam in policy.camera_names
    ]
    specs.append(TensorSpec(STATE_KEY, (BATCH, T, c.state_dim), "float32", "proprioception in robot units"))
    L = c.text_max_len
    if c.language == "words":
        specs.append(
            TensorSpec(TEXT_IDS, (BATCH, L), "int64", "word ids of the saved vocabulary, 0 = padding")
        )
    else:
        hidden = int(policy.text_encoder.hidden_size)  # type: ignore[union-attr]
        specs.append(
            TensorSpec(TEXT_FEATURES, (BATCH, L, hidden), "float32", "frozen MiniLM last hidden states")
        )
    specs.append(TensorSpec(TEXT_MASK, (BATCH, L), "bool", "True on real text tokens"))
    if plan.noise_draws:
        specs.append(
            TensorSpec(
                NOISE,
                (BATCH, plan.noise_draws, c.chunk, c.action_dim),
                "float32",
                "standard normal: [:, 0] the initial sample, [:, k] the k-th step noise",
            )
        )
    return specs
