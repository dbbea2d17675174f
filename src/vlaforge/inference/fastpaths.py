"""Inference fast paths that ship: what `load_policy` (and so `vlaforge eval` / `serve`) applies, and
what `vlaforge bench` times against the plain call.

    bf16 weights  `bf16_copy`: a copy cast by its `cast_for_inference(torch.bfloat16)` (Octo-layout
                  `Policy`: the transformer; π0 / π0.5: vision, projector, Gemma + expert): no per-call
                  weight casts, half the bytes read
    compile       `compiled_copy`: torch.compile (inductor) on an Octo-layout policy's conv stems, each
                  transformer block and the head's network (π0 / π0.5 compile their own per-chunk networks:
                  `Pi0Policy.compile_sampling()`); `compile_toolchain_problem` says up front why inductor
                  cannot build kernels on a machine
    int8          `int8_copy`: dynamic int8 quantization of the transformer's and the head's nn.Linear
                  layers (weights int8 ahead of time, activations quantized per call); CPU only
    prefix cache  `prefix_cache.StagedPredictor(policy, prefix_cache=True)`: the Octo task block's
                  keys/values computed once per instruction

Which path applies to a policy is what its class declares (`policies.base.Capabilities`); `lm_family`
names the module layout of the pretrained-LM policies (they take other paths than the Octo layout).
A path that does not apply to a policy or device raises `PathUnavailable` (a ValueError: a reason, not
a failure).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from vlaforge.policies.octo.policy import Policy


class PathUnavailable(ValueError):
    """The fast path does not apply to this policy, device or machine (a reason, not a failure)."""


def lm_family(policy: Any) -> str | None:
    """The module layout of a pretrained-LM policy (its ``layout``: 'pi0' for π0 and π0.5, 'pi0-fast',
    'vla', 'oft'), None for the Octo layout."""
    return None if policy.layout == "octo" else policy.layout


def compiled_copy(policy: Policy) -> Policy:
    """A deep copy whose conv stems, transformer blocks and head network are `torch.compile`d.

    Blocks are compiled one by one rather than the whole `BlockTransformer`, whose mask check reads a
    tensor value (a graph break) and whose cache arguments vary; the blocks all share one code object,
    so inductor compiles it once for all layers (static shapes: a robot loop calls with one shape).
    """
    c = copy.deepcopy(policy)
    for cam in c.camera_names:
        c.image_encoders[cam] = torch.compile(c.image_encoders[cam], dynamic=False)
    for i in range(len(c.transformer.blocks)):
        c.transformer.blocks[i] = torch.compile(c.transformer.blocks[i], dynamic=False)
    for attr in ("net", "mlp"):  # diffusion / flow / l1: net; binned: mlp
        sub = getattr(c.head, attr, None)
        if isinstance(sub, nn.Module):
            setattr(c.head, attr, torch.compile(sub, dynamic=False))
    return c


def bf16_copy(policy: Any) -> Any:
    """A deep copy cast by its `cast_for_inference(torch.bfloat16)` (Octo `Policy`, π0 / π0.5)."""
    return copy.deepcopy(policy).cast_for_inference(torch.bfloat16).eval()


INT8_SCOPES = ("transformer.", "head.")


def int8_copy(policy: Policy) -> Policy:
    """A copy whose nn.Linear layers in the transformer and the head are dynamically quantized to int8.

    Those hold nearly all the Linear FLOPs. The encoders stay fp32: `StateEncoder` reads its
    projection's `weight.dtype`, which a quantized Linear does not have (its weight is packed), and
    its 4 -> D projection costs nothing anyway.
    """
    from torch.ao.quantization import quantize_dynamic

    names = {
        name
        for name, m in policy.named_modules()
        if isinstance(m, nn.Linear) and name.startswith(INT8_SCOPES)
    }
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (not a dependency); it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(copy.deepcopy(policy), names, dtype=torch.qint8)


def compile_toolchain_problem(device: torch.device) -> str | None:
    """Why inductor cannot build kernels for `device` here (no C++ compiler on CPU, no Triton on CUDA),
    or None. Checked up front so the bench reports a reason instead of a traceback from the first call."""
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # a torch without this helper: let the first call tell
            return None
        try:
            get_cpp_compiler()
        except Exception as e:  # inductor raises InvalidCxxCompiler (or OSError) when none is found
            return (
                f"torch.compile on CPU needs a C++ compiler and inductor found none ({_first_line(e)}); "
                "install g++ or set CXX"
            )
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "torch.compile on CUDA needs Triton, which is not installed"
    return None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
