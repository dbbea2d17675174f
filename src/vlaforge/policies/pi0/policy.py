"""`Pi0Policy`: π0 (arXiv 2410.24164) on our DecoderLM + action expert, with the contract of `octo.Policy`.

Sequence for one sample (C cameras of N patches, L prompt tokens left-padded, H chunk)::

    [ image tokens (C*N) | (BOS) prompt (L) | state (1) | noisy actions (H) ]
    `------ prefix: backbone weights ------' `-- suffix: expert weights --'

* image tokens: SigLIP patch features (post-norm) -> Linear -> backbone width (PaliGemma); a camera
  marked missing (``batch["observation.images.<cam>_valid"]`` False) is masked out as keys;
* prompt: the backbone's token embeddings (Gemma's sqrt(D) scale), left padding masked out;
* state: normalized (mean/std), zero-padded to ``max_state_dim`` (32), one Linear -> expert width;
* actions: normalized, zero-padded to ``max_action_dim`` (32); token = ``W3·swish(W2·[W1·a, φ(τ)])``
  with sinusoidal φ; the H expert outputs -> Linear -> velocities (B, H, 32).

Attention: :func:`~vlaforge.models.attention.pi0_blocks` (prefix -> state -> actions, full inside a
block, causal between blocks) plus key padding; positions count real tokens (``cumsum(valid) - 1``).

Flow matching in :mod:`vlaforge.models.heads.flow`'s convention (τ = 0 noise, τ = 1 data, which is
π0's paper convention; openpi flips it): ``A^τ = τ·A + (1 − τ)·ε``, target ``u = A − ε``,
τ = s·(1 − Beta(1.5, 1)) with s = 0.999, MSE over real chunk steps and real action dimensions only
(padded dimensions carry no loss and receive no gradient). Sampling: ``steps`` (10) forward-Euler
steps from noise at τ = 0 to τ = 1.

Prefix cache: the prefix *and the state token* never attend to the actions, so ``predict`` runs
them once per chunk (backbone on the prefix, expert on the state, joint attention) into a
:class:`~vlaforge.models.lm.KVCache`; every Euler step then runs only the expert on the H action
tokens against the cached keys/values (``cache.crop`` back to the prefix before each step).
``use_cache=False`` recomputes the whole joint sequence at every step (reference path, benchmarks).

Checkpoints: ``config.json`` (``policy_class: "pi0"``, config, normalization, tokenizer) +
``model.safetensors`` + ``normalization.safetensors`` (+ ``tokenizer.json`` for HF tokenizers),
written and read by :class:`~vlaforge.policies.lm_base.LMPolicyMethods` (shared with ``VLAPolicy``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.attention import apply_key_padding, build_attention_mask, pi0_blocks
from vlaforge.models.heads.flow_matching import FlowMatching
from vlaforge.models.lm import DecoderLM, KVCache, LMConfig, load_hf_checkpoint
from vlaforge.models.prompt import PromptTokenizer
from vlaforge.models.time_embedding import sincos_time_embedding
from vlaforge.models.vision import LinearProjector
from vlaforge.models.vision.spec import vision_tower_from_spec
from vlaforge.policies.base import (
    Capabilities,
    action_chunk_targets,
    first_chunk,
    register_policy_class,
    reject_dataset,
)
from vlaforge.policies.lm_base import LMPolicyMethods, on_meta_device
from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.expert import (
    ActionExpert,
    JointTransformer,
    expert_lm_config,
)
from vlaforge.transforms.normalize import Normalizer
from vlaforge.types import ACTION_KEY, STATE_KEY, ActionChunk, Observation

POLICY_CLASS = "pi0"


@register_policy_class
class Pi0Policy(LMPolicyMethods, nn.Module):
    """See the module docstring. Same public contract as `vlaforge.policies.octo.policy.Policy`; the input
    plumbing, `predict` and checkpoint I/O are `LMPolicyMethods` (shared with `VLAPolicy`)."""

    policy_class = POLICY_CLASS
    config_class = Pi0Config
    label = "π0"
    family = POLICY_CLASS
    layout = "pi0"
    head_name = "flow"
    # openpi's gemma_2b_lora + gemma_300m_lora: attention and MLP of the backbone's blocks (rank 16) and
    # of the expert's (rank 32); only the LM weights freeze, vision / projector / projections train.
    capabilities = Capabilities(
        chunking=True,
        batching=True,
        gradient_checkpointing=True,
        rtc="own",
        kv_cache="prefix",
        compile="sampling",
        bf16_weights=True,
        lora_preset={
            "rank": 16,
            "alpha": 16.0,
            "targets": [
                f"transformer.{part}.layers.*.{block}.*"
                for part in ("backbone", "expert")
                for block in ("attn", "mlp")
            ],
            "rank_pattern": {"transformer.expert.*": 32},
            "alpha_pattern": {"transformer.expert.*": 32.0},
            "train_also": ["vision_tower.*", "projector.*", "state_proj.*", "action_*", "time_mlp_*"],
        },
    )

    def __init__(
        self,
        config: Pi0Config,
        normalizer: Normalizer,
        tokenizer: PromptTokenizer,
        *,
        lm_on_meta: bool = False,
    ):
        """lm_on_meta: build the transformer on the meta device (no random init of billions of weights);
        the caller must then load every weight with ``load_state_dict(..., assign=True)``."""
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.tokenizer = tokenizer
        c = config
        lm_cfg = LMConfig(**c.lm)
        self._check_parts(lm_cfg)
        exp_cfg = expert_lm_config(lm_cfg, c.expert_width, c.expert_mlp_dim)
        with on_meta_device(lm_on_meta):
            self.transformer = self._make_transformer(DecoderLM(lm_cfg), exp_cfg)
        D, De = lm_cfg.hidden_size, c.expert_width
        (spec,) = c.vision.values()
        self.vision_tower = vision_tower_from_spec(spec)
        self.projector = LinearProjector(self.vision_tower.width, D)
        self.camera_names = sorted(c.cameras)
        self.n_image_tokens = self.vision_tower.num_patches * len(self.camera_names)
        self._build_action_layers(De)

    # ------------------------------------------------------------------ parts (π0.5 overrides these)
    def _make_transformer(self, backbone: DecoderLM, expert_config: LMConfig) -> JointTransformer:
        """Backbone + expert with joint attention; π0: a plain expert (time concatenated into the tokens)."""
        return JointTransformer(backbone, ActionExpert(expert_config))

    def _build_action_layers(self, width: int) -> None:
        """π0's state token and action-token MLP ``W3·swish(W2·[W1·a, φ(τ)])``, and the velocity output."""
        c = self.config
        self.state_proj = nn.Linear(c.max_state_dim, width)
        self.action_in_proj = nn.Linear(c.max_action_dim, width)  # W1
        self.action_time_mlp_in = nn.Linear(2 * width, width)  # W2 over [W1·a, φ(τ)]
        self.action_time_mlp_out = nn.Linear(width, width)  # W3
        self.action_out_proj = nn.Linear(width, c.max_action_dim)  # expert outputs -> velocities

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.action_in_proj.weight.device

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the joint transformer's layers (backbone and expert) in backward."""
        self.transformer.gradient_checkpointing = enabled

    @property
    def backbone(self) -> DecoderLM:
        """The Gemma backbone (a plain DecoderLM: a PaliGemma language-model checkpoint loads into it)."""
        return self.transformer.backbone

    @property
    def expert(self) -> ActionExpert:
        return self.transformer.expert

    def load_backbone(
        self, directory: str | Path, *, key_prefix: str = "language_model.", config: Any = None
    ) -> None:
        """Load a (PaliGemma) Gemma language model from a local HF checkpoint into the backbone, strictly.

        ``config``: the language model's HF config dict (PaliGemma: ``config.json["text_config"]``);
        default: the directory's own config.json. Shapes must match the recipe's ``lm`` exactly.
        """
        lm = load_hf_checkpoint(directory, key_prefix=key_prefix, config=config, device=self.device)
        if lm.config != self.backbone.config:
            raise ValueError(
                f"checkpoint {directory} holds {lm.config}, the recipe's backbone is {self.backbone.config}"
            )
        self.backbone.load_state_dict(lm.state_dict(), strict=True)

    # ------------------------------------------------------------------ tokens
    def prompt_parts(self, batch: dict[str, Any]) -> tuple[list[str], Callable[[int, str], str]]:
        """The batch's instructions as they enter the prompt, and ``render(i, instruction)`` -> row i's
        prompt (π0: the template around the instruction; π0.5 also writes the state into it)."""
        c = self.config
        texts = batch["task"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [str(t).strip() for t in texts], lambda _, t: c.prompt.format(instruction=t)

    def embed_prefix(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images + (BOS) prompt -> prefix embeddings (B, P, D) and valid mask (B, P)."""
        c = self.config
        texts, render = self.prompt_parts(batch)
        B = len(texts)
        # (B, L), (B, L): the instruction cut to the budget
        ids, text_valid = self.encode_prompts(texts, render)
        if not bool(text_valid.any(dim=1).all()) and c.bos_token_id < 0:
            raise ValueError(f"a prompt encodes to no tokens (instructions {texts}); check the instruction")
        images, image_valid = self.camera_tokens(batch, B)  # (B, C*N, D), (B, C*N)
        parts, valid = [images], [image_valid]
        if c.bos_token_id >= 0:
            bos = torch.full((B, 1), c.bos_token_id, dtype=torch.long, device=self.device)
            parts.append(self.backbone.embed(bos))  # (B, 1, D)
            valid.append(torch.ones(B, 1, dtype=torch.bool, device=self.device))
        parts.append(self.backbone.embed(ids).to(images.dtype))  # (B, L, D)
        valid.append(text_valid)
        return torch.cat(parts, dim=1), torch.cat(valid, dim=1)  # (B, P, D), (B, P)

    def embed_state(self, batch: dict[str, Any], B: int) -> torch.Tensor:
        """Normalized, zero-padded state -> one expert token (B, 1, De)."""
        c = self.config
        state = self.current_state(batch, B)  # (B, S), finite
        s = self.normalizer.normalize(STATE_KEY, state)  # (B, S)
        s = F.pad(s, (0, c.max_state_dim - c.state_dim))  # (B, 32): padded dims are exactly 0
        return self.state_proj(s.to(self.state_proj.weight.dtype)).unsqueeze(1)  # (B, 1, De)

    def embed_actions(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Noisy actions (B, H, 32) at flow time τ (B,) -> action tokens W3·swish(W2·[W1·a, φ(τ)]) (B, H, De)."""
        c = self.config
        a = self.action_in_proj(x)  # (B, H, De)
        phi = sincos_time_embedding(tau, c.expert_width, c.time_min_period, c.time_max_period)  # (B, De)
        phi = phi.to(a.dtype)[:, None].expand_as(a)  # (B, H, De)
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([a, phi], dim=-1))))

    # ------------------------------------------------------------------ masks
    def attention_mask(self, prefix_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prefix valid (B, P) -> joint mask (B, P+1+H, P+1+H) and positions (B, P+1+H).

        pi0_blocks: prefix reads prefix; state reads prefix + state; actions read everything.
        Padded prefix keys are masked out for every query (each padded query still reads itself).
        """
        B, P = prefix_valid.shape
        H = self.config.chunk
        base = build_attention_mask(pi0_blocks(P, 1, H), device=prefix_valid.device)  # (L, L)
        valid = torch.cat(
            [prefix_valid, torch.ones(B, 1 + H, dtype=torch.bool, device=prefix_valid.device)], 1
        )
        return apply_key_padding(base, valid), self._positions(valid)  # positions (B, L): real tokens only

    def action_inputs(self, x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noisy actions (B, H, 32) at τ (B,) -> expert tokens (B, H, De) and the expert's condition
        (π0: None, the time is inside the tokens; π0.5: the adaRMS time features)."""
        return self.embed_actions(x, tau), None

    def _joint(
        self,
        x: torch.Tensor,
        tau: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        *,
        prefix: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """-> (prefix outputs (B, P, D) or None, velocity (B, H, 32)) at x (B, H, 32), τ (B,).

        With ``prefix`` (and π0's ``state`` token): the whole joint sequence (training, uncached
        sampling). With ``cache`` only: the expert on the action tokens against the cached keys/values
        (the mask and positions are then the action rows).
        """
        actions, cond = self.action_inputs(x, tau)  # (B, H, De), (B, De) or None
        H = actions.shape[1]
        if prefix is not None:
            suffix = actions if state is None else torch.cat([state, actions], dim=1)
            out_p, out = self.transformer([prefix, suffix], mask, positions, cache, expert_cond=cond)
            assert out is not None
            out = out[:, -H:]  # (B, H, De): drop the state token
        else:
            out_p, out = self.transformer([None, actions], mask, positions, cache, expert_cond=cond)
            assert out is not None
        return out_p, self.action_out_proj(out.to(self.action_out_proj.weight.dtype)).float()  # (B, H, 32)

    def _velocity(
        self, x: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, **parts: Any
    ) -> torch.Tensor:
        """Velocity (B, H, 32) at x (B, H, 32), τ (B,); parts: `_joint`'s prefix / state / cache. A method of
        its own because `compile_sampling` replaces it (sampling only; `loss` calls `_joint`)."""
        return self._joint(x, tau, mask, positions, **parts)[1]

    # ------------------------------------------------------------------ training
    def _targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> normalized actions zero-padded to (B, H, 32), loss mask (B, H, 32) (real steps and dims)."""
        c = self.config
        actions = action_chunk_targets(batch, c.chunk, c.action_dim, self.device)  # (B, H, A)
        B, H, A = actions.shape
        actions = self.normalizer.normalize(ACTION_KEY, actions)  # (B, H, A)
        keep = torch.ones(B, H, dtype=torch.bool, device=self.device)
        pad = batch.get(f"{ACTION_KEY}_is_pad")
        if pad is not None:
            keep = ~pad.to(self.device).bool().reshape(B, H)
        dims = torch.arange(c.max_action_dim, device=self.device) < A  # (32,) real dims
        given = batch.get("action_dim_mask")
        if given is not None:  # (B, A) or (A,): a dataset's own padded dimensions
            g = given.to(self.device).bool().reshape(-1, A)
            dims = dims[None] & F.pad(g, (0, c.max_action_dim - A))  # (B|1, 32)
        mask = keep[:, :, None] & dims.reshape(-1, 1, c.max_action_dim)  # (B, H, 32)
        return F.pad(actions, (0, c.max_action_dim - A)), mask

    def loss(
        self, batch: dict[str, Any], *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        actions, mask = self._targets(batch)  # (B, H, 32), (B, H, 32)
        B = actions.shape[0]
        prefix, valid = self.embed_prefix(batch)  # (B, P, D), (B, P)
        state = self.embed_state(batch, B)  # (B, 1, De)
        attn, positions = self.attention_mask(valid)
        # τ (B,), ε (B, H, 32), A^τ (B, H, 32); padded dims: noise only, as at sampling
        tau, noise, x_tau = self.flow.interpolate(actions, generator)
        # _joint, not _velocity: compile_sampling() may replace _velocity for inference only
        _, v = self._joint(x_tau, tau, attn, positions, prefix=prefix, state=state.to(prefix.dtype))
        loss = self.flow.loss(v, actions, noise, mask.float())  # target u = A − ε
        return loss, {"loss": float(loss.detach())}

    @property
    def flow(self) -> FlowMatching:
        """The flow-matching math (`models/heads/flow_matching.py`, shared with Octo's flow head)."""
        return FlowMatching(self.config.time_alpha, self.config.time_s)

    # ------------------------------------------------------------------ inference
    def sample_actions(
        self,
        batch: dict[str, Any],
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        use_cache: bool = True,
        guidance: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    ) -> torch.Tensor:
        """Normalized, padded actions (B, H, 32) by Euler integration from noise (τ = 0) to τ = 1.

        noise: the initial (B, H, 32) noise (default: drawn from ``generator``).
        use_cache: run prefix + state once into a KV cache and only the expert per step (default), or
            recompute the whole joint sequence at every step.
        guidance: RTC inpainting ``(target (B, H, 32) normalized, weights (B|1, H, 32), β)``: ΠGDM guidance
            toward the target as in :class:`~vlaforge.models.heads.flow.FlowHead` (needs autograd).
        """
        c = self.config
        n_steps = steps or c.steps
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"steps must be a positive int, got {n_steps!r}")
        velocity, B = self._sampling_velocity(batch, use_cache)
        shape = (B, c.chunk, c.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be (B, H, {c.max_action_dim}) = {shape}, got {tuple(noise.shape)}")
        x = noise.to(self.device).float()  # (B, H, 32) at τ = 0
        return self.flow.sample(velocity, x, n_steps, guidance=guidance)  # (B, H, 32)

    def _sampling_velocity(
        self, batch: dict[str, Any], use_cache: bool
    ) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]:
        """Everything before the Euler steps -> (velocity(x (B, H, 32), τ (B,)) -> (B, H, 32), B).

        π0: with ``use_cache`` the prefix and the state token run once into a KV cache and each call runs
        the expert on the action tokens only; without it each call recomputes the whole joint sequence.
        """
        c = self.config
        prefix, valid = self.embed_prefix(batch)  # (B, P, D), (B, P)
        B, P = valid.shape
        state = self.embed_state(batch, B).to(prefix.dtype)  # (B, 1, De)
        mask, positions = self.attention_mask(valid)  # (B, L, L), (B, L)
        if use_cache:
            kvh, hd = self.backbone.config.num_kv_heads, self.backbone.config.head_dim
            cache = KVCache(
                self.backbone.config.num_layers,
                B,
                P + 1 + c.chunk,
                kvh,
                hd,
                dtype=self.transformer.dtype,
                device=self.device,
            )
            self._fill_cache(prefix, state, mask[:, : P + 1, : P + 1], positions[:, : P + 1], cache)
            n_cached = cache.length  # P + 1

            def velocity(xt: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
                cache.crop(n_cached)  # overwrite the previous step's action keys/values
                return self._velocity(xt, tau, mask[:, P + 1 :], positions[:, P + 1 :], cache=cache)

        else:

            def velocity(xt: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
                return self._velocity(xt, tau, mask, positions, prefix=prefix, state=state)

        return velocity, B

    def _fill_cache(
        self,
        prefix: torch.Tensor,
        state: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
    ) -> None:
        """Prefix (B, P, D) and state (B, 1, De) through backbone and expert into ``cache`` (keys/values only)."""
        self.transformer([prefix, state], mask, positions, cache)

    def cast_for_inference(self, dtype: torch.dtype = torch.bfloat16) -> Pi0Policy:
        """Cast the vision tower, the projector and the joint transformer (nearly every weight) to ``dtype``.

        How openpi and LeRobot run π0 (bfloat16): half the memory (a 3.3B π0 in 6.6 GB) and, on GPUs and
        on CPUs with AVX512-BF16 / AMX, faster matmuls. The state and action projections, the time MLP,
        the normalizer and the Euler integration stay float32; actions differ from the float32 policy by
        bf16 rounding. Meant for inference: train in float32 (or under autocast). Returns self.
        """
        if not dtype.is_floating_point:
            raise ValueError(f"cast_for_inference: a floating dtype is needed, got {dtype}")
        for module in (self.vision_tower, self.projector, self.transformer):
            module.to(dtype)
        return self

    # (object attribute, method name) pairs that ``compile_sampling`` replaces for one instance
    _SAMPLING_COMPILE_TARGETS = (("vision_tower", "encode"), ("", "_velocity"), ("", "_fill_cache"))

    def compile_sampling(self, enabled: bool = True, *, mode: str | None = None) -> Pi0Policy:
        """``torch.compile`` the networks that sampling runs per chunk (or switch back); returns self.

        Replaces, for this instance, the vision tower's ``encode`` (preprocessing + SigLIP), the
        per-Euler-step velocity network (the expert against the KV cache, or the whole joint sequence with
        ``use_cache=False``) and the prefix pass into the cache with inductor-compiled versions (static
        shapes); weights stay shared with the eager modules (``state_dict`` is unchanged). A robot loop
        calls with one batch shape, so each compiles once on the first chunk (10-60 s on a CPU) and
        afterwards runs fused kernels instead of one Python dispatch per operation — most of an Euler
        step at CPU sizes (``benchmarks/bench_pi0_cache.py --compile``). Training is unaffected: ``loss``
        calls the eager modules. Actions match the eager path to float tolerance (inductor reorders
        reductions). ``compile_sampling(False)`` restores the eager methods and keeps the compiled ones
        for switching back on without recompiling (``vlaforge bench`` alternates the two this way).
        """
        compiled = self.__dict__.get("_compiled_sampling")
        if enabled and (compiled is None or compiled[0] != mode):
            fns = []
            for owner, method in self._SAMPLING_COMPILE_TARGETS:
                obj = getattr(self, owner) if owner else self
                fns.append(torch.compile(getattr(type(obj), method).__get__(obj), dynamic=False, mode=mode))
            compiled = (mode, tuple(fns))
            self.__dict__["_compiled_sampling"] = compiled  # a plain attribute: not a module, not saved
        for i, (owner, method) in enumerate(self._SAMPLING_COMPILE_TARGETS):
            obj = getattr(self, owner) if owner else self
            if enabled:
                obj.__dict__[method] = compiled[1][i]  # type: ignore[index]
            else:
                obj.__dict__.pop(method, None)  # the class's eager method again
        return self

    @property
    def sampling_compiled(self) -> bool:
        """Whether ``compile_sampling()`` is on for this instance."""
        return "_velocity" in self.__dict__

    @torch.inference_mode()
    def predict_batch(
        self,
        batch: dict[str, Any],
        *,
        dataset: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Batched inference: actions (B, H, A) in robot units (real action dimensions only)."""
        reject_dataset(dataset)
        with self.evaluating():
            x = self.sample_actions(batch, steps=steps, generator=generator, use_cache=use_cache)
            return self.normalizer.unnormalize(ACTION_KEY, x[..., : self.config.action_dim].float())

    def predict_rtc(
        self,
        observations: Observation | Sequence[Observation],
        *,
        prefix: np.ndarray,
        weights: np.ndarray,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        guidance_clip: float = 5.0,
    ) -> ActionChunk:
        """Real-time chunking (`vlaforge.runtime.rtc`): the chunk inpainted toward ``prefix``.

        prefix: (H, A) robot-unit previous actions aligned to now; weights: (H,) in [0, 1]
        (``rtc_weights``). Entries with weight 1 are returned exactly; weight 0 everywhere = ``predict``.
        """
        c = self.config
        H, A = c.chunk, c.action_dim
        prev = torch.as_tensor(np.asarray(prefix, dtype=np.float32), device=self.device)
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=self.device)
        if tuple(prev.shape) != (H, A):
            raise ValueError(
                f"predict_rtc: prefix must be (H, A) = ({H}, {A}) robot-unit actions, got {tuple(prev.shape)}"
            )
        if tuple(w.shape) != (H,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any() | (w > 1).any()):
            raise ValueError(f"predict_rtc: weights must be (H,) = ({H},) in [0, 1], got {w.tolist()}")
        if not bool(torch.isfinite(prev[w > 0]).all()):
            raise ValueError("predict_rtc: prefix holds NaN/Inf where weights > 0")
        batch = self.observations_to_batch(observations)
        target = F.pad(
            self.normalizer.normalize(ACTION_KEY, prev[None]), (0, c.max_action_dim - A)
        )  # (1, H, 32)
        wfull = torch.zeros(1, H, c.max_action_dim, device=self.device)
        wfull[..., :A] = w[None, :, None]  # padded dims: unguided
        # not inference_mode: the guidance takes a backward pass through the expert
        with self.evaluating(), torch.no_grad():
            x = self.sample_actions(
                batch, steps=steps, generator=generator, guidance=(target, wfull, guidance_clip)
            )
            out = self.normalizer.unnormalize(ACTION_KEY, x[..., :A].float())  # (1, H, A)
            out = torch.where((w >= 1)[None, :, None], prev[None], out)  # frozen entries exactly
        return first_chunk(out, c.fps, rtc=True)
