"""What `vlaforge bench` runs on: a policy (random weights for a recipe, or a checkpoint) and observations.

A recipe is benchmarked without any dataset on disk: `metaworld_embodiment()` is a stand-in with
exactly what `make_policy` reads (features, statistics, fps, task texts), shaped like the Meta-World
data that `vlaforge record` writes (REFERENCE.md): cameras `corner` and `gripper` at 128x128, state =
hand xyz + gripper opening (4), action = delta xyz + gripper effort (4) at 80 Hz. Latency does not
depend on the weights, so random ones measure the same cost as trained ones.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from vlaforge.bench.lm_stages import lm_module
from vlaforge.inference.fastpaths import lm_family
from vlaforge.inference.load import WARMUP_INSTRUCTION
from vlaforge.models.heads.samplers import DDIMSampler
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.policies.registry import recipe_family
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

CAMERAS = ("corner", "gripper")
IMAGE_SIZE = 128
STATE_DIM = 4
ACTION_DIM = 4
FPS = 80.0
TASKS = ("reach the goal position", WARMUP_INSTRUCTION, "push the puck to the goal")
INSTRUCTION = WARMUP_INSTRUCTION  # what `inference.load.example_observations` asks by default


def metaworld_embodiment(image_size: int = IMAGE_SIZE) -> SimpleNamespace:
    """A dataset stand-in for `make_policy`: Meta-World features and plausible statistics, no files."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    features: dict[str, dict[str, Any]] = {
        IMAGE_PREFIX + cam: {"dtype": "video", "shape": [image_size, image_size, 3], "names": None}
        for cam in CAMERAS
    }
    features[STATE_KEY] = {"dtype": "float32", "shape": [STATE_DIM], "names": ["x", "y", "z", "gripper"]}
    features[ACTION_KEY] = {"dtype": "float32", "shape": [ACTION_DIM], "names": ["dx", "dy", "dz", "gripper"]}

    def stats(std: float, dim: int) -> dict[str, np.ndarray]:
        full = lambda v: np.full(dim, v, np.float32)  # noqa: E731
        return {
            "mean": full(0.0), "std": full(std), "min": full(-1.0), "max": full(1.0),
            "q01": full(-1.0), "q99": full(1.0),
        }  # fmt: skip

    return SyntheticEmbodiment(
        features=features,
        stats={STATE_KEY: stats(0.3, STATE_DIM), ACTION_KEY: stats(0.5, ACTION_DIM)},
        fps=FPS,
        meta=SimpleNamespace(tasks=list(TASKS)),
    )


class SyntheticEmbodiment(SimpleNamespace):
    """The dataset stand-in. π0-FAST fits its action tokenizer (BPE over DCT coefficients) on action
    chunks at build time, so items are smooth random trajectories ``{"action": (chunk, A)}``; `chunk`
    is set to the recipe's horizon before building (`build_recipe_policy` does it)."""

    chunk: int = 1
    n_items: int = 64  # enough chunks for a BPE vocabulary; fitting stays well under a second

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(i)
        t = np.linspace(0.0, 1.0, self.chunk)[:, None]  # (H, 1)
        freq, phase = rng.uniform(0.5, 2.0, ACTION_DIM), rng.uniform(0, np.pi, ACTION_DIM)
        return {ACTION_KEY: (0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)}  # (H, A)


def build_recipe_policy(
    recipe: str, head: str | None = None, *, image_size: int | None = None, seed: int = 0
) -> Policy:
    """Random-weight policy of `recipe` for the Meta-World embodiment, in eval mode.

    head: None keeps the policy default (diffusion). image_size: camera size override (tests and quick
    checks); a recipe that resizes its cameras (octo-tiny: 64x64) resizes to min(its size, image_size).
    """
    family = recipe_family(recipe)  # unknown name -> the list of recipes, before anything is built
    size = IMAGE_SIZE if image_size is None else image_size
    if not family.capabilities.head_choice:  # π0 / π0-FAST / OpenVLA / OFT / RT-2: one fixed action head each
        if head is not None:
            raise ValueError(f"recipe '{recipe}' has its own action head; --head applies to the Octo recipes")
        dataset = metaworld_embodiment(size)
        # π0-FAST / π0.5 fit a FAST tokenizer on (chunk, A) action chunks: the recipe's chunk
        dataset.chunk = get_recipe(recipe).model.get("chunk", family.config_class.chunk)  # type: ignore[attr-defined]
        torch.manual_seed(seed)
        try:
            return make_policy(recipe, dataset).eval()
        except ValueError as e:
            raise ValueError(f"recipe '{recipe}' with image size {size}: {e}") from e
    overrides: dict[str, Any] = {"head": head}
    encoder_size = get_recipe(recipe).model.get("encoder_image_size")
    if image_size is not None and encoder_size is not None:
        overrides["encoder_image_size"] = [min(int(encoder_size[0]), size), min(int(encoder_size[1]), size)]
    torch.manual_seed(seed)
    try:
        policy = make_policy(recipe, metaworld_embodiment(size), **overrides)
    except ValueError as e:
        raise ValueError(f"recipe '{recipe}' with image size {size}: {e}") from e
    return policy.eval()


def load_checkpoint_policy(path: str | Path) -> Policy:
    """A trained policy (policy directory or run directory); mixtures are refused with the reason."""
    policy = Policy.load(path)
    if policy.config.datasets:  # every family's config has the field
        raise ValueError(
            f"{path}: this policy was trained on a mixture {policy.config.datasets}; vlaforge bench measures "
            "single-dataset policies (the stage breakdown and prefix cache do not handle per-sample statistics)"
        )
    return policy.eval()


def parameter_counts(policy: Policy) -> dict[str, int]:
    """Parameters per part: encoders (images, state, text, embeddings), transformer, head; ``trainable``:
    those with ``requires_grad`` (the recipes on pretrained parts freeze their Lite0 tower).

    LM policies: vision (tower + projector + FiLM), lm (the decoder LM; π0: LM + action expert), and
    the rest (π0's action / state projections, OFT's action head, proprio projector).
    """
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    total = policy.num_parameters()
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)  # frozen Lite0 excluded
    family = lm_family(policy)
    if family is not None:
        vision = sum(n(m) for m in (getattr(policy, a, None) for a in ("vision_tower", "projector", "film"))
                     if isinstance(m, torch.nn.Module))  # fmt: skip
        lm = n(lm_module(policy, family))
        return {
            "total": total,
            "trainable": trainable,
            "vision": vision,
            "lm": lm,
            "other": total - vision - lm,
        }
    transformer, head = n(policy.transformer), n(policy.head)
    return {
        "total": total,
        "trainable": trainable,
        "encoders": total - transformer - head,
        "transformer": transformer,
        "head": head,
    }


def sampler_steps(policy: Policy, steps: int | None = None) -> tuple[str, int]:
    """(description, network evaluations of the head per chunk), e.g. ("ddpm", 20), ("euler", 10).

    LM policies: π0 ("euler", its integration steps), OFT ("one pass", 1), the token decoders
    ("greedy", the most tokens a chunk can take: H*A action tokens, or π0-FAST's max_decode_tokens).
    """
    family = lm_family(policy)
    if family == "pi0":
        return "euler", steps or policy.config.steps
    if family == "oft":
        return "one pass", 1
    if family == "vla":
        return "greedy", policy.config.n_action_tokens
    if family == "pi0-fast":
        return "greedy (up to)", policy.config.max_decode_tokens
    head: Any = policy.head
    if head.name == "diffusion":
        if head.sampler == "ddpm" and (steps is None or steps == head.schedule.steps):
            return "ddpm", head.schedule.steps
        ddim = DDIMSampler(head.schedule, steps=steps or head.sample_steps)
        return "ddim", len(ddim.timesteps())  # rounding can merge two of the requested steps
    if head.name == "flow":
        return "euler", steps or head.steps
    return "one pass", 1
