"""π0: vlaforge's converted policy against LeRobot 0.3.2's own modeling code (``lerobot.policies.pi0``).

LeRobot's ``PI0Policy`` is built offline at a CPU size with random weights (timm-style init + a seeded
perturbation of every tensor, seed 0), in fp32 (see ``tests/peers/lerobot_pi0.py`` for what is substituted
and why), saved with its own ``save_pretrained`` (LeRobot 0.3.2's checkpoint layout: ``config.json`` +
``model.safetensors`` holding the normalization buffers), converted by ``convert_pi0`` (the function behind
``vlaforge convert-pi0``), and both sides get identical inputs and identical initial noise:

* actions from LeRobot's ``select_action`` (the whole chunk: the first action + its queue) vs
  ``Pi0Policy.sample_actions`` + unnormalize, max abs ≤ 1e-4;
* intermediate tensors: the prefix embeddings (images + prompt, real tokens only) and the velocity at the
  first Euler step (LeRobot ``u = ε − A`` at t = 1, vlaforge ``A − ε`` at τ = 0: opposite signs);
* observations: both cameras; prompts of different lengths in one batch (token padding) with state and
  actions padded to 32; one camera missing; frames of other sizes than the model's 32 px (LeRobot's
  aspect-preserving resize with padding).

Runs where LeRobot 0.3.2 is installed (``make test-peers``); skipped elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.peers.need import need  # noqa: E402

need("lerobot.policies.pi0.modeling_pi0", "LeRobot 0.3.2 (with transformers 4.52)")

from tests.peers.lerobot_pi0 import EXPERT, IMG, SIGLIP, VLM, lerobot_pi0_tiny_fp32, write_tokenizer  # noqa: E402
from vlaforge.convert.pi0 import convert_pi0  # noqa: E402
from vlaforge.policies.lm_base import IMAGE_VALID_SUFFIX  # noqa: E402
from vlaforge.policies.lm_recipes import siglip_spec  # noqa: E402
from vlaforge.policies.octo.policy import Policy  # noqa: E402
from vlaforge.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY  # noqa: E402

CAMS = ("image", "wrist_image")  # LeRobot's LIBERO names; sorted = LeRobot's feature order
S, A, H = 8, 7, 10
TOL = 1e-4
TASKS = ["put the black bowl on the plate", "open the middle drawer of the cabinet"]
FRAMES = {"image": (48, 64), "wrist_image": (24, IMG)}  # the cameras' frames (h, w) in LeRobot's config
SQUARE = {c: (IMG, IMG) for c in CAMS}  # frames already at SigLIP's size


def lerobot_config():
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.pi0.configuration_pi0 import PI0Config

    return PI0Config(
        input_features={
            **{IMAGE_PREFIX + c: PolicyFeature(type=FeatureType.VISUAL, shape=(3, *FRAMES[c])) for c in CAMS},
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(S,)),
        },
        output_features={ACTION_KEY: PolicyFeature(type=FeatureType.ACTION, shape=(A,))},
        chunk_size=H,
        n_action_steps=H,
        resize_imgs_with_padding=(IMG, IMG),
        proj_width=EXPERT.width,
        tokenizer_max_length=16,
        device="cpu",
    )


def dataset_stats() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    return {
        STATE_KEY: {"mean": torch.randn(S, generator=g), "std": 0.5 + torch.rand(S, generator=g)},
        ACTION_KEY: {"mean": torch.randn(A, generator=g), "std": 0.5 + torch.rand(A, generator=g)},
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot-pi0")
    tok = write_tokenizer(root / "tokenizer")
    with lerobot_pi0_tiny_fp32(tok) as modeling_pi0:
        torch.manual_seed(0)
        theirs = modeling_pi0.PI0Policy(lerobot_config(), dataset_stats=dataset_stats())
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        theirs.eval()
        assert all(p.dtype == torch.float32 for p in theirs.parameters())
        theirs.save_pretrained(root / "lerobot")
        ours, reports = {}, {}
        for name, frame_size in (
            ("frames", None),
            ("square", (IMG, IMG)),
        ):  # the config's frames / 32 px ones
            reports[name] = convert_pi0(
                root / "lerobot",
                root / name,
                tokenizer=tok,
                frame_size=frame_size,
                variants={"gemma_2b": VLM, "gemma_300m": EXPERT},  # 0.3.2's config.json names no variant
                vision={
                    "siglip": siglip_spec(
                        IMG,
                        SIGLIP["patch"],
                        SIGLIP["width"],
                        SIGLIP["layers"],
                        SIGLIP["heads"],
                        SIGLIP["mlp"],
                    )
                },
            )
            ours[name] = Policy.load(root / name).eval()
        yield theirs, ours, reports["frames"], modeling_pi0, root


def frames(n: int, hw: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *hw, 3), dtype=torch.uint8, generator=g)  # (B, h, w, 3)


def inputs(
    cams: dict[str, torch.Tensor], tasks: list[str], seed: int, policy_cameras: dict
) -> tuple[dict, dict]:
    """The same observation for both: LeRobot float (B, 3, h, w) in [0, 1]; vlaforge uint8 (B, h, w, 3).
    A camera LeRobot does not get is, for vlaforge, any frame of its size marked missing (``_valid`` False)."""
    B = len(tasks)
    state = torch.randn(B, S, generator=torch.Generator().manual_seed(seed))
    theirs = {IMAGE_PREFIX + c: f.permute(0, 3, 1, 2).float() / 255 for c, f in cams.items()}
    theirs |= {STATE_KEY: state.clone(), "task": list(tasks)}
    ours: dict = {STATE_KEY: state.clone(), "task": list(tasks)}
    for c, hw in policy_cameras.items():
        ours[IMAGE_PREFIX + c] = cams.get(c, frames(B, tuple(hw), 99))
        ours[IMAGE_PREFIX + c + IMAGE_VALID_SUFFIX] = torch.full((B,), c in cams, dtype=torch.bool)
    return theirs, ours


def lerobot_chunk(policy, batch: dict, noise: torch.Tensor) -> torch.Tensor:
    """LeRobot's ``select_action`` from an empty queue: the first action, then the rest of its queue."""
    policy.reset()
    with torch.no_grad():
        first = policy.select_action(dict(batch), noise=noise.clone())  # (B, A)
    return torch.stack([first, *policy._action_queue], dim=1)  # (B, H, A)


CASES = {  # name -> (policy converted for "square" or the config's "frames", cameras sent, tasks)
    "both cameras, one prompt": ("square", SQUARE, TASKS[:1]),
    "both cameras, prompts of two lengths (token padding)": ("square", SQUARE, TASKS),
    "wrist camera missing": ("square", {"image": SQUARE["image"]}, TASKS),
    "48x64 and 24x32 frames (resize with padding)": ("frames", FRAMES, TASKS),
    "48x64 frames, wrist camera missing": ("frames", {"image": FRAMES["image"]}, TASKS[1:]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_actions_and_intermediates_equal_lerobot_pi0(pair, case):
    theirs, converted, _, _, _ = pair
    which, sizes, tasks = CASES[case]
    ours = converted[which]
    B = len(tasks)
    cams = {c: frames(B, hw, seed=i) for i, (c, hw) in enumerate(sizes.items())}
    lr_batch, our_batch = inputs(cams, tasks, seed=3, policy_cameras=ours.config.cameras)
    noise = torch.randn(B, H, 32, generator=torch.Generator().manual_seed(7))
    diffs = {}
    with torch.no_grad():
        # prefix embeddings: LeRobot's embed_prefix on its own prepared inputs
        nb = theirs.normalize_inputs(dict(lr_batch))
        images, img_masks = theirs.prepare_images(nb)
        lang, lang_masks = theirs.prepare_language(nb)
        their_prefix, their_valid, their_att = theirs.model.embed_prefix(images, img_masks, lang, lang_masks)
        our_prefix, our_valid = ours.embed_prefix(our_batch)
        for b in range(B):
            t, o = their_prefix[b][their_valid[b]], our_prefix[b][our_valid[b]]  # (P_real, D)
            assert t.shape == o.shape, (
                f"row {b}: LeRobot has {t.shape[0]} real prefix tokens, vlaforge {o.shape[0]}"
            )
            diffs[f"prefix row {b}"] = (t - o).abs().max().item()
        # velocity at the first Euler step (t = 1 / τ = 0, x = noise)
        state = theirs.prepare_state(nb)
        pm, pa = their_valid, their_att
        from lerobot.policies.pi0.modeling_pi0 import make_att_2d_masks

        _, kv = theirs.model.paligemma_with_expert.forward(
            attention_mask=make_att_2d_masks(pm, pa),
            position_ids=torch.cumsum(pm, dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[their_prefix, None],
            use_cache=True,
            fill_kv_cache=True,
        )
        v_theirs = theirs.model.denoise_step(state, pm, kv, noise.clone(), torch.ones(B))  # ε − A
        velocity, _ = ours._sampling_velocity(our_batch, use_cache=True)
        v_ours = velocity(noise.clone(), torch.zeros(B))  # A − ε
        diffs["velocity, first step"] = (v_ours + v_theirs).abs().max().item()
        # actions, unnormalized, whole chunk
        a_theirs = lerobot_chunk(theirs, lr_batch, noise)
        a_ours = ours.normalizer.unnormalize(
            ACTION_KEY, ours.sample_actions(our_batch, noise=noise.clone())[..., :A]
        )
        assert a_ours.shape == a_theirs.shape == (B, H, A)
        diffs["actions"] = (a_ours - a_theirs).abs().max().item()
        scale = a_theirs.abs().max().item()
    print(f"{case}: max abs differences {json.dumps(diffs)} (actions up to {scale:.2f})")
    for what, d in diffs.items():
        assert d <= TOL, f"{case}: {what} differs by {d:.3g} > {TOL}"


def test_conversion_reads_lerobot_0_3_layout_and_statistics(pair):
    theirs, converted, report, _, _ = pair
    ours = converted["frames"]
    assert ours.config.vision["siglip"]["resize"] == "pad-top-left"  # LeRobot 0.3's resize_with_pad
    assert ours.config.cameras == {c: list(hw) for c, hw in FRAMES.items()}
    assert report.ok and report.layout == "lerobot" and report.policy_class == "pi0"
    assert "buffers" in report.statistics or "normaliz" in report.statistics, report.statistics
    stats = theirs.normalize_inputs.buffer_observation_state
    np.testing.assert_allclose(
        ours.normalizer.normalize(STATE_KEY, torch.ones(1, S)).numpy()[0],
        ((1 - stats.mean) / (stats.std + 1e-8)).detach().numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
