"""VLA recipes (openvla-tiny, openvla-oft-tiny, rt2-tiny): training, decoding, save/load, CLI."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.policies.vla.policy import VLAPolicy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train
from vlaforge.types import Observation

TINY_RECIPES = {"openvla-tiny": 1, "rt2-tiny": 1, "openvla-oft-tiny": 8}  # recipe -> its chunk


def _policy(recipe: str, n: int = 8) -> tuple[VLAPolicy, TinyDataset]:
    torch.manual_seed(0)
    ds = TinyDataset(n=n, history=1, chunk=TINY_RECIPES[recipe])
    return make_policy(recipe, ds), ds


def _obs(task: int) -> Observation:
    img = np.full((16, 16, 3), 40 + 150 * task, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), TASKS[task]
    )


def _batch(ds: TinyDataset, n: int = 4) -> dict:
    return default_collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("recipe", sorted(TINY_RECIPES))
def test_two_step_train_save_load_identical_predictions(tmp_path, recipe):
    policy, ds = _policy(recipe)
    cfg = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, num_workers=0
    )
    res = train(policy, ds, cfg, tmp_path / "run", progress=False)
    assert res.steps == 2 and np.isfinite(res.final_loss)
    loaded = Policy.load(tmp_path / "run")  # dispatches on config.json's policy_class
    assert isinstance(loaded, VLAPolicy) and loaded.config == policy.config
    for task in (0, 1):
        a, b = policy.predict(_obs(task)), loaded.predict(_obs(task))
        assert a.actions.shape == (TINY_RECIPES[recipe], 2)
        np.testing.assert_array_equal(a.actions, b.actions)
    meta = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert meta["policy_class"] == "vla" and meta["config"]["recipe"] == recipe


@pytest.mark.parametrize("recipe", ["openvla-tiny", "rt2-tiny"])
def test_cached_and_uncached_greedy_decoding_agree(recipe):
    torch.manual_seed(0)
    ds = TinyDataset(n=4, history=1, chunk=4)
    policy = make_policy(recipe, ds, chunk=4)  # 4 x 2 = 8 action tokens
    batch = _batch(ds)
    with torch.no_grad():
        cached = policy.predict_batch(batch, use_cache=True)
        uncached = policy.predict_batch(batch, use_cache=False)
    torch.testing.assert_close(cached, uncached, rtol=0, atol=0)


def test_training_loss_reads_the_same_logits_as_decoding():
    """Teacher-forced logits for the decoded tokens equal the logits generation saw (masks and positions agree)."""
    policy, ds = _policy("openvla-tiny")
    batch = _batch(ds)
    policy.eval()
    with torch.no_grad():
        prefix, valid = policy._prefix(batch)
        mask = policy._mask(valid, prefix.shape[1], 0, action_causal=True)
        from vlaforge.models.lm import generate_greedy

        gen = generate_greedy(
            policy.lm,
            inputs_embeds=prefix,
            attention_mask=mask,
            position_ids=policy._positions(valid),
            max_new_tokens=2,
        )
        P = prefix.shape[1]
        x = torch.cat([prefix, policy.lm.embed(gen.tokens[:, :1])], 1)
        v = torch.cat([valid, torch.ones(4, 1, dtype=torch.bool)], 1)
        out = policy.lm(
            inputs_embeds=x, attention_mask=policy._mask(v, P, 1, True), position_ids=policy._positions(v)
        )
    torch.testing.assert_close(out.logits[:, P - 1 :].float(), gen.logits, rtol=1e-4, atol=1e-4)


def test_prompt_padding_does_not_change_predictions():
    """A batch mixing short and long instructions (left padding) predicts what each sample predicts alone."""
    policy, _ = _policy("rt2-tiny")
    obs = [_obs(0), _obs(1)]
    obs[1].instruction = "open the drawer slowly and carefully please"  # longer -> the other row is padded
    batches = [policy.observations_to_batch(o) for o in obs]
    merged = {
        k: torch.cat([b[k] for b in batches])
        if torch.is_tensor(batches[0][k])
        else [x for b in batches for x in b[k]]
        for k in batches[0]
    }
    together = policy.predict_batch(merged)
    alone = torch.cat([policy.predict_batch(b) for b in batches])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_rt2_decoding_is_constrained_and_openvla_reports_text_tokens():
    rt2, ds = _policy("rt2-tiny")
    with torch.no_grad():  # all logits equal: an unconstrained arg-max would pick id 0 (<pad>)
        rt2.lm.embed_tokens.weight.zero_()  # tied output projection
    rt2.predict_batch(_batch(ds))
    assert rt2.decode_stats["invalid_action_tokens"] == 0  # constrained: only action ids are possible

    ovla, ds = _policy("openvla-tiny")
    assert not ovla.config.constrained_decoding
    with torch.no_grad():
        ovla.lm.lm_head.weight.zero_()  # arg-max = id 0, a text token, at every step
    actions = ovla.predict_batch(_batch(ds))
    assert torch.isfinite(actions).all()
    assert ovla.decode_stats["invalid_action_tokens"] == 4 * 2  # every token of the batch, counted


def _count_lm_calls(policy: VLAPolicy) -> list[int]:
    calls = [0]
    policy.lm.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_oft_decodes_a_whole_chunk_in_one_forward_pass():
    oft, ds = _policy("openvla-oft-tiny")
    calls = _count_lm_calls(oft)
    chunk = oft.predict(_obs(0))
    assert chunk.actions.shape == (8, 2) and calls[0] == 1
    ovla, _ = _policy("openvla-tiny")
    calls = _count_lm_calls(ovla)
    ovla.predict(_obs(0))
    assert calls[0] == ovla.config.n_action_tokens  # autoregressive: one pass per action token (cached)


def test_oft_film_conditions_the_vision_tower_on_the_instruction():
    oft, ds = _policy("openvla-oft-tiny")
    assert oft.film is not None and oft.proprio is not None
    batch = _batch(ds, 1)
    other = {
        **batch,
        "task": ["open the drawer"] if batch["task"][0] != "open the drawer" else ["push the red block"],
    }

    def image_tokens(b):
        with torch.no_grad():
            prefix, _ = oft._prefix(b)
        return prefix[:, : oft.n_image_tokens]

    torch.testing.assert_close(image_tokens(batch), image_tokens(other))  # zero-initialised FiLM = identity
    with torch.no_grad():
        for lin in oft.film.gamma["siglip"]:
            lin.weight.normal_()
    assert not torch.allclose(image_tokens(batch), image_tokens(other))


def test_oft_loss_is_l1_on_the_chunk_and_masks_padding():
    oft, ds = _policy("openvla-oft-tiny")
    batch = _batch(ds)
    loss, metrics = oft.loss(batch)
    assert set(metrics) == {"loss", "l1"} and torch.isfinite(loss)
    batch["action_is_pad"][:, 4:] = True
    batch["action"][:, 4:] = 1e3  # padded steps carry no loss, whatever they hold
    loss2, _ = oft.loss(batch)
    batch["action"][:, 4:] = -1e3
    loss3, _ = oft.loss(batch)
    assert torch.equal(loss2, loss3)


def test_recipe_errors_and_definitions():
    ds = TinyDataset(n=4, history=1, chunk=1)
    with pytest.raises(ValueError, match="fixed action head"):
        make_policy("openvla-tiny", ds, head="flow")
    with pytest.raises(ValueError, match="tokenizer_dir"):
        make_policy("openvla", ds)  # full size: needs the checkpoint's tokenizer (never built in tests)
    assert get_recipe("openvla-oft").model["chunk"] == 8 and get_recipe("rt2").model["constrained_decoding"]
    assert get_recipe("openvla").model["lm"]["vocab_size"] == 32064
    policy, _ = _policy("openvla-tiny")
    with pytest.raises(ValueError, match="history"):
        policy.config.replace(history=2)


def test_cli_train_openvla_tiny(tmp_path):
    from vlaforge.cli import main
    from vlaforge.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=8, height=32, width=32)
    args = [
        "train",
        "--recipe",
        "openvla-tiny",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--no-cache",
    ]
    assert main(args) == 0
    policy = Policy.load(tmp_path / "run")
    assert isinstance(policy, VLAPolicy) and list(policy.config.cameras) == ["corner"]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2


def test_hf_tokenizer_path_saves_tokenizer_json_and_puts_bos_first(tmp_path):
    """The full-size recipes' path (checkpoint tokenizer.json + BOS before the image), at tiny size."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = [
        "[UNK]",
        "<s>",
        *sorted({w for t in TASKS for w in t.split()}),
        "in",
        ":",
        "what",
        "action",
        "should",
        "the",
        "robot",
        "take",
        "to",
        "?",
        "out",
    ]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    (tmp_path / "ckpt").mkdir()
    tok.save(str(tmp_path / "ckpt" / "tokenizer.json"))
    torch.manual_seed(0)
    ds = TinyDataset(n=4, history=1, chunk=1)
    policy = make_policy("openvla-tiny", ds, language="hf", bos_token_id=1, tokenizer_dir=tmp_path / "ckpt")
    assert policy.action_tokenizer.token_ids[0] == policy.lm.config.vocab_size - 1
    prefix, valid = policy._prefix(_batch(ds, 1))
    torch.testing.assert_close(prefix[0, 0], policy.lm.embed(torch.tensor([[1]]))[0, 0])  # BOS first
    policy.save(tmp_path / "p")
    assert (tmp_path / "p" / "tokenizer.json").is_file()
    loaded = Policy.load(tmp_path / "p")
    np.testing.assert_array_equal(policy.predict(_obs(1)).actions, loaded.predict(_obs(1)).actions)


def test_oft_proprio_rejects_a_non_finite_state():
    """The state NaN guard (`policies.base.check_finite_state`) also covers OpenVLA-OFT's proprio input."""
    policy, ds = _policy("openvla-oft-tiny", n=4)
    batch = _batch(ds, 2)
    batch["observation.state"][1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"batch\['observation.state'\] contains NaN or Inf"):
        policy.predict_batch(batch)
    with pytest.raises(ValueError, match="NaN or Inf"):
        policy.loss(batch)
