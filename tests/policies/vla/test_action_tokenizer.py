"""ActionTokenizer: 256-bin action tokens (OpenVLA's last ids, RT-2's integer tokens) and their errors."""

import numpy as np
import pytest
import torch

from vlaforge.policies.vla.action_tokenizer import ActionDecodeError, ActionTokenizer


@pytest.mark.parametrize("binning", ["uniform", "openvla"])
def test_round_trip_within_half_a_bin(binning):
    at = ActionTokenizer.last_ids(1000, 256, n_text_tokens=100, binning=binning)
    x = torch.linspace(-1, 1, 4001).reshape(-1, 1)  # includes both ends
    ids = at.encode(x)
    dec = at.decode(ids)
    assert dec.valid.all() and at.invalid_count == 0
    err = (dec.values - x).abs().max().item()
    assert err <= at.bin_width / 2 + 1e-6
    expected_width = 2 / 256 if binning == "uniform" else 2 / 255
    assert at.bin_width == pytest.approx(expected_width)


def test_last_ids_are_the_top_of_the_vocabulary_highest_bin_lowest_id():
    at = ActionTokenizer.last_ids(32000, 256)
    assert at.token_ids[0] == 31999 and at.token_ids[255] == 31744
    ids = at.encode(torch.tensor([-1.0, 1.0, 0.0]))
    assert ids.tolist() == [31999, 31744, 31999 - 128]
    assert all(at.is_action(torch.tensor(at.action_token_ids)))


def test_openvla_binning_matches_the_reference_formula():
    """Reference: bins = linspace(-1, 1, 256); id = V - digitize(a, bins); centre[clip(V - id - 1, 0, 254)]."""
    V = 32000
    at = ActionTokenizer.last_ids(V, 256, binning="openvla")
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(-1.2, 1.2, 500), [-1.0, 1.0, 0.0]]).astype(np.float64)
    bins = np.linspace(-1, 1, 256)
    centres = (bins[:-1] + bins[1:]) / 2
    ref_ids = V - np.digitize(np.clip(a, -1, 1), bins)
    ref_vals = centres[np.clip(V - ref_ids - 1, 0, centres.shape[0] - 1)]
    ids = at.encode(torch.from_numpy(a))
    assert ids.numpy().tolist() == ref_ids.tolist()
    np.testing.assert_allclose(at.decode(ids).values.numpy(), ref_vals, atol=1e-6)


def test_out_of_range_actions_are_clipped():
    at = ActionTokenizer.last_ids(300, 256, n_text_tokens=44)
    ids = at.encode(torch.tensor([-5.0, 7.0]))
    assert ids.tolist() == at.encode(torch.tensor([-1.0, 1.0])).tolist()
    with pytest.raises(ValueError, match="NaN"):
        at.encode(torch.tensor([float("nan")]))


def test_vocabulary_too_small_is_an_error():
    with pytest.raises(ValueError, match="at least 356"):
        ActionTokenizer.last_ids(300, 256, n_text_tokens=100)


def test_non_action_token_is_reported_never_zero():
    at = ActionTokenizer.last_ids(300, 256, n_text_tokens=44)
    ids = torch.tensor([[299, 5, 44]])  # action, text, action
    dec = at.decode(ids)
    assert dec.valid.tolist() == [[True, False, True]]
    assert torch.isnan(dec.values[0, 1]) and torch.isfinite(dec.values[0, [0, 2]]).all()
    assert at.invalid_count == 1
    with pytest.raises(ActionDecodeError, match="not action tokens"):
        at.decode(ids, strict=True)
    assert not at.is_action(torch.tensor([-1, 300])).any()  # out of the vocabulary entirely


def test_integer_text_tokens():
    vocab = {str(i): 10 + i for i in range(256)}
    at = ActionTokenizer.integer_text(vocab.get, 300)
    assert at.token_ids[:3] == [10, 11, 12] and at.kind == "integer"
    assert at.encode(torch.tensor([-1.0])).item() == vocab["0"]
    assert at.encode(torch.tensor([1.0])).item() == vocab["255"]
    digits_only = {str(i): i for i in range(10)}  # a tokenizer that splits numbers into digits
    with pytest.raises(ValueError, match="no single token for the integers"):
        ActionTokenizer.integer_text(digits_only.get, 300)


def test_serialization_and_bad_ids():
    at = ActionTokenizer.from_ids(list(range(256000, 256256)), 257152)
    again = ActionTokenizer.from_dict(at.to_dict())
    x = torch.rand(7, 3) * 2 - 1
    assert torch.equal(at.encode(x), again.encode(x))
    with pytest.raises(ValueError, match="distinct"):
        ActionTokenizer.from_ids([1, 1, 2], 10)
    with pytest.raises(ValueError, match="vocab_size=10"):
        ActionTokenizer.from_ids([1, 2, 10], 10)
