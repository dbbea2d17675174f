"""RT-2 co-training: the vision-language directory format, the robot/VL mixture, the VL loss, the CLI."""

import json
import shutil

import av
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TinyDataset
from vlaforge.data.cotrain import CoTrainingDataset
from vlaforge.data.errors import DatasetError
from vlaforge.data.vision_language import VisionLanguageDataset
from vlaforge.policies.vla.recipes import make_cotraining_policy
from vlaforge.train.sampler import StepBatchSampler

PROMPTS = ["what colour is the block", "describe the scene", "is the drawer open", "caption this"]
TARGETS = ["the block is red", "a table with a drawer", "yes it is open", "a robot arm near a cup"]


def _write_png(path, img: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_vl_dir(root, n: int = 8, size: tuple[int, int] = (20, 24)):
    """n records: even ones PNG files under images/, odd ones arrays in images.npz."""
    (root / "images").mkdir(parents=True)
    arrays, lines = {}, []
    for i in range(n):
        img = np.full((*size, 3), 10 + 30 * i, np.uint8)
        img[: size[0] // 2, :, 1] = 200
        if i % 2 == 0:
            name = f"images/{i:04d}.png"
            _write_png(root / name, img)
        else:
            name = f"img{i}"
            arrays[name] = img
        lines.append(json.dumps({"image": name, "prompt": PROMPTS[i % 4], "target": TARGETS[i % 4]}))
    np.savez(root / "images.npz", **arrays)
    (root / "vl.jsonl").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------- VL directory format
def test_vl_dataset_reads_png_and_npz_records(tmp_path):
    ds = VisionLanguageDataset(write_vl_dir(tmp_path / "vl"))
    assert len(ds) == 8
    png, npz = ds[0], ds[1]
    assert png["image"].dtype == torch.uint8 and tuple(png["image"].shape) == (20, 24, 3)
    assert int(png["image"][0, 0, 1]) == 200 and int(png["image"][-1, 0, 0]) == 10  # lossless PNG
    assert int(npz["image"][-1, 0, 0]) == 40 and (npz["prompt"], npz["target"]) == (PROMPTS[1], TARGETS[1])
    assert set(TARGETS) <= set(ds.texts())


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", "vl.jsonl:2: not valid JSON"),
        ('["a"]', "vl.jsonl:2: expected a JSON object"),
        ('{"image": "img1", "prompt": "q"}', "vl.jsonl:2: 'target' must be a non-empty string"),
        (
            '{"image": "images/9.png", "prompt": "q", "target": "a"}',
            "vl.jsonl:2: image file .* does not exist",
        ),
        ('{"image": "nokey", "prompt": "q", "target": "a"}', "vl.jsonl:2: image 'nokey' is neither"),
    ],
)
def test_vl_dataset_bad_record_names_its_line(tmp_path, line, match):
    root = write_vl_dir(tmp_path / "vl", n=2)
    first = (root / "vl.jsonl").read_text().splitlines()[0]
    (root / "vl.jsonl").write_text(f"{first}\n{line}\n")
    with pytest.raises(DatasetError, match=match):
        VisionLanguageDataset(root)


def test_vl_dataset_missing_or_empty_file(tmp_path):
    with pytest.raises(DatasetError, match="no vl.jsonl"):
        VisionLanguageDataset(tmp_path)
    (tmp_path / "vl.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match="holds no records"):
        VisionLanguageDataset(tmp_path)


# ---------------------------------------------------------------------------- the mixture
def _cotrain(tmp_path, robot_fraction=0.66, seed=0, n=30):
    root = tmp_path / "vl"
    vl = VisionLanguageDataset(root if root.is_dir() else write_vl_dir(root))
    return CoTrainingDataset(TinyDataset(n=n, history=1, chunk=1), vl, robot_fraction, seed, camera="front")


def test_mixture_ratio_over_many_batches_and_sample_layout(tmp_path):
    ds = _cotrain(tmp_path, robot_fraction=0.66)
    assert len(ds) == 46 and ds.n_vl == 16  # ceil(30 / 0.66); every robot frame once per epoch
    sampler = StepBatchSampler(len(ds), 8, seed=3)
    flags = [ds.is_vl(i) for step in range(300) for i in sampler.batch(step)]
    assert abs(1 - np.mean(flags) - 0.66) < 0.02
    robot_i, vl_i = 0, len(ds) - 1
    robot, vl = ds[robot_i], ds[vl_i]
    assert set(robot) == set(vl)  # default_collate needs one layout
    assert not robot["is_vl"] and robot["vl_target"] == ""
    assert vl["is_vl"] and vl["task"] in PROMPTS and vl["vl_target"] in TARGETS
    assert vl["action_is_pad"].all() and not vl["action"].any()
    assert tuple(vl["observation.images.front"].shape) == (1, 16, 16, 3)  # resized to the camera
    assert not vl["observation.images.wrist"].any()  # other cameras see zeros
    batch = default_collate([robot, vl])
    assert batch["is_vl"].tolist() == [False, True]
    with pytest.raises(ValueError, match="robot_fraction"):
        _cotrain(tmp_path, robot_fraction=1.0)


def test_mixture_is_deterministic_for_a_seed(tmp_path):
    a, b, c = _cotrain(tmp_path, seed=0), _cotrain(tmp_path, seed=0), _cotrain(tmp_path, seed=1)
    order = [(s["task"], s["vl_target"]) for s in (a[i] for i in range(a.n_robot, len(a)))]
    assert order == [(s["task"], s["vl_target"]) for s in (b[i] for i in range(b.n_robot, len(b)))]
    assert not np.array_equal(a._vl_order, c._vl_order)
    x, y = a[len(a) - 1], b[len(b) - 1]
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k], k
    counts = np.bincount(a._vl_order, minlength=8)
    assert counts.min() == 2 and counts.max() == 2  # 16 VL slots walk the 8 records twice


# ---------------------------------------------------------------------------- the loss
def _policy_and_batch(tmp_path):
    torch.manual_seed(0)
    ds = _cotrain(tmp_path, robot_fraction=0.5, n=8)
    policy = make_cotraining_policy("rt2-tiny", ds.robot, ds.vl)
    assert all(not policy.tokenizer.unknown_words(t) for t in TARGETS)  # VL words are in the vocabulary
    batch = default_collate([ds[0], ds[len(ds) - 1], ds[1], ds[len(ds) - 2]])  # robot, VL, robot, VL
    return policy, batch


def _loss(policy, batch):
    with torch.no_grad():
        return policy.loss(batch)


def test_vl_rows_train_on_text_and_robot_rows_on_actions(tmp_path):
    policy, batch = _policy_and_batch(tmp_path)
    loss, m = _loss(policy, batch)
    assert m["vl_fraction"] == 0.5 and np.isfinite(m["vl_loss"]) and np.isfinite(m["robot_loss"])
    assert loss.item() == pytest.approx((m["vl_loss"] + m["robot_loss"]) / 2, rel=1e-5)

    vl_actions = dict(batch, action=batch["action"].clone())
    vl_actions["action"][[1, 3]] = 5.0  # a VL row's actions (padded) are not targets
    assert _loss(policy, vl_actions)[0].item() == loss.item()

    robot_text = dict(batch, vl_target=["the drawer", batch["vl_target"][1], "a cup", batch["vl_target"][3]])
    assert _loss(policy, robot_text)[0].item() == loss.item()  # a robot row's text target is unused

    vl_text = dict(batch, vl_target=[batch["vl_target"][0], "the block is open", "", batch["vl_target"][3]])
    _, m2 = _loss(policy, vl_text)
    assert m2["vl_loss"] != m["vl_loss"] and m2["robot_loss"] == m["robot_loss"]

    robot_actions = dict(batch, action=batch["action"].clone())
    robot_actions["action"][0] = -batch["action"][0]
    _, m3 = _loss(policy, robot_actions)
    assert m3["robot_loss"] != m["robot_loss"] and m3["vl_loss"] == m["vl_loss"]


def test_vl_loss_is_next_token_prediction_after_the_prompt(tmp_path):
    """The VL loss is the CE of each target token given image + prompt + the target tokens before it."""
    policy, batch = _policy_and_batch(tmp_path)
    vl_only = {k: (v[1:2] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}
    _, m = _loss(policy, vl_only)
    ids = policy._text_targets(vl_only["vl_target"])[0][0]  # (T,)
    prefix, valid = policy._prefix(vl_only, raw_prompt=True)
    nll = []
    with torch.no_grad():
        for t in range(len(ids)):  # recompute token by token from scratch (no teacher-forcing shortcut)
            x = torch.cat([prefix, policy.lm.embed(ids[None, :t])], dim=1)
            v = torch.cat([valid, torch.ones(1, t, dtype=torch.bool)], dim=1)
            mask = policy._mask(v, prefix.shape[1], t, action_causal=True)
            h = policy.lm(
                inputs_embeds=x, attention_mask=mask, position_ids=policy._positions(v), logits="none"
            )
            logits = policy.lm.compute_logits(h.hidden_states[:, -1]).float()  # (1, V)
            nll.append(torch.nn.functional.cross_entropy(logits, ids[t : t + 1]).item())
    assert m["vl_loss"] == pytest.approx(float(np.mean(nll)), rel=1e-4)
    assert m["vl_fraction"] == 1.0 and "robot_loss" not in m


def test_cotraining_refuses_oft_and_non_vla_recipes(tmp_path):
    ds = _cotrain(tmp_path, n=8)
    for recipe in ("openvla-oft-tiny", "octo-tiny"):
        with pytest.raises(ValueError, match="VLA token recipes"):
            make_cotraining_policy(recipe, ds.robot, ds.vl)


# ---------------------------------------------------------------------------- training + CLI
def test_rt2_tiny_cotraining_run_and_exact_resume(tmp_path):
    from vlaforge.data import Dataset, write_synthetic_dataset
    from vlaforge.policies.octo.policy import Policy
    from vlaforge.train.commands import resume_training, run_training

    data = write_synthetic_dataset(tmp_path / "data", episodes=2, length=8, height=32, width=32)
    vl = write_vl_dir(tmp_path / "vl")
    n_robot = len(Dataset(data))
    sampler = StepBatchSampler(-(-n_robot * 100 // 66), 4, seed=0)
    assert any(i >= n_robot for step in (0, 1) for i in sampler.batch(step))  # the run does see VL rows
    train = {"steps": 3, "batch_size": 4, "num_workers": 0, "cache_frames": False, "seed": 0, "save_every": 2}
    policy, res = run_training(
        "rt2-tiny",
        data,
        tmp_path / "whole",
        train_overrides=train,
        cotrain={"vl": vl, "robot_fraction": 0.66},
        progress=False,
    )
    assert res.steps == 3 and np.isfinite(res.final_loss)
    saved = json.loads((tmp_path / "whole" / "train_config.json").read_text())
    assert saved["cotrain"] == {"vl": str(vl.resolve()), "robot_fraction": 0.66}
    assert policy.tokenizer.token_id("drawer") is not None  # the VL words are in the vocabulary
    # A run killed after its step-2 checkpoint, resumed: the same weights as the uninterrupted run.
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "00000003")
    shutil.rmtree(tmp_path / "cut" / "policy")
    _, res = resume_training(tmp_path / "cut", progress=False)
    assert res.steps == 3
    a, b = Policy.load(tmp_path / "whole").state_dict(), Policy.load(tmp_path / "cut").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_cotraining_errors(tmp_path):
    from vlaforge.cli import main

    base = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--cotrain-vl", str(tmp_path)]
    with pytest.raises(SystemExit, match="octo-tiny' is not one"):
        main([*base, "--recipe", "octo-tiny"])
    with pytest.raises(SystemExit, match="must be in \\(0, 1\\)"):
        main([*base, "--recipe", "rt2-tiny", "--robot-fraction", "1.5"])
    with pytest.raises(SystemExit, match="give --cotrain-vl"):
        main(
            [
                "train",
                "--recipe",
                "rt2-tiny",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
                "--robot-fraction",
                "0.6",
            ]
        )
