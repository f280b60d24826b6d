"""How strong each evaluation-attack setting is at one ε: accuracy and wall time on a run's stratified test
images, each setting a separate evaluation of the same images (cold starts, incremental over its attacks).

    python research/benchmarks/attack_strength.py runs/demo/fix-seed0 8/255 '{"attacks": ["apgd-ce"]}' \\
        '{"attacks": ["apgd-ce"], "num_steps": 100}' '{"attacks": ["apgd-ce", "apgd-t"], "num_steps": 100}'

Each setting is a JSON object of ``eval`` settings (attacks, num_steps, targets, restarts, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from robustft.attacks import build_eval_attacks
from robustft.config import parse_eps_grid
from robustft.eval import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the helpers it shares with benchmarks/
from run_model import load_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("eps", help="the ε, e.g. 8/255")
    p.add_argument("settings", nargs="+", help="JSON objects of eval settings, one evaluation each")
    p.add_argument("--n", type=int, default=200)
    args = p.parse_args()
    run, cfg, model, test = load_run(args.run_dir, args.n)
    eps = parse_eps_grid(args.eps)[-1]
    print(f"model: {run.path}; n={len(test)}; ε={args.eps}; torch threads {torch.get_num_threads()}")
    for text in args.settings:
        attacks = build_eval_attacks(dataclasses.replace(cfg.eval, **json.loads(text)), cfg.attack.norm)
        t0 = time.perf_counter()
        result = evaluate(model, test, [eps], attacks, device=torch.device("cpu"), image_size=cfg.data.image_size,
                          batch_size=250, mode="incremental", seed=0, bootstrap=0)
        print(f"  {text}: {100 * result.accuracy[-1]:.1f} % in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
