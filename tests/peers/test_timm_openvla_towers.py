"""OpenVLA's vision towers against real timm (PyPI ``timm`` 1.0.x): the DINOv2 and SigLIP-So400m ViTs that
OpenVLA's ``PrismaticVisionBackbone`` builds (``timm.create_model(id, pretrained=False, num_classes=0,
img_size=224, act_layer=None)``, features = ``get_intermediate_layers(n={depth - 2})``, DINOv2's
``LayerScale.gamma`` renamed ``scale_factor``), with random weights (seed 0), written into an OpenVLA
checkpoint under the released names, converted by ``convert_openvla`` and run by our fused tower.

* fast: the released configs with depth 4 (``depth=`` is a timm kwarg; width, heads, MLP, patch, registers,
  position table and activation are the released ones);
* slow: the released configs unchanged (24-layer DINOv2-L/14 + registers, 27-layer So400m/14; ~3 GB fp32).

Runs where timm is installed (``make test-peers``); skipped elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.peers.need import need  # noqa: E402

timm = need("timm", "timm 1.0")

from tests.convert.test_convert_openvla import (  # noqa: E402
    TEXT_CONFIG,
    _lm_tensors,
    projector,
    write_openvla,
)
from vlaforge.convert.openvla import convert_openvla  # noqa: E402
from vlaforge.models.vision.preprocess import preprocess_images  # noqa: E402
from vlaforge.policies.octo.policy import Policy  # noqa: E402
from vlaforge.policies.vla.recipes import VLA_RECIPES  # noqa: E402

# prismatic's "dinosiglip-vit-so-224px": featurizer = timm_model_ids[0], fused_featurizer = [1]
TIMM_IDS = {"dino": "vit_large_patch14_reg4_dinov2.lvd142m", "siglip": "vit_so400m_patch14_siglip_224"}
PREFIXES = {"dino": "vision_backbone.featurizer.", "siglip": "vision_backbone.fused_featurizer."}
TOL = 1e-4  # fp32, max abs over every feature (the features are O(1)-O(10))


def openvla_featurizer(model_id: str, depth: int | None, seed: int) -> torch.nn.Module:
    """timm's ViT as OpenVLA builds it, with random weights: timm's init plus a seeded perturbation of every
    tensor (so LayerScale's 1e-5 init and zero biases do not hide a wrongly mapped tensor)."""
    extra = {} if depth is None else {"depth": depth}
    model = timm.create_model(
        model_id, pretrained=False, num_classes=0, img_size=224, act_layer=None, **extra
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):  # LayerScale
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model.eval()


def openvla_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """prismatic's patched ``forward``: the second-to-last block's patch tokens, (B, N, D)."""
    out = model.get_intermediate_layers(pixels, n={len(model.blocks) - 2})
    return out[0] if isinstance(out, list | tuple) else out


def released_names(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The model's tensors as OpenVLA's checkpoint names them (``ls*.gamma`` -> ``ls*.scale_factor``)."""
    return {
        prefix + k.replace(".gamma", ".scale_factor"): v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
    }


def timm_pixels(model: torch.nn.Module, frames: np.ndarray) -> torch.Tensor:
    """The pixels prismatic's timm pipeline feeds the model: ``resolve_model_data_config``'s mean / std, with
    ``input_size`` set to 224 px by prismatic, so that its resize (``resize-naive``) is the identity on 224 px
    frames; computed without torchvision."""
    cfg = timm.data.resolve_model_data_config(model)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (B, 3, 224, 224)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (x - mean) / std


def vision_spec(depth: int | None) -> dict | None:
    if depth is None:
        return None  # the openvla recipe's published tower sizes
    spec = json.loads(json.dumps(VLA_RECIPES["openvla"].model["vision"]))
    for tower in spec.values():
        tower["hf"]["num_hidden_layers"] = depth
    return spec


def check_towers(tmp: Path, depth: int | None) -> dict[str, float]:
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8, generator=g).numpy()
    tensors = _lm_tensors(torch.Generator().manual_seed(0))
    ref, timm_px = {}, {}
    for i, (kind, model_id) in enumerate(TIMM_IDS.items()):
        model = openvla_featurizer(model_id, depth, seed=i)
        timm_px[kind] = timm_pixels(model, frames)
        with torch.no_grad():
            ref[kind] = openvla_features(model, timm_px[kind])  # (B, 256, D)
        assert ref[kind].shape == (2, 256, model.embed_dim) and ref[kind].std() > 0.1  # not a degenerate case
        tensors |= released_names(model, PREFIXES[kind])
        del model
    vis = sum(f.shape[-1] for f in ref.values())  # 1024 + 1152
    D = TEXT_CONFIG["hidden_size"]
    pg = torch.Generator().manual_seed(2)
    for name, (o, i) in {"fc1": (4 * vis, vis), "fc2": (D, 4 * vis), "fc3": (D, D)}.items():
        tensors[f"projector.{name}.weight"] = torch.randn(o, i, generator=pg) * vis**-0.5
        tensors[f"projector.{name}.bias"] = torch.randn(o, generator=pg) * 0.1
    proj = {k: v for k, v in tensors.items() if k.startswith("projector.")}
    src = write_openvla(tmp / "openvla-src", tensors)
    cfg = json.loads((src / "config.json").read_text())
    cfg["image_sizes"] = [224, 224]
    cfg["timm_model_ids"] = list(TIMM_IDS.values())
    (src / "config.json").write_text(json.dumps(cfg))
    del tensors
    report = convert_openvla(
        src,
        tmp / "out",
        unnorm_key="bridge_orig",
        vision=vision_spec(depth),
        frame_size=(224, 224),
        camera="image",
    )
    assert report.ok and not report.missing and not report.unexpected and not report.mismatched
    policy = Policy.load(tmp / "out")
    towers = policy.vision_tower.towers
    diffs = {}
    with torch.no_grad():
        for kind in TIMM_IDS:
            ours_px = preprocess_images(torch.from_numpy(frames), towers[kind].preprocess)  # (B, 3, 224, 224)
            diffs[f"{kind} pixels"] = (ours_px - timm_px[kind]).abs().max().item()
            ours = towers[kind](timm_px[kind])  # (B, 256, D)
            assert ours.shape == ref[kind].shape
            diffs[f"{kind} features"] = (ours - ref[kind]).abs().max().item()
        fused = policy._images({"observation.images.image": torch.from_numpy(frames)}, 2)  # (B, 256, D_lm)
        ref_fused = projector(proj, torch.cat([ref["dino"], ref["siglip"]], -1))
        diffs["fused projector tokens"] = (fused - ref_fused).abs().max().item()
    print(f"max abs differences vs timm {timm.__version__}: {diffs}")
    for what, d in diffs.items():
        assert d <= TOL, f"{what}: max abs difference {d:.3g} > {TOL}"
    return diffs


@pytest.mark.timeout(1200)  # seconds unloaded; minutes on a busy 2-core machine
def test_converted_towers_equal_timm_openvla_featurizers_at_reduced_depth(tmp_path):
    check_towers(tmp_path, depth=4)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_converted_towers_equal_timm_openvla_featurizers_at_released_configs(tmp_path):
    check_towers(tmp_path, depth=None)
