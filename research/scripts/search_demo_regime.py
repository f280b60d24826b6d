"""The demo's regime with a few settings changed: train and evaluate its variants (standard, fix, scheduled)
for several seeds, then print the table. docs/research/recipe_search/README.md has the results.

    python research/scripts/search_demo_regime.py e16_ep30 --variants fix scheduled --seeds 0 1 2
    python research/scripts/search_demo_regime.py e16_ep30 --set eval.n=200   # further overrides

Each run is ``OUT/CANDIDATE/VARIANT-seedN``, run as the demo's sweep (finished runs are reused, a killed
one resumes, a failed one is recorded in ``OUT/CANDIDATE/sweep.json``). Robustness is
judged by the evaluation with its checks on; stronger evaluations of a finished run are
``robustft eval RUN --attacks apgd-ce,apgd-t --set eval.num_steps=…``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from robustft.experiments.demo import DEMO_VARIANTS, demo_spec
from robustft.experiments.sweep import SweepSpec, expand, finished_runs, run_sweep

E32_APGD7 = {"train.epochs": 30, "attack.eps": "32/255", "attack.num_steps": 7, "eval.eps_step": "8/255"}
"""30 epochs at ε_g = 32/255 with a 7-step training attack: the base of the 32/255 candidates."""
CANDIDATES: dict[str, dict[str, object]] = {
    "demo": {},
    "ep30": {"train.epochs": 30},
    "e16_ep30": {"train.epochs": 30, "attack.eps": "16/255"},
    "e24_ep30": {"train.epochs": 30, "attack.eps": "24/255", "eval.eps_step": "6/255"},
    "e32_ep30": {"train.epochs": 30, "attack.eps": "32/255", "eval.eps_step": "8/255"},
    "e16_ep30_h10": {"train.epochs": 30, "attack.eps": "16/255"},
    "e24_ep30_h10": {"train.epochs": 30, "attack.eps": "24/255", "eval.eps_step": "6/255"},
    "e16_ep30_h25_50": {"train.epochs": 30, "attack.eps": "16/255"},
    "e24_ep30_h25_50": {"train.epochs": 30, "attack.eps": "24/255", "eval.eps_step": "6/255"},
    "s64_n300_e16_ep30": {"data.image_size": 64, "data.n_train": 300, "train.epochs": 30, "attack.eps": "16/255",
                          "eval.eps_step": "4/255"},
    "e32_ep30_h10_apgd7": E32_APGD7,
    "e32_ep30_h25_apgd7": E32_APGD7,
    "e32_ep50_h25_apgd7": {**E32_APGD7, "train.epochs": 50},
    "n500_e32_ep30_h10_apgd5": {**E32_APGD7, "data.n_train": 500, "attack.num_steps": 5},
    "n500_e32_ep30_h25_apgd5": {**E32_APGD7, "data.n_train": 500, "attack.num_steps": 5},
}
"""Candidate name → settings that differ from the demo's (robustft/experiments/demo.py)."""
HINGES: dict[str, tuple[float, float]] = {"e16_ep30_h10": (0.1, 0.5), "e24_ep30_h10": (0.1, 0.5),
                                           "e16_ep30_h25_50": (0.25, 0.5), "e24_ep30_h25_50": (0.25, 0.5),
                                           "s64_n300_e16_ep30": (0.1, 0.5), "e32_ep30_h10_apgd7": (0.1, 0.5),
                                           "n500_e32_ep30_h10_apgd5": (0.1, 0.5)}
"""Candidate name → the scheduled variant's hinges (t1, t2) where they differ from the demo's."""


def candidate_spec(candidate: str, variants: list[str], seeds: list[int], out_dir: str | Path,
                   overrides: list[str] = ()) -> SweepSpec:
    """The demo's sweep (robustft.experiments.demo.demo_spec) with a candidate's settings and ``overrides``
    (``section.key=value``, values parsed as YAML) on top, into ``OUT_DIR/CANDIDATE``."""
    extra = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in overrides)}
    demo = demo_spec(Path(out_dir) / candidate)
    chosen = {v: dict(demo.variants[v]) for v in variants}
    if candidate in HINGES and "scheduled" in chosen:
        chosen["scheduled"].update(zip(("schedule.t1", "schedule.t2"), HINGES[candidate]))
    return replace(demo, fixed={**demo.fixed, **CANDIDATES[candidate], **extra}, variants=chosen,
                   grid={"train.seed": list(seeds)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", choices=sorted(CANDIDATES))
    parser.add_argument("--variants", nargs="+", default=list(DEMO_VARIANTS), choices=list(DEMO_VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="runs/demo_regime")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, one process each (default 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = candidate_spec(args.candidate, args.variants, args.seeds, args.out, args.set)
    points = expand(spec)
    outcome = run_sweep(points, spec.out_dir, jobs=args.jobs)
    print(outcome.summary())
    finished = finished_runs(points, spec.out_dir)
    table = subprocess.call([sys.executable, "-m", "robustft", "table", *map(str, finished)]) if finished else 1
    return 1 if outcome.names("failed") else table


if __name__ == "__main__":
    sys.exit(main())
