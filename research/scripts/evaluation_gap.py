"""Two evaluations of the same run compared on the test examples they share, at ε_g (docs/research/recipe_search/).

    python research/scripts/evaluation_gap.py RUN [RUN ...] [--eval apgd-ce+apgd-t] [--reference autoattack]

An evaluation on ``n`` test images uses robustft's stratified subset of ``n`` (``data.split_seed``), so a
200-image AutoAttack evaluation and a 500-image one cover different, overlapping examples. This reads both
evidence files (``RUN/eval/NAME/correct.npz``), finds the examples they share and prints clean accuracy and
accuracy at the last ε of each grid on exactly those examples, and the gap (evaluation − reference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from robustft.config import load_config
from robustft.data import build_data, stratified_subset


def positions(run: Path, n: int) -> list[int]:
    """Indices into the run's test split of the stratified subset of ``n`` examples its evaluations use."""
    cfg = load_config(run / "config.yaml")
    labels = build_data(cfg.data).test.labels
    return stratified_subset(labels, n, cfg.data.split_seed).tolist()


def gap(run: Path, evaluation: str, reference: str) -> str:
    ours = np.load(run / "eval" / evaluation / "correct.npz")["correct"]
    ref = np.load(run / "eval" / reference / "correct.npz")["correct"]
    where_ours = {j: k for k, j in enumerate(positions(run, ours.shape[1]))}
    pairs = [(where_ours[j], k) for k, j in enumerate(positions(run, ref.shape[1])) if j in where_ours]
    if not pairs:
        return f"{run}: the two evaluations share no test example"
    a, b = map(list, zip(*pairs))
    clean, adv, ref_adv = ours[0, a].mean(), ours[-1, a].mean(), ref[-1, b].mean()
    return (f"{run}: {len(pairs)} shared examples, clean {100 * clean:.1f} % ({100 * ref[0, b].mean():.1f} %); "
            f"{evaluation} {100 * adv:.1f} %, {reference} {100 * ref_adv:.1f} %, gap {100 * (adv - ref_adv):+.1f} points")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--eval", default="apgd-ce+apgd-t", help="the evaluation to check (folder under RUN/eval/)")
    p.add_argument("--reference", default="autoattack", help="the stronger evaluation (folder under RUN/eval/)")
    args = p.parse_args()
    missing = [f"{r}/eval/{name}" for r in args.runs for name in (args.eval, args.reference)
               if not (r / "eval" / name / "correct.npz").is_file()]
    if missing:
        print("no evidence (correct.npz) in: " + ", ".join(missing), file=sys.stderr)
        return 2
    for run in args.runs:
        print(gap(run, args.eval, args.reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
