"""Our APGD-CE against the reference implementation (pyautoattack's APGDAttack), side by side in one run.

Same model, same test examples, same ε, same number of iterations, one restart each; both attack only
the examples that are correct on clean inputs and count any misclassified iterate as a success.
Runs are interleaved (ours, reference, ours, reference, ...) and the fastest of each is kept, so the
wall-time ratio is robust to a noisy shared machine.

    python benchmarks/compare_apgd.py runs/fmnist_scheduled --n 1000 --eps 8/255 --steps 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from robustft.attacks import APGD
from robustft.config import parse_eps
from robustft.data import build_data, eval_batches, stratified_subset
from robustft.eval import evaluate
from robustft.models import build_model
from robustft.runs import RunDir
from robustft.train import load_model_weights


def reference_accuracy(model, source, image_size, batch_size, eps, steps, seed) -> float:
    from pyautoattack.autopgd_base import APGDAttack

    attack = APGDAttack(model, n_iter=steps, norm="Linf", n_restarts=1, eps=eps, seed=seed, loss="ce",
                        device=torch.device("cpu"))
    correct = 0
    for x, y in eval_batches(source, image_size, batch_size):
        x_adv = attack.perturb(x, y)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
    return correct / len(source)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=250)
    args = p.parse_args()
    eps = parse_eps(args.eps)
    run = RunDir(args.run_dir)
    cfg = run.config()
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.num_classes)
    load_model_weights(run.checkpoint_path, model)
    model.eval()
    test = data.test.subset(stratified_subset(data.test.labels, args.n, cfg.data.split_seed))
    size = cfg.data.image_size
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    acc: dict[str, float] = {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        result = evaluate(model, test, [eps], APGD(num_steps=args.steps, select="misclassified"),
                          device=torch.device("cpu"), image_size=size, batch_size=args.batch_size, seed=r)
        times["ours"].append(time.perf_counter() - t0)
        acc["ours"], acc["clean"] = result.adv, result.clean
        t0 = time.perf_counter()
        acc["reference"] = reference_accuracy(model, test, size, args.batch_size, eps, args.steps, seed=r)
        times["reference"].append(time.perf_counter() - t0)
    ours, ref = min(times["ours"]), min(times["reference"])
    print(f"model: {run.path} ({cfg.model.name}, {cfg.data.name} {size}x{size}); n={len(test)}; "
          f"eps={args.eps}; APGD-CE {args.steps} steps, 1 restart; torch threads {torch.get_num_threads()}")
    print("| attack | robust acc. (%) | wall time (s, best of {}) |".format(args.repeats))
    print("|---|---|---|")
    print(f"| clean | {100 * acc['clean']:.1f} | — |")
    print(f"| robustft APGD-CE | {100 * acc['ours']:.1f} | {ours:.1f} |")
    print(f"| pyautoattack APGD-CE | {100 * acc['reference']:.1f} | {ref:.1f} |")
    print(f"\nwall-time ratio ours / reference: {ours / ref:.2f}; accuracy difference: "
          f"{100 * (acc['ours'] - acc['reference']):+.1f} points")


if __name__ == "__main__":
    main()
