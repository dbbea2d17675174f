"""ONNX export of the Octo-layout policy: onnxruntime equals PyTorch for every head, dynamic batch,
`OnnxPolicy` as a drop-in `Policy`, clear errors.

Each head is exported once per module (tiny config, few sampling steps: the dynamo exporter's cost
grows with the unrolled graph) and shared by the tests below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.extras import require

require("onnxruntime", "export")
require("onnxscript", "export")
require("onnx", "export")

from tests.policies.policy_fakes import TINY, TinyDataset  # noqa: E402
from vlaforge.cli import main  # noqa: E402
from vlaforge.export import ExportError  # noqa: E402
from vlaforge.export.onnx import META_FILE, NOISE, OnnxPolicy, encode_words  # noqa: E402
from vlaforge.export.onnx_export import export_onnx, random_observations  # noqa: E402
from vlaforge.models.heads.samplers import DDIMSampler, DDPMSampler  # noqa: E402
from vlaforge.models.heads.schedules import CosineSchedule  # noqa: E402
from vlaforge.policies.octo.policy import Policy  # noqa: E402
from vlaforge.policies.recipes import make_policy  # noqa: E402
from vlaforge.types import IMAGE_PREFIX, STATE_KEY, PolicyLike  # noqa: E402

TOL = 1e-4
# Small heads and few steps keep each export to a few seconds; 16 px cameras resized to 8 px exercise
# the antialiased Resize that octo-tiny's 128 -> 64 px cameras need.
CONFIG = {**TINY, "depth": 1, "encoder_image_size": [8, 8]}
HEAD_KWARGS = {
    "l1": {"hidden_dim": 32, "num_blocks": 1},
    "binned": {"bins": 16, "hidden_dim": 32},
    "flow": {"steps": 3, "hidden_dim": 32, "num_blocks": 1, "time_dim": 8},
    "diffusion": {"train_steps": 4, "hidden_dim": 32, "num_blocks": 1, "time_dim": 8},  # DDPM: 4 draws
}
NOISE_DRAWS = {"l1": 0, "binned": 0, "flow": 1, "diffusion": 4}


def tiny_policy(head: str) -> Policy:
    torch.manual_seed(0)
    return make_policy("octo-tiny", TinyDataset(), head=head, head_kwargs=HEAD_KWARGS[head], **CONFIG).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Policy, OnnxPolicy, dict]]:
    """name -> (policy, its OnnxPolicy, export.json), exported lazily once per module.

    "l1", "binned", "flow", "diffusion" (DDPM) go through `export_onnx` on the in-memory policy; "ddim"
    is the diffusion policy saved to disk and exported by the CLI with `--steps 2` (DDIM).
    """
    cache: dict[str, tuple[Policy, OnnxPolicy, dict]] = {}

    def get(name: str) -> tuple[Policy, OnnxPolicy, dict]:
        if name not in cache:
            policy = tiny_policy("diffusion" if name == "ddim" else name)
            out = tmp_path_factory.mktemp(f"onnx-{name}")
            if name == "ddim":
                src = policy.save(tmp_path_factory.mktemp("policy"))
                argv = ["export", str(src), "--format", "onnx", "--out", str(out), "--steps", "2"]
                assert main([*argv, "--latency-runs", "2"]) == 0
            else:
                result = export_onnx(policy, out, latency_runs=2, log=None)
                assert result.verified and result.max_abs_diff <= TOL
            cache[name] = (
                policy,
                OnnxPolicy(out, threads=1, seed=0),
                json.loads((out / META_FILE).read_text()),
            )
        return cache[name]

    return get  # type: ignore[return-value]


def _random_batch(policy: Policy, b: int, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    c = policy.config
    rng = np.random.default_rng(seed)
    arrays = {
        IMAGE_PREFIX + cam: rng.integers(0, 256, (b, c.history, h, w, 3), dtype=np.uint8)
        for cam, (h, w) in c.cameras.items()
    }
    arrays[STATE_KEY] = rng.normal(size=(b, c.history, c.state_dim)).astype(np.float32)
    texts = ["push the red block", "Open the drawer!", "open a door"][:b]
    return arrays, (texts * b)[:b]


def _torch_and_onnx(policy: Policy, runner: OnnxPolicy, b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    arrays, texts = _random_batch(policy, b, seed)
    batch = {**{k: torch.from_numpy(v) for k, v in arrays.items()}, "task": texts}
    ref = policy.predict_batch(batch, generator=torch.Generator().manual_seed(seed)).numpy()
    inputs = {**arrays, **runner.encode_text(texts)}
    noise = runner.draw_noise(b, torch.Generator().manual_seed(seed))
    if noise is not None:
        inputs[NOISE] = noise
    return ref, runner.run(inputs)


@pytest.mark.parametrize("head", ["l1", "binned", "flow", "diffusion"])
def test_each_head_matches_torch(exported, head):
    policy, runner, meta = exported(head)
    assert meta["verification"]["verified"] and meta["verification"]["max_abs_diff"] <= TOL
    assert meta["sampler"]["noise_draws"] == NOISE_DRAWS[head]
    names = [i["name"] for i in meta["inputs"]]
    assert names[:3] == ["observation.images.front", "observation.images.wrist", "observation.state"]
    assert (NOISE in names) == (NOISE_DRAWS[head] > 0)
    assert meta["inputs"][0]["shape"] == ["B", 2, 16, 16, 3] and meta["inputs"][0]["dtype"] == "uint8"
    assert meta["language"]["vocab"] == policy.tokenizer.vocab
    ref, out = _torch_and_onnx(policy, runner, b=2, seed=11)  # inputs the export's own check did not see
    assert out.shape == ref.shape == (2, 4, 2)
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)


def test_dynamic_batch(exported):
    policy, runner, _ = exported("flow")
    ref5, out5 = _torch_and_onnx(policy, runner, b=5, seed=3)
    np.testing.assert_allclose(out5, ref5, rtol=0, atol=TOL)
    arrays, texts = _random_batch(policy, 5, 3)
    noise = np.random.default_rng(0).standard_normal((5, 1, 4, 2), dtype=np.float32)
    whole = runner.run({**arrays, **runner.encode_text(texts), NOISE: noise})  # (5, H, A)
    for i in (0, 4):  # each row alone = that row of the batch
        one = {k: v[i : i + 1] for k, v in arrays.items()}
        row = runner.run({**one, **runner.encode_text(texts[i : i + 1]), NOISE: noise[i : i + 1]})
        np.testing.assert_allclose(row[0], whole[i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("head", ["flow", "diffusion", "binned"])
def test_onnx_policy_predict_matches_policy_predict(exported, head):
    policy, runner, _ = exported(head)
    assert isinstance(runner, PolicyLike) and runner.spec == policy.spec
    obs = random_observations(policy, seed=5, instruction="Push the red block.")
    want = policy.predict(obs, generator=torch.Generator().manual_seed(7))
    got = runner.predict(obs, generator=torch.Generator().manual_seed(7))
    assert got.actions.shape == (4, 2) and got.actions.dtype == np.float32
    assert got.control_hz == want.control_hz
    np.testing.assert_allclose(got.actions, want.actions, rtol=0, atol=TOL)
    # one observation for a history-2 policy is repeated, as Policy.predict does
    single = policy.predict(obs[-1], generator=torch.Generator().manual_seed(8))
    np.testing.assert_allclose(
        runner.predict(obs[-1], generator=torch.Generator().manual_seed(8)).actions, single.actions, atol=TOL
    )


def test_cli_export_with_fewer_ddim_steps(exported, capsys):
    policy, runner, meta = exported("ddim")  # the CLI runs here (only this test asks for "ddim")
    printed = capsys.readouterr().out
    assert "(ddim, 2 steps)" in printed and "verified: max |onnxruntime - torch| =" in printed
    assert "latency per chunk, batch 1" in printed
    assert meta["sampler"] == {"kind": "ddim", "steps": 2, "noise_draws": 1, "requested_steps": 2}
    assert meta["source"] and meta["verification"]["max_abs_diff"] <= TOL
    obs = random_observations(policy, seed=2)
    want = policy.predict(obs, steps=2, generator=torch.Generator().manual_seed(3))
    got = runner.predict(obs, steps=2, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(got.actions, want.actions, rtol=0, atol=TOL)


def test_bad_inputs_are_clear_errors(exported):
    policy, runner, _ = exported("flow")
    obs = random_observations(policy, seed=1)
    obs[-1].images["front"] = np.zeros((8, 8, 3), np.uint8)  # wrong camera size
    with pytest.raises(
        ValueError, match=r"camera 'front': expected uint8 \(16, 16, 3\), got uint8 \(8, 8, 3\)"
    ):
        runner.predict(obs)
    arrays, texts = _random_batch(policy, 1, 0)
    arrays["observation.images.front"] = arrays["observation.images.front"][:, :, :8]  # (1, 2, 8, 16, 3)
    feeds = {**arrays, **runner.encode_text(texts), NOISE: runner.draw_noise(1)}
    with pytest.raises(ValueError, match=r"'observation.images.front': expected shape \(1, 2, 16, 16, 3\)"):
        runner.run(feeds)
    feeds["observation.images.front"] = np.zeros((1, 2, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="expected dtype uint8, got float32"):
        runner.run(feeds)
    with pytest.raises(ValueError, match="missing"):
        runner.run({k: v for k, v in feeds.items() if k != NOISE})
    with pytest.raises(ValueError, match="exported with 3 sampling steps"):
        runner.predict(random_observations(policy), steps=10)


def test_unsupported_policies_and_options():
    from vlaforge.bench.embodiment import metaworld_embodiment

    torch.manual_seed(0)
    vla = make_policy("rt2-tiny", metaworld_embodiment(32))
    with pytest.raises(ExportError, match="VLAPolicy.*not supported yet"):
        export_onnx(vla, "/nonexistent/never-written", log=None)
    binned = tiny_policy("binned")
    binned.head.temperature = 1.0
    with pytest.raises(ExportError, match="temperature 0"):
        export_onnx(binned, "/nonexistent/never-written", log=None)
    with pytest.raises(ExportError, match="no sampling steps"):
        export_onnx(tiny_policy("l1"), "/nonexistent/never-written", steps=5, log=None)
    with pytest.raises(ExportError, match="language is 'words'"):
        export_onnx(tiny_policy("l1"), "/nonexistent/never-written", instructions=["open it"], log=None)


def test_missing_packages_name_the_extra(monkeypatch):
    import importlib

    import vlaforge.export as export_pkg

    real = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(export_pkg.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"'onnxscript'.*pip install 'vlaforge\[export\]'"):
        export_onnx(tiny_policy("l1"), "/nonexistent/never-written", log=None)


def test_word_encoding_matches_the_policy_tokenizer():
    policy = tiny_policy("l1")
    texts = ["Push the red block!", "open   the DRAWER", "open the door, then push it", "", "red red red red red "
             "red red red red red"]  # fmt: skip
    ids, mask = policy.tokenizer.encode(texts, policy.config.text_max_len)
    index = {w: i for i, w in enumerate(policy.tokenizer.vocab)}
    got_ids, got_mask = encode_words(index, texts, policy.config.text_max_len)
    np.testing.assert_array_equal(got_ids, ids.numpy())
    np.testing.assert_array_equal(got_mask, mask.numpy())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim-eta"])
def test_explicit_step_noise_equals_generator_draws(sampler):
    """The samplers' `step_noise` (what the graph feeds) reproduces the generator's draws exactly."""
    schedule = CosineSchedule(6)
    smp = DDPMSampler(schedule) if sampler == "ddpm" else DDIMSampler(schedule, steps=4, eta=0.5)
    fn = lambda x, t: 0.1 * x + t.float()[:, None] / 10  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, generator=g)
    want = smp.sample(fn, x0, generator=g)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, generator=g)
    noise = torch.stack([torch.randn(3, 5, generator=g) for _ in range(smp.noise_draws())])
    assert smp.noise_draws() == (5 if sampler == "ddpm" else 3)  # DDIM visits t = 4, 3, 1, 0
    torch.testing.assert_close(smp.sample(fn, x0, step_noise=noise), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="step_noise must be"):
        smp.sample(fn, x0, step_noise=noise[:1])


@pytest.mark.slow
def test_minilm_policy_with_precomputed_instructions(tmp_path, monkeypatch):
    """language='minilm' (tiny random BERT): features precomputed at export; unknown ones need a text_encoder."""
    transformers = require("transformers", "text")
    words = ["open", "close", "the", "drawer", "push", "puck"]
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    cfg = transformers.BertConfig(
        vocab_size=11, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(bert)
    monkeypatch.setenv("VLAFORGE_MINILM_DIR", str(bert))  # what find_minilm_dir() looks at first
    torch.manual_seed(0)
    policy = make_policy("octo-tiny", TinyDataset(), head="flow", language="minilm",
                         head_kwargs=HEAD_KWARGS["flow"], **CONFIG).eval()  # fmt: skip
    out = tmp_path / "onnx"
    result = export_onnx(
        policy, out, instructions=["open the drawer", "push the puck"], latency_runs=0, log=None
    )
    assert result.verified
    runner = OnnxPolicy(out)
    obs = random_observations(policy, instruction="open the drawer")
    np.testing.assert_allclose(
        runner.predict(obs, generator=torch.Generator().manual_seed(0)).actions,
        policy.predict(obs, generator=torch.Generator().manual_seed(0)).actions,
        atol=TOL,
    )
    with pytest.raises(ValueError, match="no precomputed MiniLM features"):
        runner.predict(random_observations(policy, instruction="close the drawer"))
