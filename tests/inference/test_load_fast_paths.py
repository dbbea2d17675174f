"""`load_policy` (`vlaforge eval/serve --int8 | --bf16 | --compile`): the policy used is the quantized / bf16 /
compiled one, close to fp32; what does not apply is an exception (the CLIs print it as one line)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.inference import PathUnavailable
from vlaforge.inference.load import load_policy
from vlaforge.policies.recipes import make_policy


def test_int8_policy_is_quantized_and_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    ds = TinyDataset()
    run = make_policy("octo-tiny", ds, head="l1", **{**TINY, "augment": False}).save(tmp_path / "policy")
    fp32, int8 = load_policy(str(run)), load_policy(str(run), int8=True)
    quantized = [n for n, m in int8.named_modules() if "quantized" in type(m).__module__]
    assert quantized and all(n.startswith(("transformer.", "head.")) for n in quantized)
    batch = default_collate([ds[i] for i in range(4)])
    a, b = fp32.predict_batch(batch), int8.predict_batch(batch)  # (B, H, A) in robot units
    assert a.shape == b.shape
    scale = a.abs().max().item() + 1e-6
    assert (a - b).abs().max().item() < 0.1 * scale  # int8 rounding, not a different policy


def test_int8_refuses_policies_it_does_not_cover(tmp_path, monkeypatch):
    import vlaforge.policies.octo.policy as policy_module

    class NotOcto:
        pass

    monkeypatch.setattr(policy_module.Policy, "load", staticmethod(lambda path, **kw: NotOcto()))
    with pytest.raises(PathUnavailable, match="int8 covers the octo-family"):
        load_policy("somewhere", int8=True)
    with pytest.raises(PathUnavailable, match="bf16 covers the octo-family"):
        load_policy("somewhere", bf16=True)
    with pytest.raises(ValueError, match="choose one"):
        load_policy("somewhere", int8=True, bf16=True)
    with pytest.raises(ValueError, match="CPU only"):
        load_policy("somewhere", int8=True, map_location="cuda")
    with pytest.raises(ValueError, match="does not combine"):
        load_policy("somewhere", int8=True, compile=True)


def test_compile_refuses_what_it_cannot_compile(monkeypatch):
    import vlaforge.inference.load as load_module
    import vlaforge.policies.octo.policy as policy_module

    class NotOcto:
        device = torch.device("cpu")

    monkeypatch.setattr(policy_module.Policy, "load", staticmethod(lambda path, **kw: NotOcto()))
    monkeypatch.setattr(load_module, "compile_toolchain_problem", lambda device: None)
    with pytest.raises(PathUnavailable, match="compile covers the octo-family"):
        load_policy("somewhere", compile=True)
    monkeypatch.setattr(load_module, "compile_toolchain_problem", lambda device: "no C++ compiler")
    with pytest.raises(PathUnavailable, match="compile: no C\\+\\+ compiler"):
        load_policy("somewhere", compile=True)


@pytest.mark.slow
def test_compiled_policy_is_warm_and_matches(tmp_path):
    torch.manual_seed(0)
    ds = TinyDataset()
    run = make_policy("octo-tiny", ds, head="l1", **{**TINY, "augment": False}).save(tmp_path / "policy")
    flow = make_policy("octo-tiny", ds, head="flow", **{**TINY, "augment": False}).save(tmp_path / "flow")
    eager, compiled = load_policy(str(run)), load_policy(str(run), compile=True)
    batch = default_collate([ds[0]])
    assert torch.allclose(eager.predict_batch(batch), compiled.predict_batch(batch), atol=1e-4)
    compiled_flow = load_policy(str(flow), compile=True)  # flow head: the RTC graph is warmed up too
    assert compiled_flow.predict_batch(batch).shape == eager.predict_batch(batch).shape


def test_bf16_policy_runs_its_transformer_in_bf16_and_stays_close(tmp_path):
    torch.manual_seed(0)
    ds = TinyDataset()
    run = make_policy("octo-tiny", ds, head="l1", **{**TINY, "augment": False}).save(tmp_path / "policy")
    fp32, bf16 = load_policy(str(run)), load_policy(str(run), bf16=True)
    assert fp32.transformer.dtype == torch.float32 and bf16.transformer.dtype == torch.bfloat16
    batch = default_collate([ds[i] for i in range(4)])
    a, b = fp32.predict_batch(batch), bf16.predict_batch(batch)
    assert b.dtype == torch.float32 and a.shape == b.shape
    assert (a - b).abs().max().item() < 0.05 * (a.abs().max().item() + 1e-6)


@pytest.mark.parametrize("flags", [[], ["--bf16"], ["--int8"]])
def test_serve_command_loads_the_fast_path(tmp_path, monkeypatch, flags):
    import argparse

    import vlaforge.serve.server as server_module
    from vlaforge.serve.commands import register

    served = {}

    class FakeServer:
        def __init__(self, policy, host, port, **kw):
            served["policy"] = policy

        def run(self):
            served["ran"] = True

    monkeypatch.setattr(server_module, "PolicyServer", FakeServer)
    run = make_policy("octo-tiny", TinyDataset(), head="l1", **TINY).save(tmp_path / "policy")
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    args = p.parse_args(["serve", str(run), *flags])
    assert args.func(args) == 0 and served["ran"]
    policy = served["policy"]
    kinds = {type(m).__module__ for m in policy.transformer.modules()}
    assert (policy.transformer.dtype == torch.bfloat16) == (flags == ["--bf16"])
    assert any("quantized" in k for k in kinds) == (flags == ["--int8"])
    with pytest.raises(SystemExit):  # one fast path at a time
        p.parse_args(["serve", str(run), "--bf16", "--int8"])


def test_cli_turns_load_errors_into_one_line(tmp_path):
    """A checkpoint that cannot be read, or a fast path that does not apply: `vlaforge serve` / `eval` exit
    with one line naming the problem, not a traceback."""
    from vlaforge.cli import main

    run = make_policy("octo-tiny", TinyDataset(), head="l1", **TINY).save(tmp_path / "policy")
    with pytest.raises(SystemExit, match=r"^vlaforge serve: .*int8 runs on the CPU only"):
        main(["serve", str(run), "--int8", "--device", "cuda"])
    (tmp_path / "broken").mkdir()
    with pytest.raises(SystemExit, match=r"^vlaforge serve: .*holds no policy"):
        main(["serve", str(tmp_path / "broken")])
    with pytest.raises(SystemExit, match=r"^vlaforge eval: int8 and bf16 are two different fast paths"):
        main(["eval", str(run), "--int8", "--bf16", "--no-progress"])
