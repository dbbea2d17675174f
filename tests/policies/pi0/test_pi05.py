"""π0.5 + knowledge insulation (pi05-tiny): mask rules, insulated gradients, adaRMSNorm, cache, subtasks."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.models.lm.decoder import RMSNorm
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pi0 import make_pi0_policy
from vlaforge.policies.pi0.expert import ActionExpert, AdaRMSNorm, JointTransformer, expert_lm_config
from vlaforge.policies.pi0.pi05_policy import FAST, SUBTASK, Pi05Policy, decode_text
from vlaforge.policies.pi0.pi05_recipes import make_pi05_policy
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train
from vlaforge.types import Observation

CHUNK = 8
SUBTASKS = ["grasp the red block", "pull the drawer handle"]  # one per task of TinyDataset


class SubtaskDataset(TinyDataset):
    """TinyDataset whose samples carry a "subtask" string (the task's subtask), as labelled data does."""

    subtasks = SUBTASKS

    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "subtask": SUBTASKS[self.task_idx[i]]}


@pytest.fixture(scope="module")
def built() -> tuple[Pi05Policy, Pi05Policy, SubtaskDataset]:
    """(policy without subtask prediction, policy with it, dataset); one FAST fit shared by both."""
    ds = SubtaskDataset(n=8, history=1, chunk=CHUNK)
    torch.manual_seed(0)
    plain = make_pi05_policy("pi05-tiny", ds, subtasks=[])
    torch.manual_seed(0)
    # reads ds.subtasks; a short decoding budget keeps the (random, never-ending) subtask decoding quick
    sub = make_pi05_policy("pi05-tiny", ds, fast_tokenizer=plain.fast_tokenizer, subtask_max_len=6)
    return plain, sub, ds


def _batch(ds: TinyDataset, n: int = 4, subtask: bool = True) -> dict:
    batch = default_collate([ds[i] for i in range(n)])
    if not subtask:
        batch.pop("subtask")
    return batch


def _obs(task: int) -> Observation:
    img = np.full((16, 16, 3), 40 + 150 * task, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), TASKS[task]
    )


def _backbone_params(policy: Pi05Policy) -> list[tuple[str, torch.nn.Parameter]]:
    """Everything that produces the backbone tokens: the Gemma backbone, the vision tower, the projector."""
    return [
        (n, p)
        for n, p in policy.named_parameters()
        if n.startswith(("transformer.backbone.", "vision_tower.", "projector."))
    ]


def test_attention_mask_rule(built):
    """prefix bidirectional; postfix causal; actions read prefix + subtask, never FAST; nobody reads actions."""
    _, policy, ds = built
    batch = _batch(ds)
    batch["subtask"] = [SUBTASKS[0], "", SUBTASKS[0], SUBTASKS[1]]  # row 1: no label, no subtask block
    seq = policy.sequence(batch)
    mask, P, H = seq.attention_mask, seq.n_prefix, CHUNK
    L = mask.shape[-1]
    S = L - H  # backbone tokens: prefix + fed postfix
    assert not mask[:, :S, S:].any()  # no backbone token (prefix, subtask, FAST) reads an action token
    assert not mask[:, :P, P:S].any()  # the prefix never reads the postfix
    causal = torch.ones(S - P, S - P, dtype=torch.bool).tril()
    assert not (mask[:, P:S, P:S] & ~causal).any()  # postfix causal
    assert mask[:, S:, S:].all()  # actions read each other (one block)
    assert seq.n_context.tolist()[1] == 0 and min(seq.n_context.tolist()[i] for i in (0, 2, 3)) > 0
    fed_valid = seq.targets[:, : S - P] != -100  # (B, S - P): real fed postfix tokens
    for b in range(mask.shape[0]):
        n_ctx = int(seq.n_context[b])
        real_prefix = mask[b, P - 1, :P]  # the last prefix token is real: its row = the real prefix keys
        assert mask[b, S:, :P][:, real_prefix].all() and not mask[b, S:, :P][:, ~real_prefix].any()
        assert mask[b, S:, P : P + n_ctx].all()  # actions read the subtask block ...
        assert not mask[b, S:, P + n_ctx : S].any()  # ... and no FAST token
        kinds = seq.kinds[b, : S - P]
        assert (kinds[:n_ctx] != FAST).all() and (kinds[n_ctx:][fed_valid[b, n_ctx:]] == FAST).all()
        assert mask[b, P:S, :P][fed_valid[b]][:, real_prefix].all()  # the postfix reads the real prefix
        # positions: the actions continue after the prefix and the subtask, skipping the FAST tokens
        first = int(real_prefix.sum()) + n_ctx
        assert seq.positions[b, S:].tolist() == list(range(first, first + H))
    # Functionally: FAST tokens do not move the actions, the subtask does; the actions move no backbone token.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, H, 32, generator=g)
    tau = torch.full((4,), 0.4)
    with torch.no_grad():
        base_p, base_v = policy._joint(x, tau, mask, seq.positions, prefix=seq.context)
        ctx = seq.context.clone()
        b = 0
        ctx[b, P + int(seq.n_context[b]) :] += 1.0  # every FAST token of row 0
        fast_p, fast_v = policy._joint(x, tau, mask, seq.positions, prefix=ctx)
        ctx = seq.context.clone()
        ctx[b, P + 2] += 1.0  # a subtask token of row 0
        _, sub_v = policy._joint(x, tau, mask, seq.positions, prefix=ctx)
        act_p, act_v = policy._joint(x + 1.0, tau, mask, seq.positions, prefix=seq.context)
    torch.testing.assert_close(fast_v, base_v, rtol=0, atol=1e-6)
    assert not torch.allclose(fast_p[b, P + int(seq.n_context[b]) :], base_p[b, P + int(seq.n_context[b]) :])
    assert not torch.allclose(sub_v[b], base_v[b], atol=1e-4)
    torch.testing.assert_close(act_p, base_p, rtol=0, atol=0)
    assert not torch.allclose(act_v, base_v, atol=1e-4)
    # Knowledge insulation refuses a mask that lets a backbone token read an expert token.
    leaky = mask.clone()
    leaky[:, 0, S] = True
    with pytest.raises(ValueError, match="knowledge insulation"):
        policy._joint(x, tau, leaky, seq.positions, prefix=seq.context)


def test_flow_gradient_reaches_the_backbone_only_without_insulation(built):
    plain, _, ds = built
    batch = _batch(ds, subtask=False)
    grads, values = {}, {}
    for ki in (True, False):
        torch.manual_seed(0)
        policy = make_pi05_policy(
            "pi05-tiny", ds, subtasks=[], fast_tokenizer=plain.fast_tokenizer, knowledge_insulation=ki
        )
        assert policy.transformer.insulate is ki and policy.config.knowledge_insulation is ki
        terms, _ = policy.loss_terms(batch, generator=torch.Generator().manual_seed(0))
        values[ki] = {k: float(v.detach()) for k, v in terms.items()}
        terms["flow"].backward(retain_graph=True)
        backbone = [p.grad for _, p in _backbone_params(policy)]
        grads[ki] = max(0.0 if g is None else float(g.abs().max()) for g in backbone)
        expert = [p.grad for p in policy.expert.parameters()]
        assert (
            max(float(g.abs().max()) for g in expert if g is not None) > 0
        )  # the flow loss trains the expert
        # The FAST cross-entropy never reaches the expert (backbone tokens do not read expert tokens).
        policy.zero_grad(set_to_none=True)
        terms["fast"].backward()
        assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in policy.expert.parameters())
        assert max(float(p.grad.abs().max()) for _, p in _backbone_params(policy) if p.grad is not None) > 0
    assert grads[True] == 0.0  # insulated: exactly zero on every backbone / vision parameter
    assert grads[False] > 1e-6  # not insulated: the flow loss trains the backbone too
    assert values[True] == pytest.approx(values[False], rel=1e-6)  # insulation changes gradients, not values


def test_adarms_norm_at_init_is_plain_rmsnorm():
    torch.manual_seed(0)
    x, cond = torch.randn(3, 5, 16) * 3 + 1, torch.randn(3, 8)
    ada = AdaRMSNorm(16, 1e-6, 8)
    out, gate = ada(x, cond)
    for one_plus_weight in (True, False):  # Gemma (1 + w, w = 0) and Llama (w = 1) at init
        torch.testing.assert_close(out, RMSNorm(16, 1e-6, one_plus_weight)(x), rtol=0, atol=0)
    torch.testing.assert_close(gate, torch.ones(3, 1, 16), rtol=0, atol=0)
    # A whole adaRMS expert at init computes what the plain expert with the same weights computes.
    policy_lm = get_recipe("pi05-tiny").model["lm"]
    from vlaforge.models.lm import DecoderLM, LMConfig

    lm_cfg = LMConfig(**{**policy_lm, "vocab_size": 32})
    exp_cfg = expert_lm_config(lm_cfg, 64, 256)
    plain = JointTransformer(DecoderLM(lm_cfg), ActionExpert(exp_cfg))
    adaptive = JointTransformer(
        plain.backbone, ActionExpert(exp_cfg, time_conditioning="adarms", cond_dim=64)
    )
    shared = {k: v for k, v in plain.expert.state_dict().items() if "norm" not in k}
    missing, unexpected = adaptive.expert.load_state_dict(shared, strict=False)
    assert not unexpected and all("modulation" in k for k in missing)
    prefix, suffix = torch.randn(2, 6, 128), torch.randn(2, 4, 64)
    mask = torch.ones(1, 10, 10, dtype=torch.bool)
    mask[:, :6, 6:] = False
    pos = torch.arange(10)[None]
    c = torch.randn(2, 64)
    with torch.no_grad():
        ref = plain([prefix, suffix], mask, pos)
        got = adaptive([prefix, suffix], mask, pos, expert_cond=c)
        for m in adaptive.expert.modules():
            if isinstance(m, AdaRMSNorm):
                m.modulation.weight.normal_(0, 0.1)
        moved = adaptive([prefix, suffix], mask, pos, expert_cond=c)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(moved[1], ref[1], atol=1e-3)  # trained modulation: the condition matters
    with pytest.raises(ValueError, match="expert_cond"):
        adaptive([prefix, suffix], mask, pos)  # the adaptive expert needs its condition
    with pytest.raises(ValueError, match="not adaptive"):
        plain([prefix, suffix], mask, pos, expert_cond=c)


def test_cached_and_uncached_sampling_agree(built):
    plain, sub, ds = built
    batch = _batch(ds, subtask=False)
    noise = torch.randn(4, CHUNK, 32, generator=torch.Generator().manual_seed(1))
    for policy in (plain, sub):  # with and without the greedy subtask decoding before the actions
        with torch.no_grad():
            cached = policy.sample_actions(batch, noise=noise, use_cache=True)
            subtasks = list(policy.last_subtasks)
            uncached = policy.sample_actions(batch, noise=noise, use_cache=False)
            other = policy.sample_actions(batch, noise=torch.randn_like(noise), use_cache=True)
        torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-5)
        assert policy.last_subtasks == subtasks  # the same subtask decoded with and without the cache
        assert not torch.allclose(cached, other, atol=1e-3)
    a = sub.predict_batch(batch, generator=torch.Generator().manual_seed(3))
    b = sub.predict_batch(batch, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert a.shape == (4, CHUNK, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_subtask_loss_and_decoding(built):
    plain, policy, ds = built
    labelled = _batch(ds)
    seq = policy.sequence(labelled)
    for b, label in enumerate(labelled["subtask"]):  # the subtask targets are the label's tokens and ";"
        assert decode_text(policy.tokenizer, seq.targets[b][seq.kinds[b] == SUBTASK].tolist()) == label + " ;"
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        terms, _ = policy.loss_terms(labelled, generator=g())
        loss, metrics = policy.loss(labelled, generator=g())
        other, _ = policy.loss({**labelled, "subtask": [SUBTASKS[1]] * 4}, generator=g())
        unlabelled = _batch(ds, subtask=False)
        terms_u, _ = policy.loss_terms(unlabelled, generator=g())
        loss_u, metrics_u = policy.loss(unlabelled, generator=g())
    alpha = policy.config.flow_loss_weight
    assert alpha == 10.0 and "subtask_loss" in metrics and metrics["subtask_loss"] > 0
    torch.testing.assert_close(loss, terms["fast"] + terms["subtask"] + alpha * terms["flow"])
    assert float(other) != float(loss)  # other subtask labels, another loss
    assert "subtask" not in terms_u and "subtask_loss" not in metrics_u  # no labels: no subtask term
    torch.testing.assert_close(loss_u, terms_u["fast"] + alpha * terms_u["flow"])
    # Decoding: a string per sample, also in predict()'s info; a policy without subtasks has none.
    texts = policy.decode_subtasks(labelled)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert texts == policy.decode_subtasks(labelled, use_cache=False)
    chunk = policy.predict(_obs(0), generator=torch.Generator().manual_seed(0))
    assert isinstance(chunk.info["subtask"], str) and chunk.actions.shape == (CHUNK, 2)
    assert "subtask" not in plain.predict(_obs(0)).info
    with pytest.raises(ValueError, match="predict_subtask"):
        plain.loss(labelled)  # labels the policy would never decode: refused with the fix


def test_subtask_decoding_stops_at_the_end_token(built, monkeypatch):
    """A scripted LM head ("grasp", "the", ";"): the subtask is the text before ";", the actions read the
    block through ";" only, and cached / uncached sampling still agree."""
    _, policy, ds = built
    script = [policy.tokenizer.token_id("grasp"), policy.tokenizer.token_id("the"), policy.subtask_end_id]
    step = {"t": 0}

    def scripted_logits(h: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, V): one-hot of the script
        logits = torch.zeros(h.shape[0], policy.vocab_size)
        logits[:, script[min(step["t"], len(script) - 1)]] = 1.0
        step["t"] += 1
        return logits

    monkeypatch.setattr(policy.backbone, "compute_logits", scripted_logits)
    batch = _batch(ds, subtask=False)
    noise = torch.randn(4, CHUNK, 32, generator=torch.Generator().manual_seed(2))
    no_end = policy.decode_stats["subtask_no_end"]
    with torch.no_grad():
        cached = policy.sample_actions(batch, noise=noise)
        assert policy.last_subtasks == ["grasp the"] * 4
        step["t"] = 0
        uncached = policy.sample_actions(batch, noise=noise, use_cache=False)
        assert policy.last_subtasks == ["grasp the"] * 4
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-5)
    assert policy.decode_stats["subtask_no_end"] == no_end  # every row ended with ";"


def test_two_step_train_save_load_identical_actions(built, tmp_path):
    plain, _, ds = built
    torch.manual_seed(0)
    policy = make_pi05_policy("pi05-tiny", ds, fast_tokenizer=plain.fast_tokenizer, subtask_max_len=6)
    assert policy.config.predict_subtask
    cfg = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, num_workers=0
    )
    res = train(policy, ds, cfg, tmp_path / "run", progress=False)  # batches carry "subtask" strings
    assert res.steps == 2 and np.isfinite(res.final_loss)
    loaded = Policy.load(tmp_path / "run")  # dispatches on config.json's policy_class
    assert isinstance(loaded, Pi05Policy) and loaded.config == policy.config
    assert loaded.fast_tokenizer.bpe.to_str() == policy.fast_tokenizer.bpe.to_str()
    for task in (0, 1):
        a = policy.predict(_obs(task), generator=torch.Generator().manual_seed(task))
        b = loaded.predict(_obs(task), generator=torch.Generator().manual_seed(task))
        assert a.actions.shape == (CHUNK, 2)
        np.testing.assert_array_equal(a.actions, b.actions)
        assert a.info["subtask"] == b.info["subtask"]
    meta = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert meta["policy_class"] == "pi05" and meta["config"]["recipe"] == "pi05-tiny"
    assert (tmp_path / "run" / "policy" / "fast" / "tokenizer.json").is_file()


def test_recipes_and_pi0_unchanged(built):
    plain, _, ds = built
    assert isinstance(make_policy("pi05-tiny", TinyDataset(n=8, history=1, chunk=CHUNK)), Pi05Policy)
    c = plain.config
    assert (c.knowledge_insulation, c.flow_loss_weight, c.state_norm, c.action_norm) == (
        True,
        10.0,
        "quantile",
        "quantile",
    )
    assert plain.expert.adaptive and not hasattr(plain, "state_proj")
    assert plain.prompts(_batch(ds, 1))[0].startswith("Task: push the red block, State: ")
    with pytest.raises(ValueError, match="no state token"):
        plain.embed_state(_batch(ds), 4)
    full = get_recipe("pi05").model
    assert (full["chunk"], full["expert_width"], full["expert_mlp_dim"], full["text_max_len"]) == (
        50,
        1024,
        4096,
        200,
    )
    assert (full["lm"]["vocab_size"], full["lm"]["hidden_size"], full["fast_skip_tokens"]) == (
        257152,
        2048,
        128,
    )
    with pytest.raises(ValueError, match="tokenizer_dir"):
        make_policy("pi05", ds)  # full size: needs the checkpoint's tokenizer (never built in tests)
    with pytest.raises(ValueError, match="prompt"):
        c.replace(prompt="{instruction}")
    # π0 keeps its plain, non-insulated expert and its state token.
    pi0 = make_pi0_policy("pi0-tiny", TinyDataset(n=8, history=1, chunk=CHUNK))
    assert not pi0.expert.adaptive and not pi0.transformer.insulate and hasattr(pi0, "state_proj")
    assert not any(isinstance(m, AdaRMSNorm) for m in pi0.modules())


def test_cli_train_pi05_tiny(tmp_path):
    from vlaforge.cli import main
    from vlaforge.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=12, height=32, width=32)
    args = ["train", "--recipe", "pi05-tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
            "--batch-size", "4", "--workers", "0", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    policy = Policy.load(tmp_path / "run")
    assert isinstance(policy, Pi05Policy) and policy.fast_tokenizer.horizon == CHUNK
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"] == 2
