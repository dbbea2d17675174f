"""FSDP (`TrainConfig.parallel="fsdp"`): 2 CPU processes == 1 process, plain checkpoints, resume in any mode."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.cli import main as cli_main
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.recipes import make_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.fsdp import optimizer_state_by_index, optimizer_state_by_name, parameter_names
from vlaforge.train.lora import apply_lora, export_state_dict, lora_layers, merge_lora
from vlaforge.train.trainer import make_optimizer, train

ROOT = Path(__file__).resolve().parents[2]
LR = 1e-3  # the worker's learning rate


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=300)


def _worker(out: Path, mode: str, *, resume: bool = False) -> None:
    args = ["-m", "tests.train.fsdp_worker", str(out), mode, *(["resume"] if resume else [])]
    if mode == "single":
        _run([sys.executable, *args])
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        assert torchrun, "torchrun not found next to the interpreter"
        _run([torchrun, "--standalone", "--nproc_per_node", "2", *args])  # --standalone: a free port


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return (
        load_file(str(path / "model.safetensors")) if path.is_dir() else torch.load(path, weights_only=True)
    )


def _assert_close(a: dict, b: dict, atol: float, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=rtol), (k, float((a[k] - b[k]).abs().max()))


def _curve(run: Path) -> list[dict]:
    """The run's loss/eval curve without wall-clock times."""
    curve = json.loads((run / "train_summary.json").read_text())["curve"]
    return [{k: v for k, v in c.items() if k != "time_s"} for c in curve]


def _truncate_to_step_2(src: Path, dst: Path) -> None:
    """A copy of run `src` as if it had been killed right after its step-2 checkpoint."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints" / "00000004", dst / "policy", dst / "train_summary.json"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume(tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    _worker(single, "single")
    _worker(sharded, "fsdp")

    # Same global batch, same clipped gradients (clipping is active), same weights to Adam's tolerance.
    _assert_close(_weights(single / "final_grads.pt"), _weights(sharded / "final_grads.pt"), 1e-6, 1e-4)
    init = _weights(tmp_path / "single.init_weights.pt")
    final = _weights(single / "final_weights.pt")
    assert sum(not torch.equal(init[k], final[k]) for k in init) > 10  # training really moved the weights
    _assert_close(final, _weights(sharded / "final_weights.pt"), atol=2 * LR)
    # The policies FSDP wrote are plain checkpoints (EMA weights) that Policy.load reads.
    for ckpt in ("checkpoints/00000002/policy", "checkpoints/best/policy", "policy"):
        assert Policy.load(sharded / ckpt).num_parameters() == Policy.load(single / ckpt).num_parameters()
        _assert_close(_weights(single / ckpt), _weights(sharded / ckpt), atol=2 * LR)
    _assert_close(_weights(sharded / "policy"), _weights(sharded / "final_weights.pt"), 0.0)  # EMA left in
    # In-training eval ran on a plain copy holding exactly the EMA weights of that step; best = step 2.
    evaluated = _weights(sharded / "evals" / "00000002" / "evaluated_weights.pt")
    _assert_close(evaluated, _weights(sharded / "checkpoints" / "00000002" / "policy"), 0.0)
    _assert_close(evaluated, _weights(sharded / "checkpoints" / "best" / "policy"), 0.0)
    assert json.loads((sharded / "checkpoints" / "best" / "best.json").read_text())["step"] == 2
    summary = json.loads((sharded / "train_summary.json").read_text())
    assert [c["step"] for c in summary["curve"] if "loss" in c] == [2, 4]

    # Resume the step-2 checkpoint under FSDP: bit-exact continuation; the best policy (step 2) is kept.
    resumed = tmp_path / "resumed"
    _truncate_to_step_2(sharded, resumed)
    _worker(resumed, "fsdp", resume=True)
    _assert_close(_weights(sharded / "final_weights.pt"), _weights(resumed / "final_weights.pt"), 0.0)
    assert json.loads((resumed / "checkpoints" / "best" / "best.json").read_text())["step"] == 2
    assert _curve(sharded) == _curve(resumed)  # losses and eval scores, step by step

    # The same checkpoint resumes on one process too: the checkpoint format does not depend on the wrapping.
    alone = tmp_path / "alone"
    _truncate_to_step_2(sharded, alone)
    _worker(alone, "single", resume=True)
    _assert_close(_weights(sharded / "final_weights.pt"), _weights(alone / "final_weights.pt"), atol=2 * LR)


def test_fsdp_in_one_process_is_a_clear_error(tmp_path):
    ds = TinyDataset(n=8)
    policy = make_policy("octo-tiny", ds, head="l1", **TINY)
    cfg = TrainConfig(steps=1, batch_size=4, num_workers=0, parallel="fsdp")
    with pytest.raises(ValueError, match=r"(?s)parallel='fsdp'.*world size 1.*torchrun --nproc_per_node N"):
        train(policy, ds, cfg, tmp_path / "run", progress=False)
    for flags in (["--fsdp"], ["--parallel", "fsdp"]):
        with pytest.raises(SystemExit, match="torchrun --nproc_per_node N"):
            cli_main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "cli"), *flags])
    with pytest.raises(ValueError, match="TrainConfig.parallel"):
        TrainConfig(parallel="zero3")


def test_optimizer_state_names_round_trip():
    """Index-keyed (checkpoint) <-> name-keyed (torch.distributed.checkpoint) optimizer state, both ways."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.1)  # two groups: decay and no-decay
    model(torch.randn(5, 3)).square().mean().backward()
    opt.step()
    by_index = opt.state_dict()
    by_name = optimizer_state_by_name(by_index, parameter_names(model, opt))
    reference = get_optimizer_state_dict(
        model, opt
    )  # torch's own name-keyed layout (no process group needed)
    assert by_name["state"].keys() == reference["state"].keys() == {n for n, _ in model.named_parameters()}
    assert [g["params"] for g in by_name["param_groups"]] == [g["params"] for g in reference["param_groups"]]
    back = optimizer_state_by_index(reference)
    assert back["param_groups"] == by_index["param_groups"]
    assert back["state"].keys() == by_index["state"].keys()
    for i, s in by_index["state"].items():
        assert all(torch.equal(s[k], back["state"][i][k]) for k in s)
    with pytest.raises(ValueError, match="different model"):
        optimizer_state_by_name(by_index, [["0.weight"]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_of_a_given_state_merges_lora_like_peft(dtype):
    """export_state_dict(policy[, state]) (used for EMA and gathered FSDP weights) == merge_lora, bit for bit.

    bf16 base weights get float32 adapters (peft's autocast), so the merge mixes dtypes: the arithmetic
    of peft's get_delta_weight + in-place add must still be reproduced exactly.
    """
    torch.manual_seed(0)
    policy = make_policy("octo-tiny", TinyDataset(n=8), head="l1", **TINY).to(dtype)
    plain_keys = list(policy.state_dict())
    apply_lora(policy, ["transformer.*"], rank=2, alpha=4.0)
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # lora_B leaves zero: merging now changes the weights
    live = export_state_dict(policy)
    given = export_state_dict(policy, {k: v.clone() for k, v in policy.state_dict().items()})
    merged = copy.deepcopy(policy)
    merge_lora(merged)
    reference = merged.state_dict()
    assert list(live) == list(given) == list(reference) == plain_keys  # plain keys, original order
    for k in reference:
        assert live[k].dtype == reference[k].dtype == dtype
        assert torch.equal(live[k], reference[k]) and torch.equal(given[k], reference[k]), k
    attached = policy.state_dict()
    adapted = [n for n, _ in lora_layers(policy)]
    assert len(adapted) == 4 * TINY["depth"]
    for n in adapted:  # the update really was folded in: every adapted weight differs from its base
        assert not torch.equal(reference[f"{n}.weight"], attached[f"{n}.base_layer.weight"])
        assert torch.equal(reference[f"{n}.bias"], attached[f"{n}.base_layer.bias"])
