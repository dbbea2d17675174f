"""π0-FAST (pi0-fast-tiny): prefix-LM mask, postfix-only loss, cached decoding, FAST id map, contract."""

import json
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pi0.fast_policy import IGNORE, Pi0FastPolicy
from vlaforge.policies.pi0.fast_recipes import make_pi0_fast_policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train
from vlaforge.types import Observation

CHUNK = 8


@pytest.fixture(scope="module")
def built() -> tuple[Pi0FastPolicy, TinyDataset]:
    torch.manual_seed(0)
    ds = TinyDataset(n=8, history=1, chunk=CHUNK)
    return make_pi0_fast_policy("pi0-fast-tiny", ds), ds


def _batch(ds: TinyDataset, n: int = 4) -> dict:
    return default_collate([ds[i] for i in range(n)])


def _obs(task: int) -> Observation:
    img = np.full((16, 16, 3), 40 + 150 * task, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), TASKS[task]
    )


def test_prompt_and_fast_id_mapping(built):
    policy, ds = built
    batch = _batch(ds, 2)
    prompts = policy.prompts(batch)
    assert prompts[0].startswith("Task: push the red block, State: ") and prompts[0].endswith(";\n")
    bins = [int(b) for b in prompts[0].split("State: ")[1].rstrip(";\n").split()]
    assert len(bins) == 3 and all(0 <= b <= 255 for b in bins)
    # The FAST ids are the last n_fast LM ids (tiny recipe: skip 0), f -> V - 1 - f.
    V, n_fast = policy.vocab_size, policy.fast_tokenizer.vocab_size
    assert (
        (policy.fast_first, policy.fast_last) == (V - n_fast, V - 1) == (policy.tokenizer.vocab_size, V - 1)
    )
    f = torch.arange(n_fast)
    assert torch.equal(policy.fast_to_lm(f), V - 1 - f) and torch.equal(
        policy.lm_to_fast(policy.fast_to_lm(f)), f
    )
    assert not policy.is_fast_id(torch.tensor([policy.end_token_id, *policy.action_prompt_ids])).any()


def test_prefix_bidirectional_postfix_causal(built):
    policy, ds = built
    seq = policy.sequence(_batch(ds))
    P, S = seq.n_prefix, seq.attention_mask.shape[-1]
    prefix_valid = seq.attention_mask[:, P - 1, :P]  # a real prefix token's row: the real prefix keys
    mask = seq.attention_mask
    assert not mask[:, :P, P:].any()  # the prefix never sees the postfix
    for b in range(mask.shape[0]):
        real = prefix_valid[b]
        assert mask[b, :P, :P][real][:, real].all()  # bidirectional among real prefix tokens
        post_real = seq.loss_mask[b, P - 1 : S - 1]  # real postfix inputs: y[j] at P + j is real
        assert mask[b, P:, :P][post_real][:, real].all()  # postfix reads the whole real prefix
    causal = torch.ones(S - P, S - P, dtype=torch.bool).tril()
    assert not (mask[:, P:, P:] & ~causal).any()  # postfix causal
    # Functionally: changing a later postfix token changes neither the prefix nor earlier postfix outputs.
    with torch.no_grad():
        out0 = policy.lm(
            inputs_embeds=seq.embeds, attention_mask=mask, position_ids=seq.positions, logits="none"
        )
        x = seq.embeds.clone()
        x[:, P + 3] += 1.0
        out1 = policy.lm(inputs_embeds=x, attention_mask=mask, position_ids=seq.positions, logits="none")
    torch.testing.assert_close(
        out1.hidden_states[:, : P + 3], out0.hidden_states[:, : P + 3], rtol=0, atol=1e-6
    )
    assert not torch.allclose(out1.hidden_states[:, P + 3], out0.hidden_states[:, P + 3], atol=1e-3)


def test_loss_only_on_the_postfix(built):
    policy, ds = built
    batch = _batch(ds)
    seq = policy.sequence(batch)
    fast = policy.fast_tokens(batch)
    K = len(policy.action_prompt_ids)
    # Loss positions: exactly "Action: " + FAST + "|" of each sample, all after the prefix.
    assert seq.loss_mask.sum(1).tolist() == [K + len(f) + 1 for f in fast]
    assert not seq.loss_mask[:, : seq.n_prefix - 1].any()
    prompt_pos = ~seq.loss_mask & (seq.targets != IGNORE)
    assert prompt_pos[:, : seq.n_prefix].sum() > 10  # prefix positions do carry (prompt-token) targets
    torch.manual_seed(1)
    with torch.no_grad():
        loss0, m = policy.sequence_loss(seq)
        other = seq.targets.clone()
        other[prompt_pos] = torch.randint(0, policy.vocab_size, (int(prompt_pos.sum()),))
        loss1, _ = policy.sequence_loss(type(seq)(**{**seq.__dict__, "targets": other}))
        post = seq.targets.clone()
        b, s = seq.loss_mask.nonzero()[-1].tolist()  # the last sample's "|" target
        post[b, s] = policy.fast_first
        loss2, _ = policy.sequence_loss(type(seq)(**{**seq.__dict__, "targets": post}))
    assert float(loss1) == float(loss0)  # changing prompt-token targets does not change the loss
    assert float(loss2) != float(loss0)
    assert np.isfinite(m["accuracy"]) and m["fast_tokens"] == pytest.approx(np.mean([len(f) for f in fast]))
    assert torch.allclose(policy.loss(batch)[0], loss0)


def test_teacher_tokens_decode_to_the_chunk(built):
    policy, ds = built
    batch = _batch(ds)
    fast = policy.fast_tokens(batch)
    T = max(len(f) for f in fast) + 3
    rows = torch.full((len(fast), T), policy.end_token_id)  # after "|" anything may follow
    for i, f in enumerate(fast):
        rows[i, : len(f)] = policy.fast_to_lm(torch.tensor(f))
    actions, ok = policy.decode_tokens(rows)
    assert ok.all() and actions.shape == (4, CHUNK, 2)
    # FAST's rounding bound (per dimension, L2 over the chunk, normalized units) in robot units.
    scale = (ds.stats["action"]["q99"] - ds.stats["action"]["q01"]) / 2
    err = (actions.numpy() - batch["action"].numpy()) / scale
    assert np.sqrt((err**2).sum(1)).max() <= 0.5 * np.sqrt(CHUNK) / 10 + 1e-4


def test_cached_and_uncached_decoding_identical(built):
    policy, ds = built
    batch = _batch(ds)
    a = policy.generate(batch, use_cache=True)
    b = policy.generate(batch, use_cache=False)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    constrained = make_pi0_fast_policy("pi0-fast-tiny", ds, constrained_decoding=True, max_decode_tokens=16)
    c = constrained.generate(batch)
    assert torch.equal(c.tokens, constrained.generate(batch, use_cache=False).tokens)
    assert (constrained.is_fast_id(c.tokens) | (c.tokens == constrained.end_token_id)).all()


def test_failed_decodes_are_counted_and_return_the_fallback(built, caplog):
    policy, ds = built
    fast = policy.fast_tokens(_batch(ds, 1))[0]
    good = policy.fast_to_lm(torch.tensor(fast)).tolist()
    end, text_id = policy.end_token_id, policy.action_prompt_ids[0]
    rows = torch.tensor(
        [
            [*good, good[0], end],  # FAST ids for the wrong number of coefficients
            [*good, good[0], good[0]],  # no "|"
            [text_id, *good, end],  # a text token before "|"
        ]
    )
    before = dict(policy.decode_stats)
    failed_before = policy.fast_tokenizer.failed_count
    with caplog.at_level(logging.WARNING, logger="vlaforge.pi0_fast"):
        actions, ok = policy.decode_tokens(rows)
    assert not ok.any()
    gained = {k: policy.decode_stats[k] - before[k] for k in before}
    assert gained == {"predictions": 0, "decode_failures": 3, "no_end_token": 1, "non_fast_tokens": 1,
                      "invalid_fast_tokens": 1}  # fmt: skip
    assert policy.fast_tokenizer.failed_count == failed_before + 1
    assert sum("decode failed" in r.message for r in caplog.records) == 3
    zero = policy.fast_tokenizer.unnormalize(np.zeros((CHUNK, 2)))  # normalized zeros = the q01/q99 midpoint
    np.testing.assert_allclose(actions.numpy(), np.broadcast_to(zero, (3, CHUNK, 2)), rtol=0, atol=1e-6)


def test_two_step_train_save_load_identical_actions(tmp_path):
    torch.manual_seed(0)
    ds = TinyDataset(n=8, history=1, chunk=CHUNK)
    policy = make_pi0_fast_policy("pi0-fast-tiny", ds, constrained_decoding=True, max_decode_tokens=16)
    cfg = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, num_workers=0
    )
    res = train(policy, ds, cfg, tmp_path / "run", progress=False)
    assert res.steps == 2 and np.isfinite(res.final_loss)
    loaded = Policy.load(tmp_path / "run")  # dispatches on config.json's policy_class
    assert isinstance(loaded, Pi0FastPolicy) and loaded.config == policy.config
    assert loaded.fast_tokenizer.bpe.to_str() == policy.fast_tokenizer.bpe.to_str()
    batch = _batch(ds)
    policy.eval()
    assert torch.equal(loaded.generate(batch).tokens, policy.generate(batch).tokens)
    for task in (0, 1):
        a, b = policy.predict(_obs(task)), loaded.predict(_obs(task))
        assert a.actions.shape == (CHUNK, 2)
        np.testing.assert_array_equal(a.actions, b.actions)
        assert a.info["decode_failed"] == b.info["decode_failed"]
    meta = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert meta["policy_class"] == "pi0-fast" and meta["config"]["recipe"] == "pi0-fast-tiny"
    assert (tmp_path / "run" / "policy" / "fast" / "tokenizer.json").is_file()


def test_recipe_registration_and_deterministic_fit():
    ds = TinyDataset(n=8, history=1, chunk=CHUNK)
    a = make_policy("pi0-fast-tiny", ds)  # through the π0 registry
    b = make_pi0_fast_policy("pi0-fast-tiny", ds)
    assert isinstance(a, Pi0FastPolicy) and a.config.chunk == CHUNK
    assert a.fast_tokenizer.bpe.to_str() == b.fast_tokenizer.bpe.to_str()  # same data -> same tokenizer
    assert a.config.lm["vocab_size"] == a.tokenizer.vocab_size + a.fast_tokenizer.vocab_size
    full = get_recipe("pi0-fast").model
    assert (full["chunk"], full["fast_skip_tokens"], full["max_decode_tokens"]) == (50, 128, 256)
    assert (full["lm"]["vocab_size"], full["lm"]["hidden_size"], full["bos_token_id"]) == (257152, 2048, 2)
    with pytest.raises(ValueError, match="tokenizer_dir"):
        make_policy("pi0-fast", ds)  # full size: needs the checkpoint's tokenizer (never built in tests)
    with pytest.raises(ValueError, match="fixed|--head"):
        make_policy("pi0-fast-tiny", ds, head="diffusion")


def test_cli_train_pi0_fast_tiny(tmp_path):
    from vlaforge.cli import main
    from vlaforge.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=12, height=32, width=32)
    args = ["train", "--recipe", "pi0-fast-tiny", "--data", str(data), "--out", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "4", "--workers", "0", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    policy = Policy.load(tmp_path / "run")
    assert isinstance(policy, Pi0FastPolicy) and policy.fast_tokenizer.horizon == CHUNK
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"] == 2
