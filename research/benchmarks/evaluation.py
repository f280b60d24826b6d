"""Cost and agreement of robustness-curve evaluations, side by side in one run on one model.

Three evaluations of the same examples over the same ε grid, each with APGD-CE (10 steps, 1 restart):

- robustft APGD-CE, incremental (attack at each ε only what survived the previous ε);
- robustft APGD-CE, independent (attack every example at every ε);
- pyautoattack's APGD-CE (the reference implementation), incremental through the same evaluator.

Prints the per-ε accuracies, the wall-time ratios incremental / independent and ours / reference, and
whether the incremental curve is at or below the independent one at every ε. With ``--repeats 2`` the
order is reversed on the second round and the faster time of each is kept. One run's random starts move
a curve by a point or two, so ``--seeds K`` then compares ours and the reference averaged over K seeds
(with the spread of ours across seeds).

    python research/benchmarks/evaluation.py runs/main_scheduled --n 500 --repeats 2 --seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustft.attacks import APGD, AutoAttack
from robustft.config import format_eps, parse_eps_grid
from robustft.eval import evaluate
from robustft.runs import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the helpers it shares with benchmarks/
from run_model import load_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--eps-grid", default="0:8/255:1/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seeds", type=int, default=0, help="seeds for the averaged ours-vs-reference agreement")
    p.add_argument("--batch-size", type=int, default=250)
    args = p.parse_args()
    run, cfg, model, test = load_run(args.run_dir, args.n, RunDir(args.run_dir).checkpoint_path)
    grid = parse_eps_grid(args.eps_grid)
    ours = {"apgd-ce": APGD(num_steps=args.steps, select="misclassified")}
    reference = {"aa-apgd-ce": AutoAttack(components=("apgd-ce",), num_steps=args.steps)}
    jobs = {"ours, incremental": (ours, "incremental"), "ours, independent": (ours, "independent"),
            "reference, incremental": (reference, "incremental")}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    curves: dict[str, list[float]] = {}
    for r in range(args.repeats):
        for name in (list(jobs) if r % 2 == 0 else list(jobs)[::-1]):
            attacks, mode = jobs[name]
            t0 = time.perf_counter()
            result = evaluate(model, test, grid, attacks, device=torch.device("cpu"), image_size=cfg.data.image_size,
                              batch_size=args.batch_size, mode=mode, seed=r)
            times[name].append(time.perf_counter() - t0)
            curves[name] = result.accuracy
            print(f"  round {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    inc, ind, ref = (np.asarray(curves[k]) for k in jobs)
    print(f"\nmodel: {run.path} ({cfg.model.name}, {cfg.data.name} {cfg.data.image_size}px, ε_g "
          f"{format_eps(cfg.attack.eps)}); n={len(test)}; APGD-CE {args.steps} steps, 1 restart; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}\n")
    print("| ε | " + " | ".join(jobs) + " |")
    print("|---|" + "---|" * len(jobs))
    for e, row in enumerate(zip(*(curves[k] for k in jobs))):
        print(f"| {format_eps(result.eps[e])} | " + " | ".join(f"{100 * a:.1f}" for a in row) + " |")
    print("| wall time (s) | " + " | ".join(f"{best[k]:.1f}" for k in jobs) + " |")
    print(f"\nwall-time ratio incremental / independent: {best['ours, incremental'] / best['ours, independent']:.2f}")
    print(f"incremental accuracy <= independent at every ε: {bool((inc <= ind + 1e-12).all())} "
          f"(largest gap {100 * (ind - inc).max():.1f} points)")
    print(f"wall-time ratio ours / reference (incremental): "
          f"{best['ours, incremental'] / best['reference, incremental']:.2f}")
    print(f"accuracy ours − reference: largest |difference| {100 * np.abs(inc - ref).max():.1f} points; "
          f"at ε_g {100 * (inc[-1] - ref[-1]):+.1f}; mean over the grid {100 * (inc - ref).mean():+.1f}")
    if args.seeds:
        agreement(model, test, grid, ours, reference, cfg.data.image_size, args.batch_size, args.seeds)


def agreement(model, test, grid, ours, reference, image_size, batch_size, seeds) -> None:
    """Ours and the reference, incremental, averaged over ``seeds`` seeds (10..10+seeds-1)."""
    runs = {"ours": [], "reference": []}
    for s in range(10, 10 + seeds):
        for name, attacks in (("ours", ours), ("reference", reference)):
            result = evaluate(model, test, grid, attacks, device=torch.device("cpu"), image_size=image_size,
                              batch_size=batch_size, seed=s)
            runs[name].append(result.accuracy)
    mine, ref = np.asarray(runs["ours"]), np.asarray(runs["reference"])
    print(f"\naveraged over {seeds} seeds (mean ± std across seeds, %):\n")
    print("| ε | ours | reference | ours − reference |")
    print("|---|---|---|---|")
    for e, eps in enumerate(result.eps):
        print(f"| {format_eps(eps)} | {100 * mine[:, e].mean():.1f} ± {100 * mine[:, e].std():.1f} | "
              f"{100 * ref[:, e].mean():.1f} ± {100 * ref[:, e].std():.1f} | "
              f"{100 * (mine[:, e].mean() - ref[:, e].mean()):+.1f} |")
    gap = np.abs(mine.mean(0) - ref.mean(0)).max()
    print(f"\nlargest |mean difference| over the grid: {100 * gap:.1f} points")


if __name__ == "__main__":
    main()
