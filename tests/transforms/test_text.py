import random

import pytest

from vlaforge.train.sampler import StepSeededDataset
from vlaforge.transforms.text import WordDropoutDataset, drop_words

SENTENCE = "pick up the black bowl next to the cookie box and place it on the plate"


def test_drop_words_deletes_words_in_order_and_never_all():
    rng = random.Random(0)
    words = SENTENCE.split()
    outs = [drop_words(SENTENCE, 0.3, rng) for _ in range(400)]
    for out in outs:
        kept = out.split()
        assert kept, "never empty"
        it = iter(words)
        assert all(w in it for w in kept), f"{out!r} is not an ordered subsequence"
    mean_kept = sum(len(o.split()) for o in outs) / len(outs) / len(words)
    assert 0.62 < mean_kept < 0.78  # 1 - p on average
    assert len(set(outs)) > 300  # many phrasings of one task
    assert drop_words(SENTENCE, 0.0, rng) == SENTENCE
    assert drop_words("open", 0.9, rng) == "open"  # one word: nothing to drop
    # p close to 1 keeps exactly one of the words
    assert all(len(drop_words(SENTENCE, 0.999, rng).split()) >= 1 for _ in range(50))


@pytest.mark.parametrize("p", [-0.1, 1.0, 2.0])
def test_drop_words_rejects_bad_probabilities(p):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        drop_words(SENTENCE, p)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        WordDropoutDataset([], p)


class _Items:
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"task": SENTENCE, "index": i, "action": [i]}


def test_the_same_sample_key_gives_the_same_instruction():
    """Inside StepSeededDataset the deletion is a function of (seed, step, index): reproducible runs,
    exact resumes, and independent of loader workers; other steps see other phrasings."""
    ds = StepSeededDataset(WordDropoutDataset(_Items(), 0.3), seed=7)
    a, b = ds[(5, 1)], ds[(5, 1)]
    assert a == b and a["index"] == 1 and a["action"] == [1]
    assert a["task"] != SENTENCE or ds[(6, 1)]["task"] != SENTENCE
    assert len({ds[(k, 1)]["task"] for k in range(50)}) > 40
    other_seed = StepSeededDataset(WordDropoutDataset(_Items(), 0.3), seed=8)
    assert [ds[(k, 0)]["task"] for k in range(5)] != [other_seed[(k, 0)]["task"] for k in range(5)]
    state = random.getstate()
    ds[(1, 2)]
    assert random.getstate() == state  # the main process's RNG stream is untouched
