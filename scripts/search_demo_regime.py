"""The demo's regime with a few settings changed: train and evaluate its variants (standard, fix, scheduled)
for several seeds, then print the table. docs/recipe_search/README.md has the results.

    python scripts/search_demo_regime.py e16_ep30 --variants fix scheduled --seeds 0 1 2
    python scripts/search_demo_regime.py e16_ep30 --set eval.n=200   # further overrides

Each run is ``OUT/CANDIDATE_VARIANT_sSEED`` (finished runs are reused, a killed one resumes). Robustness is
judged by the evaluation with its checks on; stronger evaluations of a finished run are
``robustft eval RUN --attacks apgd-ce,apgd-t --set eval.num_steps=…``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from robustft import fine_tune, load_config
from robustft.experiments.demo import DEMO_SETTINGS, DEMO_VARIANTS

CANDIDATES: dict[str, dict[str, object]] = {
    "demo": {},
    "ep30": {"train.epochs": 30},
    "e16_ep30": {"train.epochs": 30, "attack.eps": "16/255"},
    "e24_ep30": {"train.epochs": 30, "attack.eps": "24/255", "eval.eps_step": "6/255"},
    "e32_ep30": {"train.epochs": 30, "attack.eps": "32/255", "eval.eps_step": "8/255"},
}
"""Candidate name → settings that differ from the demo's (robustft/experiments/demo.py)."""


def override(key: str, value: object) -> str:
    """One ``--set`` string for a setting."""
    if value is None:
        text = "null"
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(map(str, value)) + "]"
    else:
        text = str(value)
    return f"{key}={text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", choices=sorted(CANDIDATES))
    parser.add_argument("--variants", nargs="+", default=list(DEMO_VARIANTS), choices=list(DEMO_VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="runs/demo_regime")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        for variant in args.variants:
            settings = {**DEMO_SETTINGS, **DEMO_VARIANTS[variant], **CANDIDATES[args.candidate]}
            name = f"{args.candidate}_{variant}_s{seed}"
            overrides = [override(k, v) for k, v in settings.items()] + args.set + [
                f"train.seed={seed}", f"train.out_dir={args.out}", f"train.run_name={name}"]
            print(f"{name} ...", flush=True)
            fine_tune(load_config(None, overrides), resume=True)
            runs.append(str(Path(args.out) / name))
    return subprocess.call(["robustft", "table", *runs])


if __name__ == "__main__":
    sys.exit(main())
