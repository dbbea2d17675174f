"""How far a paraphrase moves an instruction in MiniLM's features, as a policy's text tokens see it.

    python benchmarks/check_instruction_features.py --suites libero_spatial,libero_goal
    python benchmarks/check_instruction_features.py --suites libero_spatial,libero_goal --max-len 32

For each task of a suite and its LIBERO-PRO paraphrase (`<suite>_lan`), the frozen all-MiniLM-L6-v2
features of both sentences (16 tokens, as `octo-tiny --language minilm` reads them), compared three
ways, each by cosine similarity:
  by position  the 16 token features laid out slot by slot (what learned position embeddings key on:
               a word that moves changes slots);
  set          each token matched to its most similar token of the other sentence (Chamfer), order free;
  pooled       the mean over tokens (how all-MiniLM-L6-v2 was trained to compare sentences).
Reported per way: how many paraphrases are nearest their own instruction among the suite's
instructions, and the margin (similarity to their own minus to the nearest other). Offline, no
simulator, no policy; a diagnostic, not a success rate. Writes results/instruction_features_L<max-len>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"


def by_position(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """features (N, L, H), mask (N, L) -> (N, L*H) unit vectors, slot by slot."""
    return F.normalize((f * m[..., None].float()).flatten(1), dim=-1)


def pooled(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """-> (N, H) unit vectors, the mean over real tokens."""
    m = m.float()
    return F.normalize((f * m[..., None]).sum(1) / m.sum(1, keepdim=True), dim=-1)


def chamfer(fa: torch.Tensor, ma: torch.Tensor, fb: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
    """-> (Na, Nb): each token matched to its most similar token of the other sentence, both ways, averaged."""
    a = [F.normalize(fa[i][ma[i]], dim=-1) for i in range(len(fa))]
    b = [F.normalize(fb[j][mb[j]], dim=-1) for j in range(len(fb))]
    sim = torch.zeros(len(a), len(b))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            s = x @ y.T
            sim[i, j] = 0.5 * (s.max(1).values.mean() + s.max(0).values.mean())
    return sim


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="libero_spatial,libero_goal")
    ap.add_argument("--max-len", type=int, default=16, help="tokens per sentence (octo-tiny's text_max_len)")
    args = ap.parse_args()
    from vlaforge.envs.libero.suites import get_task, resolve_libero
    from vlaforge.models.pretrained_text import PretrainedTextEncoder

    enc = PretrainedTextEncoder(None, width=1, max_len=args.max_len)
    out: dict[str, dict] = {"command": "python " + " ".join(sys.argv), "suites": {}}
    for suite in [s for s in args.suites.split(",") if s]:
        tasks = resolve_libero(suite)
        originals = [get_task(t).instruction for t in tasks]
        paraphrases = [get_task(t.replace(suite + "/", suite + "_lan/", 1)).instruction for t in tasks]
        (fo, mo), (fp, mp) = (
            enc.frozen_features(originals),
            enc.frozen_features(paraphrases),
        )  # (N, L, H), (N, L)

        ways = {
            "by position": by_position(fp, mp) @ by_position(fo, mo).T,
            "set": chamfer(fp, mp, fo, mo),
            "pooled": pooled(fp, mp) @ pooled(fo, mo).T,
        }
        rows = {}
        print(f"\n{suite} ({len(tasks)} tasks, paraphrases from {suite}_lan)\n")
        print("| features | paraphrase nearest its own instruction | margins (min / median) |")
        print("|---|---:|---:|")
        for name, sim in ways.items():
            own = sim.diag()
            other = sim.clone().fill_diagonal_(-2.0).max(1).values
            margin = own - other
            hits = int((margin > 0).sum())
            rows[name] = {"nearest_own": hits, "margins": [round(float(x), 4) for x in margin]}
            print(f"| {name} | {hits}/{len(tasks)} | {margin.min():.3f} / {margin.median():.3f} |")
        out["suites"][suite] = {"ways": rows, "originals": originals, "paraphrases": paraphrases}
    path = RESULTS / f"instruction_features_L{args.max_len}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
