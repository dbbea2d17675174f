"""The arguments of `vlaforge convert-openvla SRC OUT` and `vlaforge convert-pi0 SRC --out DIR`.

Defined here, without torch imports, so `vlaforge --help` stays instant (`commands.py` registers them);
the converter modules build their ``python -m`` parsers from the same functions, so both spellings of
each command accept exactly the same options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DTYPE_CHOICES = ("bfloat16", "float16", "float32")
OPENVLA_HELP = "Convert a downloaded openvla/openvla-7b directory into a vlaforge 'openvla' policy."
PI0_HELP = (
    "Convert a downloaded π0 or π0.5 PyTorch checkpoint (LeRobot lerobot/pi0_base- / lerobot/pi05_base-style "
    "or openpi's PyTorch conversion) into a vlaforge 'pi0' or 'pi05' policy (the weights say which)."
)


def add_openvla_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src", type=Path, help="local openvla/openvla-7b directory (config.json, safetensors, tokenizer)"
    )
    p.add_argument("out", type=Path, help="output policy directory (Policy.load / vlaforge eval read it)")
    p.add_argument("--unnorm-key", default=None, help="dataset statistics to use (e.g. bridge_orig)")
    p.add_argument("--camera", default="image", help="camera name the policy reads (default: image)")
    p.add_argument(
        "--frame-size",
        type=int,
        nargs=2,
        default=(224, 224),
        metavar=("H", "W"),
        help="frame size given to it",
    )
    p.add_argument("--fps", type=float, default=10.0, help="control rate stored with the policy")
    p.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=None, help="cast the weights (default: as stored)"
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")


def add_pi0_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src",
        type=Path,
        help="local checkpoint directory: config.json + model.safetensors (or an index + shards)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output policy directory (Policy.load / vlaforge eval read it)",
    )
    p.add_argument(
        "--layout",
        choices=("auto", "lerobot", "openpi"),
        default="auto",
        help="key layout of the file: LeRobot's PI0Policy ('model.' prefix) or openpi's PI0Pytorch (default: "
        "detected)",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="PaliGemma tokenizer.json, or a directory holding it (default: SRC/tokenizer.json), e.g. from "
        "google/paligemma-3b-pt-224",
    )
    p.add_argument(
        "--stats",
        type=Path,
        default=None,
        help="a LeRobot/vlaforge dataset directory whose meta/stats.json gives the normalization statistics "
        "(required when the checkpoint has none, e.g. base models; replaces the checkpoint's otherwise)",
    )
    p.add_argument(
        "--asset-id",
        default=None,
        help="openpi: which assets/<asset_id>/norm_stats.json to use when there are several",
    )
    p.add_argument(
        "--cameras",
        default=None,
        help="comma-separated camera names, in the checkpoint's image order (default: LeRobot's "
        "input_features; openpi: base_0_rgb,left_wrist_0_rgb,right_wrist_0_rgb)",
    )
    p.add_argument(
        "--frame-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="frame size of every camera (default: LeRobot's feature shapes, else 224 224)",
    )
    p.add_argument(
        "--state-dim", type=int, default=None, help="robot state size (default: from the checkpoint)"
    )
    p.add_argument(
        "--action-dim", type=int, default=None, help="robot action size (default: from the checkpoint)"
    )
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="control rate stored with the policy (default: --stats's, else 10)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=None,
        help="dtype of the written weights (default: float32, what Pi0Policy computes with; bfloat16 halves "
        "the file but the policy then needs torch.autocast to run)",
    )
    p.add_argument(
        "--fast-tokenizer",
        type=Path,
        default=None,
        metavar="DIR",
        help="π0.5 only: a vlaforge FAST tokenizer directory (FastTokenizer.save; fit_fast_tokenizer on "
        "your dataset) attached to the policy so it can train its FAST loss; published π0.5 checkpoints "
        "ship none, and flow inference needs none",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
