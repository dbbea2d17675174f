import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.errors import CheckpointError
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.types import Observation

HEADS = ["diffusion", "flow", "binned", "l1", "mse"]


def _policy(head="l1", **kw) -> tuple[Policy, TinyDataset]:
    ds = TinyDataset()
    return make_policy("octo-tiny", ds, head=head, **{**TINY, **kw}), ds


def _obs(ds: TinyDataset, i: int = 0) -> list[Observation]:
    item = ds[i]
    return [
        Observation(
            images={
                "front": item["observation.images.front"][t].numpy(),
                "wrist": item["observation.images.wrist"][t].numpy(),
            },
            state=item["observation.state"][t].numpy(),
            instruction=item["task"],
        )
        for t in range(ds.T)
    ]


@pytest.mark.parametrize("head", HEADS)
def test_two_train_steps_and_predict(head):
    torch.manual_seed(0)
    policy, ds = _policy(head)
    batch = default_collate([ds[i] for i in range(8)])
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    for _ in range(2):
        loss, metrics = policy.loss(batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    chunk = policy.predict(_obs(ds))
    assert chunk.actions.shape == (4, 2) and chunk.actions.dtype == np.float32
    assert chunk.control_hz == ds.fps


def test_policy_learns_language_conditioned_actions():
    """Same images for both tasks would be ambiguous; here text + image identify the task: fit it."""
    torch.manual_seed(0)
    policy, ds = _policy("l1", augment=False)
    batch = default_collate([ds[i] for i in range(len(ds))])
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    a0 = policy.predict(_obs(ds, 0)).actions  # task 0 -> +0.5
    a1 = policy.predict(_obs(ds, 1)).actions  # task 1 -> -0.5
    assert abs(a0[:, 0].mean() - 0.5) < 0.15 and abs(a1[:, 0].mean() + 0.5) < 0.15


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_save_load_gives_identical_actions(tmp_path, head):
    policy, ds = _policy(head)
    policy.save(tmp_path / "p")
    loaded = Policy.load(tmp_path / "p")
    a = policy.predict(_obs(ds), generator=torch.Generator().manual_seed(3)).actions
    b = loaded.predict(_obs(ds), generator=torch.Generator().manual_seed(3)).actions
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "p" / "model.safetensors").is_file()
    assert not list((tmp_path / "p").glob("*.pt")) and not list((tmp_path / "p").glob("*.pkl"))


def test_text_without_positions_trains_saves_and_loads(tmp_path):
    policy, ds = _policy("flow", text_positions=False)
    assert not [k for k in policy.state_dict() if "text_encoder.pos_emb" in k]
    loss, _ = policy.loss(default_collate([ds[i] for i in range(4)]))
    loss.backward()
    policy.save(tmp_path / "p")
    loaded = Policy.load(tmp_path / "p")
    assert loaded.config.text_positions is False
    a = policy.predict(_obs(ds), generator=torch.Generator().manual_seed(3)).actions
    b = loaded.predict(_obs(ds), generator=torch.Generator().manual_seed(3)).actions
    np.testing.assert_array_equal(a, b)


def test_cast_for_inference_runs_the_transformer_in_bf16():
    policy, ds = _policy("l1")
    policy.eval()
    ref = policy.predict(_obs(ds)).actions
    assert policy.cast_for_inference(torch.bfloat16) is policy
    assert policy.transformer.dtype == torch.bfloat16
    assert {p.dtype for p in policy.head.parameters()} == {torch.float32}  # encoders and head stay fp32
    actions = policy.predict(_obs(ds)).actions
    assert actions.dtype == ref.dtype and np.isfinite(actions).all()
    assert np.abs(actions - ref).max() < 0.05 * max(1.0, np.abs(ref).max())  # bf16 rounding only
    # the task-prefix cache stores bf16 keys/values and gives the same chunk as the plain cast call
    from vlaforge.inference.prefix_cache import StagedPredictor

    staged, _ = StagedPredictor(policy, prefix_cache=True).predict(_obs(ds))
    np.testing.assert_allclose(staged, actions, atol=1e-2)
    with pytest.raises(ValueError, match="floating dtype"):
        policy.cast_for_inference(torch.int8)


def test_bad_observations_are_named():
    policy, ds = _policy()
    obs = _obs(ds)
    bad = [Observation({"front": o.images["front"]}, o.state, o.instruction) for o in obs]
    with pytest.raises(ValueError, match="missing camera 'wrist'"):
        policy.predict(bad)
    bad = [
        Observation({**o.images, "front": np.zeros((8, 8, 3), np.uint8)}, o.state, o.instruction) for o in obs
    ]
    with pytest.raises(ValueError, match=r"camera 'front': expected uint8 \(16, 16, 3\)"):
        policy.predict(bad)
    bad = [Observation(o.images, np.zeros(5, np.float32), o.instruction) for o in obs]
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(3,\)"):
        policy.predict(bad)
    with pytest.raises(ValueError, match="reads 2 observations"):
        policy.predict(obs * 2)
    batch = default_collate([ds[i] for i in range(4)])
    batch["action"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"batch\['action'\] contains NaN"):
        policy.loss(batch)


def test_unknown_recipe_and_head():
    ds = TinyDataset()
    with pytest.raises(ValueError, match="unknown recipe 'octo-huge'.*octo-tiny"):
        make_policy("octo-huge", ds)
    with pytest.raises(ValueError, match="PolicyConfig.head='wavelet'"):
        make_policy("octo-tiny", ds, head="wavelet")
    assert get_recipe("octo-small").model["width"] == 384 and get_recipe("octo-base").model["width"] == 768


def test_checkpoint_errors(tmp_path):
    policy, _ = _policy()
    d = policy.save(tmp_path / "p")
    # incompatible format version
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["format_version"] = 99
    (tmp_path / "v").mkdir()
    for f in ("model.safetensors", "normalization.safetensors"):
        (tmp_path / "v" / f).write_bytes((d / f).read_bytes())
    (tmp_path / "v" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version=99"):
        Policy.load(tmp_path / "v")
    # truncated weights
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        Policy.load(d)
    (d / "normalization.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing normalization.safetensors"):
        Policy.load(d)
    with pytest.raises(CheckpointError, match="holds no policy"):
        Policy.load(tmp_path)
