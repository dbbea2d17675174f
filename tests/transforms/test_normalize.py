import numpy as np
import pytest
import torch

from vlaforge.transforms.normalize import FeatureNorm, Normalizer


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        "min": x.min(0),
        "max": x.max(0),
        "q01": np.quantile(x, 0.01, axis=0),
        "q99": np.quantile(x, 0.99, axis=0),
    }


@pytest.mark.parametrize("mode", ["mean_std", "quantile", "min_max"])
def test_round_trip_and_range(mode):
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -3.0, 10.0], [0.5, 2.0, 4.0], size=(2000, 3)).astype(np.float32)
    norm = Normalizer.from_dataset_stats({"action": _stats(x)}, {"action": mode})
    t = torch.from_numpy(x)
    y = norm.normalize("action", t)
    if mode == "mean_std":
        assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-4)
        assert torch.allclose(y.std(0, unbiased=False), torch.ones(3), atol=1e-3)
    elif mode == "min_max":
        assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    else:  # 98 % of values fall inside [-1, 1]
        inside = ((y >= -1) & (y <= 1)).float().mean()
        assert 0.96 < inside < 0.999
    assert torch.allclose(norm.unnormalize("action", y), t, atol=1e-4)


def test_mask_leaves_gripper_untouched_and_quantile_clip():
    x = np.stack([np.linspace(-5, 5, 101), np.linspace(-1, 1, 101)], 1).astype(np.float32)
    norm = Normalizer.from_dataset_stats(
        {"action": _stats(x)}, {"action": "quantile"}, masks={"action": np.array([True, False])}, clip=True
    )
    y = norm.normalize("action", torch.tensor([[100.0, 0.7]]))
    assert y[0, 0] == 1.0  # clipped
    assert y[0, 1] == pytest.approx(0.7)  # unnormalized dimension passes through


def test_missing_statistic_is_an_error():
    with pytest.raises(ValueError, match="needs statistic 'q01'"):
        FeatureNorm("quantile", {"mean": np.zeros(2), "std": np.ones(2)})
    with pytest.raises(ValueError, match="no entry for 'observation.state'"):
        Normalizer.from_dataset_stats(
            {"action": {"mean": [0.0], "std": [1.0]}}, {"observation.state": "mean_std"}
        )
    norm = Normalizer.from_dataset_stats({"action": {"mean": [0.0], "std": [1.0]}}, {"action": "mean_std"})
    with pytest.raises(KeyError, match="no normalization statistics for 'state'"):
        norm.normalize("state", torch.zeros(1))
    with pytest.raises(ValueError, match="last dimension is 3"):
        norm.normalize("action", torch.zeros(2, 3))


def test_serialization_round_trip():
    x = np.random.default_rng(1).normal(size=(100, 4)).astype(np.float32)
    norm = Normalizer.from_dataset_stats(
        {"action": _stats(x)},
        {"action": "quantile"},
        masks={"action": np.array([1, 1, 1, 0], bool)},
        clip=True,
    )
    back = Normalizer.from_state(norm.describe(), norm.state_dict())
    t = torch.from_numpy(x) * 3
    assert torch.equal(norm.normalize("action", t), back.normalize("action", t))


def test_constant_dimension_stays_finite():
    x = np.stack([np.linspace(0, 1, 50), np.full(50, 0.3)], 1).astype(np.float32)
    norm = Normalizer.from_dataset_stats({"s": _stats(x)}, {"s": "mean_std"})
    y = norm.normalize("s", torch.tensor([[0.5, 0.31]]))
    assert torch.isfinite(y).all() and abs(float(y[0, 1])) <= 10.0 + 1e-4


def test_non_vector_statistics_are_ignored_and_survive_save_load():
    """Datasets store a scalar `count` next to the vectors; it must not define the feature size."""
    x = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    stats = {"count": np.array([64]), **_stats(x)}
    norm = Normalizer.from_dataset_stats({"observation.state": stats}, {"observation.state": "mean_std"})
    back = Normalizer.from_state(norm.describe(), norm.state_dict())  # safetensors sorts keys: count first
    t = torch.from_numpy(x)
    assert torch.allclose(back.normalize("observation.state", t), norm.normalize("observation.state", t))


@pytest.mark.parametrize("stat", ["std", "q99"])
def test_non_finite_statistics_are_rejected_by_name(stat):
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    stats = _stats(x)
    stats[stat][1] = np.nan
    mode = "mean_std" if stat == "std" else "quantile"
    with pytest.raises(ValueError, match=rf"'action' {stat} is not finite at dimension\(s\) \[1\]"):
        Normalizer.from_dataset_stats({"action": stats}, {"action": mode})
    # a masked-out dimension is never read, and a statistic the mode does not use is not checked
    Normalizer.from_dataset_stats(
        {"action": stats}, {"action": mode}, masks={"action": np.array([1, 0, 1], bool)}
    )
    Normalizer.from_dataset_stats({"action": stats}, {"action": "min_max"})
    with pytest.raises(ValueError, match="'action' std is not finite"):  # also when loading a checkpoint
        Normalizer.from_state(
            {"action": {"mode": "mean_std"}},
            {"action/mean": torch.zeros(3), "action/std": torch.tensor([1.0, float("inf"), 1.0])},
        )


@pytest.mark.parametrize("mode", ["mean_std", "quantile", "min_max", "identity"])
def test_tensors_are_built_on_the_input_device(mode):
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    norm = Normalizer.from_dataset_stats({"action": _stats(x)}, {"action": mode})
    meta = torch.zeros(4, 2, device="meta")  # any device but the CPU the statistics live on
    assert norm.normalize("action", meta).device == meta.device
    assert norm.unnormalize("action", meta).device == meta.device
