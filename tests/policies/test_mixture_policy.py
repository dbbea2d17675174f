"""Cross-embodiment policies: per-dataset statistics, masked padded dims, dataset choice at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TINY
from tests.synthetic import write_libero_like
from vlaforge.data import Dataset, MixtureDataset, write_synthetic_dataset
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import make_mixture_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train
from vlaforge.transforms.normalize import Normalizer, pad_stats
from vlaforge.types import Observation


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixpol")
    a = write_synthetic_dataset(d / "a", episodes=3, length=10, state_dim=4, action_dim=4, tasks=("pick",))
    b = write_synthetic_dataset(
        d / "b", episodes=2, length=8, state_dim=7, action_dim=2, tasks=("push",), seed=1
    )
    parts = {"a": Dataset(a, history=2, chunk=4), "b": Dataset(b, history=2, chunk=4)}
    return MixtureDataset(parts, {"a": 3.0, "b": 1.0}, seed=0)


def _policy(mix, head="l1") -> Policy:
    torch.manual_seed(0)
    return make_mixture_policy("octo-tiny", mix, head=head, augment=False, **TINY)


def _batch(mix, n=8) -> dict:
    # The first rows of the shuffled epoch hold both datasets (checked below).
    return default_collate([mix[i] for i in range(n)])


def _obs(mix, name: str) -> list[Observation]:
    item = mix.datasets[name][3]
    return [
        Observation(
            images={c: item[f"observation.images.{c}"][t].numpy() for c in ("corner", "gripper")},
            state=item["observation.state"][t].numpy(),
            instruction=item["task"],
        )
        for t in range(2)
    ]


def test_config_and_normalizer_hold_every_dataset(mix):
    policy = _policy(mix)
    c = policy.config
    assert (c.state_dim, c.action_dim) == (7, 4)
    assert c.datasets == ["a", "b"] and c.dataset_dims == {"a": [4, 4], "b": [7, 2]}
    assert policy.normalizer.datasets == ["a", "b"]
    assert sorted(policy.normalizer.features) == [
        "action@a",
        "action@b",
        "observation.state@a",
        "observation.state@b",
    ]
    assert c.dataset_spec("b").action_dim == 2 and c.spec.action_dim == 4


def test_each_sample_uses_its_own_datasets_statistics(mix):
    norm = _policy(mix).normalizer
    x = torch.randn(6, 4, 4)  # (B, H, A)
    names = ["a", "b", "a", "b", "b", "a"]
    y = norm.normalize("action", x, names)
    for i, n in enumerate(names):
        assert torch.equal(y[i], norm.normalize("action", x[i], n))
    assert not torch.equal(norm.normalize("action", x, "a"), norm.normalize("action", x, "b"))
    assert torch.allclose(norm.unnormalize("action", y, names), x, atol=1e-5)
    # Padded dims of b have neutral statistics: zeros stay zeros.
    assert torch.all(norm.normalize("action", torch.zeros(2, 4), "b")[:, 2:] == 0)


@pytest.mark.parametrize("head", ["l1", "binned"])
def test_padded_dims_carry_no_loss(mix, head):
    policy = _policy(mix, head)
    batch = _batch(mix)
    assert set(batch["dataset_name"]) == {"a", "b"}
    loss, _ = policy.loss(batch)

    garbage = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    is_b = torch.tensor([n == "b" for n in batch["dataset_name"]])
    garbage["action"][is_b, :, 2:] = 1e3 * torch.randn(int(is_b.sum()), 4, 2)  # padded action dims
    is_a = ~is_b
    garbage["observation.state"][is_a, :, 4:] = 50.0  # padded state dims
    assert torch.equal(policy.loss(garbage)[0], loss)
    del garbage["action_dim_mask"]  # the policy knows each dataset's real size on its own
    assert torch.equal(policy.loss(garbage)[0], loss)

    if head == "binned":
        return  # targets are discretized: no gradient flows to them
    # And the gradient w.r.t. padded action targets is exactly zero.
    actions = batch["action"].clone().requires_grad_(True)
    policy.loss({**batch, "action": actions})[0].backward()
    assert torch.all(actions.grad[is_b][:, :, 2:] == 0)
    assert actions.grad[is_b][:, :, :2].abs().sum() > 0


def test_a_mixture_batch_needs_dataset_names(mix):
    batch = _batch(mix)
    del batch["dataset_name"]
    with pytest.raises(ValueError, match=r"several datasets \['a', 'b'\].*'dataset_name'"):
        _policy(mix).loss(batch)


def test_inference_chooses_statistics_and_size_by_dataset(mix):
    policy = _policy(mix).eval()
    chunk_b = policy.predict(_obs(mix, "b"), dataset="b")
    chunk_a = policy.predict(_obs(mix, "a"), dataset="a")  # a's 4-dim state is padded inside
    assert chunk_b.actions.shape == (4, 2) and chunk_a.actions.shape == (4, 4)

    # The same normalized head output, unnormalized with b's statistics and cut to b's 2 dims.
    batch = policy.observations_to_batch(_obs(mix, "b"), dataset="b")
    with torch.no_grad():
        raw = policy.head.sample(policy.encode(batch))  # (1, H, A_max) normalized
    expected = policy.normalizer.unnormalize("action", raw, "b")[..., :2]
    np.testing.assert_allclose(chunk_b.actions, expected[0].numpy(), rtol=1e-6)

    view = policy.for_dataset("b")
    assert view.spec.action_dim == 2 and view.spec.state_dim == 7
    np.testing.assert_array_equal(view.predict(_obs(mix, "b")).actions, chunk_b.actions)


def test_ambiguous_or_unknown_dataset_is_an_error(mix):
    policy = _policy(mix)
    with pytest.raises(ValueError, match=r"several datasets \['a', 'b'\]: pass dataset=NAME"):
        policy.predict(_obs(mix, "b"))
    with pytest.raises(KeyError, match=r"unknown dataset 'c'; this policy was trained on \['a', 'b'\]"):
        policy.predict(_obs(mix, "b"), dataset="c")
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(4,\)"):
        policy.predict(_obs(mix, "b"), dataset="a")  # b's 7-dim state is not a's
    with pytest.raises(ValueError, match=r"several datasets \['a', 'b'\]"):
        policy.normalizer.unnormalize("action", torch.zeros(1, 4))


def test_checkpoint_round_trips_per_dataset_statistics(mix, tmp_path):
    policy = _policy(mix).eval()
    policy.save(tmp_path / "p")
    loaded = Policy.load(tmp_path / "p")
    assert loaded.config.datasets == ["a", "b"] and loaded.config.dataset_dims == policy.config.dataset_dims
    for key, fn in policy.normalizer.features.items():
        for stat, v in fn.stats.items():
            np.testing.assert_array_equal(loaded.normalizer.features[key].stats[stat], v)
    for name in ("a", "b"):
        np.testing.assert_array_equal(
            loaded.predict(_obs(mix, name), dataset=name).actions,
            policy.predict(_obs(mix, name), dataset=name).actions,
        )


def test_normalizer_combine_and_names_with_slashes():
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    stats = {"action": pad_stats({"mean": x.mean(0), "std": x.std(0), "count": np.array([50])}, 3)}
    one = Normalizer.from_dataset_stats(stats, {"action": "mean_std"})
    both = Normalizer.combine({"lab/arm": one, "sim": one})
    back = Normalizer.from_state(both.describe(), both.state_dict())
    assert back.datasets == ["lab/arm", "sim"]
    np.testing.assert_array_equal(back.features["action@lab/arm"].stats["std"], [*x.std(0), 1.0])
    with pytest.raises(KeyError, match=r"dataset 'real'; datasets with statistics: \['lab/arm', 'sim'\]"):
        back.normalize("action", torch.zeros(3), "real")
    with pytest.raises(ValueError, match="without a name|several datasets"):
        back.normalize("action", torch.zeros(3))


def test_two_training_steps_on_the_mixture(mix, tmp_path):
    policy = _policy(mix, "diffusion")
    cfg = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, num_workers=0
    )
    res = train(policy, mix, cfg, tmp_path / "run", progress=False)
    assert res.steps == 2 and np.isfinite(res.final_loss)
    loaded = Policy.load(tmp_path / "run")
    assert loaded.normalizer.datasets == ["a", "b"]
    assert loaded.predict(_obs(mix, "b"), dataset="b").actions.shape == (4, 2)


def test_a_dataset_with_its_own_camera_names_and_rate_acts_through_its_view(tmp_path):
    """Meta-World-like (corner, gripper; 80 Hz) mapped onto LIBERO-like cameras (image, wrist_image; 20 Hz):
    its view takes the env's own camera names and acts at its own rate, through a save and load."""
    mw = write_synthetic_dataset(tmp_path / "mw", episodes=2, length=8, cameras=("corner", "gripper"), fps=80)
    lib = write_libero_like(tmp_path / "lib")
    mixture = MixtureDataset(
        {"libero": Dataset(lib, history=2, chunk=4), "mt10": Dataset(mw, history=2, chunk=4)},
        cameras={"mt10": {"corner": "image", "gripper": "wrist_image"}},
    )
    torch.manual_seed(0)
    policy = make_mixture_policy("octo-tiny", mixture, head="l1", augment=False, **TINY).eval()
    c = policy.config
    assert sorted(c.cameras) == ["image", "wrist_image"] and c.fps == 20.0
    assert c.dataset_fps == {"mt10": 80.0}
    assert c.dataset_cameras == {"mt10": {"corner": "image", "gripper": "wrist_image"}}
    policy.save(tmp_path / "p")
    loaded = Policy.load(tmp_path / "p")
    view = loaded.for_dataset("mt10")
    assert sorted(view.spec.cameras) == ["corner", "gripper"]
    assert (view.spec.state_dim, view.spec.action_dim, view.spec.fps) == (4, 4, 80.0)
    assert loaded.for_dataset("libero").spec.fps == 20.0

    item = mixture.datasets["mt10"][3]
    own = [
        Observation(
            images={c: item[f"observation.images.{c}"][t].numpy() for c in ("corner", "gripper")},
            state=item["observation.state"][t].numpy(),
            instruction=item["task"],
        )
        for t in range(2)
    ]
    renamed = [
        Observation(
            images={"image": o.images["corner"], "wrist_image": o.images["gripper"]},
            state=o.state,
            instruction=o.instruction,
        )
        for o in own
    ]
    chunk = view.predict(own)
    assert chunk.control_hz == 80.0 and chunk.actions.shape == (4, 4)
    np.testing.assert_array_equal(chunk.actions, policy.predict(renamed, dataset="mt10").actions)
    with pytest.raises(ValueError, match="missing camera 'image'"):
        loaded.predict(own, dataset="mt10")  # the policy itself reads its own camera names
