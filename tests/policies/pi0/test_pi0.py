"""π0 (pi0-tiny): joint attention of backbone + action expert, flow matching, prefix KV cache, contract."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.models.lm import DecoderLM, save_hf_checkpoint
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pi0 import make_pi0_policy
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train
from vlaforge.types import Observation

CHUNK = 8


def _policy(n: int = 8, **overrides) -> tuple[Pi0Policy, TinyDataset]:
    torch.manual_seed(0)
    ds = TinyDataset(n=n, history=1, chunk=CHUNK)
    return make_pi0_policy("pi0-tiny", ds, **overrides), ds


def _batch(ds: TinyDataset, n: int = 4) -> dict:
    return default_collate([ds[i] for i in range(n)])


def _obs(task: int) -> Observation:
    img = np.full((16, 16, 3), 40 + 150 * task, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), TASKS[task]
    )


def _joint_outputs(policy: Pi0Policy, batch: dict, actions: torch.Tensor, state_shift: float = 0.0):
    """One full joint pass -> (prefix outputs (B, P, D), state output (B, De), action outputs (B, H, De))."""
    prefix, valid = policy.embed_prefix(batch)
    state = policy.embed_state(batch, prefix.shape[0]) + state_shift
    tokens = policy.embed_actions(actions, torch.full((prefix.shape[0],), 0.3))
    mask, pos = policy.attention_mask(valid)
    out_p, out_s = policy.transformer([prefix, torch.cat([state, tokens], 1)], mask, pos)
    return out_p, out_s[:, 0], out_s[:, 1:]


def test_joint_attention_follows_the_three_block_rule():
    policy, ds = _policy()
    batch = _batch(ds)
    _, valid = policy.embed_prefix(batch)
    P, H = valid.shape[1], CHUNK
    mask, _ = policy.attention_mask(valid)  # (B, P+1+H, P+1+H)
    real = valid[0]
    assert not mask[:, :P, P:].any()  # the prefix never sees state or actions
    assert not mask[:, P, P + 1 :].any()  # the state never sees the actions
    assert mask[:, P + 1 :, P:].all()  # actions see the state and every action
    assert (
        mask[0, P + 1 :, :P][:, real].all() and not mask[0, P + 1 :, :P][:, ~real].any()
    )  # ... and real prefix keys
    assert (
        mask[0, P, :P][real].all() and mask[0, :P, :P][real][:, real].all()
    )  # state and prefix read the prefix
    # Functionally: changing the actions changes neither prefix nor state outputs; changing the state
    # leaves the prefix unchanged but moves the actions.
    with torch.no_grad():
        a = torch.randn(4, H, 32)
        p0, s0, x0 = _joint_outputs(policy, batch, a)
        p1, s1, x1 = _joint_outputs(policy, batch, a + torch.randn_like(a))
        p2, s2, x2 = _joint_outputs(policy, batch, a, state_shift=1.0)
    torch.testing.assert_close(p1, p0, rtol=0, atol=1e-6)
    torch.testing.assert_close(s1, s0, rtol=0, atol=1e-6)
    assert not torch.allclose(x1, x0, atol=1e-3)
    torch.testing.assert_close(p2, p0, rtol=0, atol=1e-6)
    assert not torch.allclose(s2, s0, atol=1e-3) and not torch.allclose(x2, x0, atol=1e-3)


def test_prefix_pass_is_the_backbone_decoder():
    """A prefix-only joint pass equals DecoderLM.forward with the same embeddings, mask and positions."""
    policy, ds = _policy()
    with torch.no_grad():
        prefix, valid = policy.embed_prefix(_batch(ds))
        mask, pos = policy.attention_mask(valid)
        P = prefix.shape[1]
        out_p, out_s = policy.transformer([prefix, None], mask[:, :P, :P], pos[:, :P])
        ref = policy.backbone(inputs_embeds=prefix, attention_mask=mask[:, :P, :P], position_ids=pos[:, :P])
    assert out_s is None and isinstance(policy.backbone, DecoderLM)
    torch.testing.assert_close(out_p, ref.hidden_states, rtol=0, atol=1e-6)


def test_cached_and_uncached_sampling_agree():
    policy, ds = _policy()
    batch = _batch(ds)
    with torch.no_grad():
        noise = torch.randn(4, CHUNK, 32, generator=torch.Generator().manual_seed(1))
        cached = policy.sample_actions(batch, noise=noise, use_cache=True)
        uncached = policy.sample_actions(batch, noise=noise, use_cache=False)
        other = policy.sample_actions(batch, noise=torch.randn_like(noise), use_cache=True)
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-5)
    assert not torch.allclose(cached, other, atol=1e-3)  # the sample really depends on the noise
    a = policy.predict_batch(batch, generator=torch.Generator().manual_seed(3))
    b = policy.predict_batch(batch, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert a.shape == (4, CHUNK, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_padded_action_dims_carry_no_loss_gradient():
    policy, ds = _policy()
    loss, metrics = policy.loss(_batch(ds), generator=torch.Generator().manual_seed(0))
    loss.backward()
    g_w, g_b = policy.action_out_proj.weight.grad, policy.action_out_proj.bias.grad  # (32, De), (32,)
    assert torch.isfinite(loss) and metrics["loss"] > 0
    assert g_w[2:].abs().max() == 0 and g_b[2:].abs().max() == 0  # dims 2..31 are padding
    assert g_w[:2].abs().max() > 0 and g_b[:2].abs().max() > 0
    # The loss does not change when the padded outputs are arbitrary.
    with torch.no_grad():
        policy.action_out_proj.bias[2:] += 100.0
    loss2, _ = policy.loss(_batch(ds), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss2, loss)


def test_missing_camera_is_masked_out():
    policy, ds = _policy()
    batch = _batch(ds)
    batch["observation.images.wrist_valid"] = torch.zeros(4, dtype=torch.bool)
    changed = {
        **batch,
        "observation.images.wrist": torch.randint(
            0, 255, batch["observation.images.wrist"].shape, dtype=torch.uint8
        ),
    }
    noise = torch.randn(4, CHUNK, 32)
    with torch.no_grad():
        a = policy.sample_actions(batch, noise=noise)
        b = policy.sample_actions(changed, noise=noise)
        c = policy.sample_actions(
            {**changed, "observation.images.wrist_valid": torch.ones(4, dtype=torch.bool)}, noise=noise
        )
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-4)


def test_two_step_train_save_load_identical_predictions(tmp_path):
    policy, ds = _policy()
    cfg = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, num_workers=0
    )
    res = train(policy, ds, cfg, tmp_path / "run", progress=False)
    assert res.steps == 2 and np.isfinite(res.final_loss)
    loaded = Policy.load(tmp_path / "run")  # dispatches on config.json's policy_class
    assert isinstance(loaded, Pi0Policy) and loaded.config == policy.config
    for task in (0, 1):
        a = policy.predict(_obs(task), generator=torch.Generator().manual_seed(task))
        b = loaded.predict(_obs(task), generator=torch.Generator().manual_seed(task))
        assert a.actions.shape == (CHUNK, 2)
        np.testing.assert_array_equal(a.actions, b.actions)
    meta = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert meta["policy_class"] == "pi0" and meta["config"]["recipe"] == "pi0-tiny"


def test_rtc_inpainting_freezes_and_defaults_to_predict():
    from vlaforge.runtime.rtc import predict_rtc, rtc_weights, supports_rtc

    policy, _ = _policy()
    assert supports_rtc(policy)
    prev = np.linspace(-0.4, 0.4, CHUNK * 2, dtype=np.float32).reshape(CHUNK, 2)
    free = predict_rtc(
        policy, _obs(0), prev, np.zeros(CHUNK, np.float32), generator=torch.Generator().manual_seed(5)
    )
    plain = policy.predict(_obs(0), generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(free.actions, plain.actions, rtol=0, atol=1e-5)
    w = rtc_weights(CHUNK, 2, 4)
    guided = predict_rtc(policy, _obs(0), prev, w, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(guided.actions[:2], prev[:2])  # frozen actions exactly
    assert guided.info["rtc"] and np.isfinite(guided.actions).all()
    with pytest.raises(ValueError, match="prefix must be"):
        policy.predict_rtc(_obs(0), prefix=prev[:3], weights=w)


def test_paligemma_style_backbone_checkpoint_loads_unchanged(tmp_path):
    policy, _ = _policy()
    torch.manual_seed(1)
    lm = DecoderLM(policy.backbone.config)
    save_hf_checkpoint(lm, tmp_path / "gemma")
    policy.load_backbone(tmp_path / "gemma", key_prefix="")
    for k, v in lm.state_dict().items():
        torch.testing.assert_close(policy.backbone.state_dict()[k], v, rtol=0, atol=0)


def test_recipe_definitions_and_errors():
    ds = TinyDataset(n=4, history=1, chunk=CHUNK)
    with pytest.raises(ValueError, match="fixed action head"):
        make_policy("pi0-tiny", ds, head="diffusion")
    with pytest.raises(ValueError, match="tokenizer_dir"):
        make_policy("pi0", ds)  # full size: needs the checkpoint's tokenizer (never built in tests)
    full = get_recipe("pi0").model
    assert full["chunk"] == 50 and (full["expert_width"], full["expert_mlp_dim"]) == (1024, 4096)
    assert (full["lm"]["hidden_size"], full["lm"]["num_layers"], full["lm"]["intermediate_size"]) == (
        2048,
        18,
        16384,
    )
    assert (full["lm"]["num_kv_heads"], full["lm"]["head_dim"]) == (1, 256)
    policy, _ = _policy()
    assert list(policy.config.cameras) == ["front", "wrist"] and policy.config.steps == 10
    with pytest.raises(ValueError, match="history"):
        policy.config.replace(history=2)


def test_cli_train_pi0_tiny(tmp_path):
    from vlaforge.cli import main
    from vlaforge.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=12, height=32, width=32)
    args = ["train", "--recipe", "pi0-tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
            "--batch-size", "4", "--workers", "0", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    policy = Policy.load(tmp_path / "run")
    assert isinstance(policy, Pi0Policy)
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"] == 2


def test_bf16_weights_for_inference_match_float32_to_bf16_rounding():
    """cast_for_inference: vision, projector and transformer in bf16 (the KV cache too), the action/state
    projections fp32; the chunk equals the fp32 one to bf16 rounding, cached == uncached."""
    policy, ds = _policy()
    policy.eval()
    with torch.no_grad():  # weights large enough that the chunk is not ~0 (the init is tiny)
        for p in policy.parameters():
            p.normal_(0.0, 0.05)
    batch = _batch(ds)
    noise = torch.randn(4, CHUNK, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fp32 = policy.sample_actions(batch, noise=noise)
        assert policy.cast_for_inference() is policy
        bf16 = policy.sample_actions(batch, noise=noise)
        uncached = policy.sample_actions(batch, noise=noise, use_cache=False)
    assert policy.transformer.dtype == torch.bfloat16 == next(policy.vision_tower.parameters()).dtype
    assert policy.action_out_proj.weight.dtype == torch.float32 and bf16.dtype == torch.float32
    assert fp32.abs().max() > 0.1  # a chunk worth comparing
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0.02 * float(fp32.abs().max()))
    torch.testing.assert_close(uncached, bf16, rtol=0, atol=0.02 * float(fp32.abs().max()))
    with pytest.raises(ValueError, match="floating dtype"):
        policy.cast_for_inference(torch.int8)


def test_compile_sampling_is_a_switch():
    """Creating the compiled callables is lazy (nothing is compiled until a call); switching off restores
    the class's eager methods and switching on again reuses the same compiled callables."""
    policy, _ = _policy()
    keys = sorted(policy.state_dict())
    assert not policy.sampling_compiled
    assert policy.compile_sampling() is policy and policy.sampling_compiled
    velocity, encode = policy._velocity, policy.vision_tower.encode
    policy.compile_sampling(False)
    assert not policy.sampling_compiled
    assert "encode" not in policy.vision_tower.__dict__ and "_fill_cache" not in policy.__dict__
    policy.compile_sampling()
    assert policy._velocity is velocity and policy.vision_tower.encode is encode  # no recompilation
    assert sorted(policy.state_dict()) == keys and "_compiled_sampling" not in dict(policy.named_modules())


@pytest.mark.slow  # inductor compiles three graphs: ~30-60 s on a 2-core CPU
def test_compiled_sampling_matches_eager_and_leaves_training_eager():
    policy, ds = _policy()
    policy.eval()
    batch = _batch(ds)
    noise = torch.randn(4, CHUNK, 32, generator=torch.Generator().manual_seed(1))
    keys = sorted(policy.state_dict())
    with torch.inference_mode():
        eager = policy.sample_actions(batch, noise=noise, use_cache=True)
        assert policy.compile_sampling() is policy
        compiled = policy.sample_actions(batch, noise=noise, use_cache=True)
        compiled_uncached = policy.sample_actions(batch, noise=noise, use_cache=False)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
    torch.testing.assert_close(compiled_uncached, eager, rtol=0, atol=1e-5)
    with torch.inference_mode():
        policy.compile_sampling(False)
        torch.testing.assert_close(policy.sample_actions(batch, noise=noise), eager, rtol=0, atol=0)
        policy.compile_sampling()
        torch.testing.assert_close(policy.sample_actions(batch, noise=noise), compiled, rtol=0, atol=0)
    assert sorted(policy.state_dict()) == keys  # the weights are the eager modules' own
    policy.train()
    loss, _ = policy.loss(batch)  # training runs the eager modules: the gradient reaches every part
    loss.backward()
    assert policy.action_out_proj.weight.grad is not None
    assert all(p.grad is not None for p in policy.vision_tower.parameters() if p.requires_grad)
