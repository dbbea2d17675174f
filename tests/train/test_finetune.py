"""Fine-tuning: init-from with changed embodiments, freezing, head-only, peft LoRA (train, merge, save/load), table."""

from __future__ import annotations

import sys

import peft
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.errors import CheckpointError
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import make_policy
from vlaforge.train.finetune import (
    apply_finetune_setup,
    check_finetune_setup,
    finetune_policy,
    parameter_counts,
    parameter_table,
)
from vlaforge.train.freeze import freeze, freeze_all_but
from vlaforge.train.init_from import ShapeChange, load_pretrained
from vlaforge.train.lora import (
    LoRAConfig,
    apply_lora,
    export_state_dict,
    lora_layers,
    lora_preset,
    merge_lora,
)
from vlaforge.train.trainer import make_optimizer


def _policy(ds: TinyDataset | None = None, seed: int = 0, head: str = "l1") -> Policy:
    torch.manual_seed(seed)
    return make_policy("octo-tiny", ds or TinyDataset(), head=head, **{**TINY, "augment": False})


def _batch(ds: TinyDataset, n: int = 8) -> dict:
    return default_collate([ds[i] for i in range(n)])


def _without_camera(ds: TinyDataset, cam: str) -> TinyDataset:
    ds.features = {k: v for k, v in ds.features.items() if k != f"observation.images.{cam}"}
    return ds


@pytest.fixture
def pretrained(tmp_path):
    """A saved 'pretrained' policy (2 cameras, state 3, action 2) and its directory."""
    policy = _policy(seed=1)
    return policy, policy.save(tmp_path / "pre")


# ------------------------------------------------------------------------------------------- init-from


def test_init_from_same_shapes_copies_everything(pretrained):
    pre, path = pretrained
    ds = TinyDataset()
    fresh = _policy(ds, seed=2)
    batch = _batch(ds)
    assert not torch.allclose(fresh.predict_batch(batch), pre.predict_batch(batch))
    report = load_pretrained(fresh, path)
    assert report.reinitialized == [] and report.missing == [] and report.unexpected == []
    assert report.remapped == [] and report.loaded_numel == report.total_numel
    assert set(report.loaded) == set(fresh.state_dict())
    torch.testing.assert_close(fresh.predict_batch(batch), pre.predict_batch(batch), rtol=0, atol=0)
    assert "every tensor of the policy was loaded" in report.format()


@pytest.mark.parametrize(
    "head, expected",
    [
        ("l1", {"head.net.out.weight", "head.net.out.bias"}),
        ("flow", {"head.net.net.out.weight", "head.net.net.out.bias", "head.net.net.inp.weight"}),
        ("binned", {"head.slot_emb"}),
    ],
)
def test_init_from_new_action_dim_reinitializes_only_the_head_output(tmp_path, head, expected):
    pre = _policy(seed=1, head=head)
    path = pre.save(tmp_path / "pre")
    policy = _policy(TinyDataset(action_dim=3), seed=2, head=head)
    fresh_state = {k: v.clone() for k, v in policy.state_dict().items()}
    report = load_pretrained(policy, path)
    assert {c.key for c in report.reinitialized} == expected
    changed = {c.key: c for c in report.reinitialized}
    if head == "l1":  # MLP-ResNet output layer: H*A = 4*2 -> 4*3 outputs
        assert changed["head.net.out.weight"] == ShapeChange("head.net.out.weight", (8, 256), (12, 256))
    assert report.missing == [] and report.unexpected == []
    assert "action_dim: 2 -> 3" in report.config_changes
    pre_state, now = pre.state_dict(), policy.state_dict()
    for key in now:
        if key in expected:  # fresh init kept
            torch.testing.assert_close(now[key], fresh_state[key], rtol=0, atol=0)
        else:  # everything else is the pretrained weight
            torch.testing.assert_close(now[key], pre_state[key], rtol=0, atol=0)
    table = report.format()
    assert all(k in table for k in expected) and "re-initialised" in table


def test_init_from_new_state_dim_lists_the_state_projection(pretrained):
    _, path = pretrained
    report = load_pretrained(_policy(TinyDataset(state_dim=5)), path)
    assert report.reinitialized == [ShapeChange("state_encoder.proj.weight", (32, 3), (32, 5))]


def test_unknown_checkpoint_keys_are_an_error_unless_allowed(pretrained):
    _, path = pretrained  # checkpoint has cameras front + wrist
    policy = _policy(_without_camera(TinyDataset(), "wrist"))
    with pytest.raises(CheckpointError, match=r"image_encoders\.wrist\..*allow_unknown=True"):
        load_pretrained(policy, path)
    report = load_pretrained(policy, path, allow_unknown=True)
    assert report.unexpected and all(k.startswith("image_encoders.wrist.") for k in report.unexpected)
    assert report.missing == [] and report.reinitialized == []
    assert "dropped (unknown)" in report.format()


def test_new_camera_is_listed_as_missing(tmp_path):
    pre = _policy(_without_camera(TinyDataset(), "wrist"), seed=1)
    path = pre.save(tmp_path / "pre")
    report = load_pretrained(_policy(TinyDataset()), path)  # now front + wrist
    assert report.missing and all(k.startswith("image_encoders.wrist.") for k in report.missing)
    assert report.unexpected == [] and report.reinitialized == []


def test_word_embeddings_are_remapped_by_word(pretrained):
    pre, path = pretrained  # vocabulary of "push the red block" / "open the drawer"
    ds = TinyDataset()
    ds.meta = type("Meta", (), {"tasks": ["open the red door", "close the drawer"]})()
    policy = _policy(ds, seed=2)
    report = load_pretrained(policy, path)
    (remap,) = report.remapped
    assert sorted(remap.new_words) == ["close", "door"]
    old_tok, new_tok = pre.tokenizer, policy.tokenizer
    old_w, new_w = pre.text_encoder.embed.weight, policy.text_encoder.embed.weight
    for word in ("open", "the", "red", "drawer", "<unk>"):
        torch.testing.assert_close(new_w[new_tok.index[word]], old_w[old_tok.index[word]], rtol=0, atol=0)


def test_finetune_policy_takes_architecture_from_checkpoint(tmp_path):
    pre = _policy(seed=1, head="flow")
    path = pre.save(tmp_path / "pre")
    policy, report = finetune_policy(path, TinyDataset(action_dim=3))
    assert policy.config.head == "flow" and policy.config.width == TINY["width"]
    assert policy.config.action_dim == 3 and policy.config.augment is False
    assert {c.key for c in report.reinitialized} == {
        "head.net.net.out.weight",
        "head.net.net.out.bias",
        "head.net.net.inp.weight",
    }


def test_truncated_checkpoint_names_the_file(pretrained):
    _, path = pretrained
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_pretrained(_policy(), path)


# ------------------------------------------------------------------------------------------- freezing


def test_freeze_patterns_and_optimizer_skip_frozen():
    policy = _policy()
    frozen = freeze(policy, ["image_encoders.*", "transformer.blocks.0"])
    assert frozen and all(n.startswith(("image_encoders.", "transformer.blocks.0.")) for n in frozen)
    for name, p in policy.named_parameters():
        assert p.requires_grad == (name not in frozen)
    opt = make_optimizer(policy, lr=1e-3, weight_decay=0.1)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in policy.parameters() if p.requires_grad}


def test_unmatched_freeze_pattern_is_an_error_showing_prefixes():
    with pytest.raises(ValueError, match=r"'encoders\.\*' matches no parameter.*'image_encoders\.\*'"):
        freeze(_policy(), ["transformer.*", "encoders.*"])


def test_freeze_all_but_head_is_head_only_tuning():
    policy = _policy()
    freeze_all_but(policy, ["head.*"])
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in policy.named_parameters() if n.startswith("head.")}
    with pytest.raises(ValueError, match="no patterns"):
        freeze_all_but(policy, [])


# ------------------------------------------------------------------------------------------- LoRA


def test_lora_wraps_attention_and_mlp_linears_with_peft_and_starts_as_identity():
    ds = TinyDataset()
    policy = _policy(ds)
    batch = _batch(ds)
    before = policy.predict_batch(batch)
    plain_keys = set(policy.state_dict())
    wrapped = apply_lora(policy, ["transformer.*"], rank=4, alpha=8)
    per_block = {"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"}
    assert set(wrapped) == {f"transformer.blocks.{i}.{m}" for i in range(TINY["depth"]) for m in per_block}
    assert sorted(n for n, _ in lora_layers(policy)) == wrapped
    assert all(isinstance(policy.get_submodule(n), peft.tuners.lora.Linear) for n in wrapped)
    assert policy.get_submodule(wrapped[0]).scaling == {"default": 2.0}  # alpha / rank
    torch.testing.assert_close(policy.predict_batch(batch), before, rtol=0, atol=0)  # B = 0 at init
    # peft's key layout while attached: base weights move under base_layer, adapters are added
    keys = set(policy.state_dict())
    for n in wrapped:
        assert {f"{n}.base_layer.weight", f"{n}.lora_A.default.weight", f"{n}.lora_B.default.weight"} <= keys
        assert f"{n}.weight" not in keys
    untouched = {k for k in plain_keys if not k.startswith(tuple(f"{n}." for n in wrapped))}
    assert untouched <= keys  # head, encoders, norms: unchanged names
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{x}.default.weight" for n in wrapped for x in "AB"}
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(policy)


def test_lora_targets_exactly_the_matched_modules_not_name_suffixes():
    """peft's plain target lists match by suffix ('proj' would also hit 'inner.proj'); ours must not."""
    toy = nn.Module()
    toy.proj = nn.Linear(4, 4)
    toy.inner = nn.ModuleDict({"proj": nn.Linear(4, 4), "fc": nn.Linear(4, 4)})
    assert apply_lora(toy, ["proj"], rank=2) == ["proj"]
    assert [n for n, _ in lora_layers(toy)] == ["proj"]
    assert type(toy.inner["proj"]) is nn.Linear and type(toy.inner["fc"]) is nn.Linear


def test_lora_unmatched_target_and_bad_config_are_errors():
    with pytest.raises(ValueError, match=r"'backbone\.\*' matches no nn\.Linear module"):
        apply_lora(_policy(), ["backbone.*"])
    with pytest.raises(ValueError, match=r"LoRAConfig\.rank=0"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match=r"LoRAConfig\.targets.*\['transformer\.\*'\]"):
        LoRAConfig(targets="transformer.*")
    with pytest.raises(ValueError, match=r"LoRAConfig\.targets.*write \['transformer\.\*'\]"):
        apply_lora(_policy(), "transformer.*")
    policy = _policy()
    with pytest.raises(ValueError, match=r"--lora-train-also pattern 'haed\.\*'"):
        apply_lora(policy, train_also=["haed.*"])
    assert not lora_layers(policy)  # a bad pattern leaves the policy untouched
    cfg = LoRAConfig(**LoRAConfig(rank=2, targets=["*.attn.*"]).to_dict())  # round-trips (stored with a run)
    assert cfg.apply(policy) == [
        f"transformer.blocks.{i}.attn.{m}" for i in range(2) for m in ("proj", "qkv")
    ]


def test_lora_without_peft_installed_says_how_to_get_it(monkeypatch):
    policy = _policy()
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now fails as if it were not installed
    with pytest.raises(ImportError, match=r"LoRA needs peft: pip install 'vlaforge\[lora\]'"):
        apply_lora(policy)
    assert all(p.requires_grad for p in policy.parameters())  # nothing was changed


def test_lora_training_changes_only_adapters_and_train_also_then_merges(tmp_path):
    ds = TinyDataset()
    policy = _policy(ds)
    plain_keys = list(policy.state_dict())
    apply_lora(policy, ["transformer.*"], rank=4, alpha=8, dropout=0.1, train_also=["head.*"])
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in policy.named_parameters() if ".lora_" in n or n.startswith("head.")}
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = make_optimizer(policy, lr=1e-2, weight_decay=0.1)
    batch = _batch(ds)
    policy.train()
    for _ in range(3):
        loss, _ = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable  # every adapter moved (B is non-zero now), nothing frozen did

    lora_actions = policy.predict_batch(batch)  # eval mode: LoRA dropout off
    merged = merge_lora(policy)
    assert len(merged) == 4 * TINY["depth"]
    assert not lora_layers(policy) and not hasattr(policy, "peft_config")
    assert all(type(policy.get_submodule(n)) is nn.Linear for n in merged)
    assert list(policy.state_dict()) == plain_keys  # the original keys, in the original order
    torch.testing.assert_close(policy.predict_batch(batch), lora_actions, rtol=0, atol=1e-5)
    loaded = Policy.load(policy.save(tmp_path / "merged"))  # strict key check passes: plain checkpoint
    torch.testing.assert_close(loaded.predict_batch(batch), lora_actions, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(policy)
    apply_lora(policy, rank=2)  # after merging, adapters can be attached again


def test_unmerged_lora_checkpoint_hints_at_merging(tmp_path):
    policy = _policy()
    apply_lora(policy, rank=2)
    path = policy.save(tmp_path / "lora")
    with pytest.raises(CheckpointError, match="merge them first"):
        load_pretrained(_policy(), path)
    with pytest.raises(ValueError, match="load the pretrained weights first, then apply_lora"):
        load_pretrained(policy, path)


def test_export_of_a_policy_without_adapters_is_its_state_dict():
    policy = _policy()
    state = policy.state_dict()
    out = export_state_dict(policy)
    assert list(out) == list(state) and all(torch.equal(out[k], state[k]) for k in state)


# ------------------------------------------------------------------------------------------- head only


def test_train_only_trains_only_the_head():
    ds = TinyDataset()
    policy = _policy(ds)
    apply_finetune_setup(policy, {"init_from": None, "train_only": ["head.*"]})
    head = {n for n, _ in policy.named_parameters() if n.startswith("head.")}
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == head
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = make_optimizer(policy, lr=1e-2, weight_decay=0.1)
    batch = _batch(ds)
    for _ in range(3):
        loss, _ = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])} == head


def test_finetune_setup_refuses_contradictions_and_unknown_keys():
    with pytest.raises(
        ValueError, match=r"--train-only.*cannot be combined with --lora-rank.*--lora-train-also"
    ):
        check_finetune_setup({"train_only": ["head.*"], "lora": {"rank": 4}})
    with pytest.raises(ValueError, match=r"--train-only.*cannot be combined with --freeze"):
        apply_finetune_setup(_policy(), {"train_only": ["head.*"], "freeze": ["image_encoders.*"]})
    with pytest.raises(ValueError, match=r"unknown fine-tuning setting\(s\) \['train-only'\]"):
        check_finetune_setup({"train-only": ["head.*"]})
    with pytest.raises(ValueError, match=r"--train-only pattern 'hed\.\*' matches no parameter"):
        apply_finetune_setup(_policy(), {"train_only": ["hed.*"]})


# ------------------------------------------------------------------------------------------- table


def test_parameter_table_numbers_add_up():
    policy = _policy()
    apply_lora(policy, rank=4, train_also=["head.*"])
    counts = parameter_counts(policy)
    assert list(counts)[:3] == ["time_embed", "readout_embed", "image_encoders"]
    assert sum(n for _, n in counts.values()) == policy.num_parameters()
    trainable = policy.num_parameters(trainable_only=True)
    assert sum(t for t, _ in counts.values()) == trainable
    assert counts["head"][0] == counts["head"][1] and counts["image_encoders"][0] == 0
    lora = sum(p.numel() for n, p in policy.named_parameters() if ".lora_" in n)
    assert counts["transformer"][0] == lora
    table = parameter_table(policy)
    pct = 100 * trainable / policy.num_parameters()
    assert table.splitlines()[-1] == (
        f"trainable params: {trainable:,} || all params: {policy.num_parameters():,} || trainable%: {pct:.4f}"
    )
    assert f"{policy.num_parameters():>13,}" in table.splitlines()[-2]


# ------------------------------------------------------------------------------ published LoRA recipes


@pytest.fixture(scope="module")
def robot_dataset(tmp_path_factory):
    from vlaforge.data import Dataset, write_synthetic_dataset

    root = write_synthetic_dataset(
        tmp_path_factory.mktemp("lora") / "ds", episodes=2, length=12, height=64, width=64
    )
    return Dataset(root)


def _adapter_ranks(policy: nn.Module) -> dict[str, int]:
    return {n: m.lora_A["default"].weight.shape[0] for n, m in lora_layers(policy)}


def test_pi0_lora_preset_is_openpi_rank_16_backbone_32_expert(robot_dataset):
    policy = make_policy("pi0-tiny", robot_dataset)
    cfg = lora_preset(policy)
    cfg.apply(policy)
    ranks = _adapter_ranks(policy)
    backbone = {n: r for n, r in ranks.items() if n.startswith("transformer.backbone.")}
    expert = {n: r for n, r in ranks.items() if n.startswith("transformer.expert.")}
    assert backbone and expert and len(backbone) + len(expert) == len(ranks)
    assert set(backbone.values()) == {16} and set(expert.values()) == {32}
    scalings = {n: m.scaling["default"] for n, m in lora_layers(policy)}
    assert all(s == 1.0 for s in scalings.values())  # alpha == rank in both (openpi)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    # openpi freezes only the language-model weights: the vision tower and projections keep training.
    assert any(n.startswith("vision_tower.") for n in trainable)
    assert any(n.startswith("action_in_proj.") for n in trainable)
    assert not any(n.startswith("transformer.") and "lora_" not in n for n in trainable)


def test_openvla_lora_preset_is_rank_32_all_linear_but_the_lm_head(robot_dataset):
    policy = make_policy("openvla-oft-tiny", robot_dataset)
    cfg = lora_preset(policy)
    assert (cfg.rank, cfg.alpha, cfg.dropout) == (32, 16.0, 0.0)
    cfg.apply(policy)
    ranks = _adapter_ranks(policy)
    assert set(ranks.values()) == {32}
    assert {n.split(".")[0] for n in ranks} == {"vision_tower", "projector", "lm"}
    assert not any(n.startswith("lm.lm_head") for n in ranks)
    trainable = {
        n.split(".")[0] for n, p in policy.named_parameters() if p.requires_grad and "lora_" not in n
    }
    assert trainable == {"action_head", "proprio", "film"}  # OFT's own modules train fully


def test_octo_has_no_lora_preset():
    with pytest.raises(ValueError, match="no published LoRA recipe"):
        lora_preset(_policy())


def test_rank_pattern_glob_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="rank_pattern glob 'nowhere.*'"):
        apply_lora(_policy(), ["transformer.*"], rank=4, rank_pattern={"nowhere.*": 8})


def test_train_with_lora_flag_stores_the_resolved_preset(robot_dataset, tmp_path):
    import json

    from vlaforge.train.commands import run_training

    run_training(
        "pi0-tiny",
        robot_dataset.root,
        tmp_path / "run",
        finetune={"lora": "recipe"},
        train_overrides={"steps": 2, "batch_size": 2, "num_workers": 0, "log_every": 1, "save_every": 2},
        progress=False,
    )
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())["finetune"]["lora"]
    assert saved["rank"] == 16 and saved["rank_pattern"] == {"transformer.expert.*": 32}
    loaded = Policy.load(tmp_path / "run")  # merged: a plain checkpoint
    assert not lora_layers(loaded)
