"""A sweep's wall time with its runs one after another (``jobs`` = 1, every thread each) against side by
side (``jobs`` = 2, one process per run with half the threads), on the embedded default.

    python benchmarks/sweep_jobs.py --rounds 2 --warmup 0

The sweep is the demo's fix and Epsilon-Scheduling runs (robustft/experiments/demo.py) on a short budget:
``--n-train`` training images for ``--epochs`` epochs with the demo's training attack, evaluated on
``--n-test`` test images with the demo's evaluation, sanity checks and the training monitor off. Each
contender trains both runs from scratch into a fresh temporary folder every round (so nothing is reused);
rounds are interleaved (``timing.interleaved``: odd rounds in reverse order), medians and the median of the
per-round ratios reported. Both contenders use the same configs, so their results agree up to the thread
count's floating-point reassociation; the script checks that both produced a DONE run with a test accuracy
for every point. Run it on an otherwise idle machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustft.experiments.demo import DEMO_HINGES, DEMO_SETTINGS, demo_spec  # noqa: E402
from robustft.experiments.sweep import SweepSpec, expand, run_sweep  # noqa: E402
from robustft.runs import RunDir  # noqa: E402

from timing import interleaved, machine, median, paired_ratio  # noqa: E402


def sweep_spec(out_dir: Path, n_train: int, epochs: int, n_test: int) -> SweepSpec:
    demo = demo_spec(out_dir)
    fixed = {**demo.fixed, "data.n_train": n_train, "train.epochs": epochs, "eval.n": n_test,
             "eval.checks": False, "train.monitor_n": 0}
    # the demo's hinges, in epochs of its 30, as the same fractions of this shorter run
    scale = 1 / DEMO_SETTINGS["train.epochs"]
    scheduled = {**demo.variants["scheduled"], "schedule.t1": DEMO_HINGES[0] * scale, "schedule.t2": DEMO_HINGES[1] * scale}
    return SweepSpec(base=None, out_dir=out_dir, fixed=fixed, variants={"fix": demo.variants["fix"], "scheduled": scheduled},
                     grid={})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-test", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(machine(), f"; load average {os.getloadavg()[0]:.2f}")
    print(f"sweep: fix + Epsilon-Scheduling, {args.n_train} images × {args.epochs} epochs, {args.n_test} test "
          "images, checks and monitor off")
    threads = torch.get_num_threads()

    def contender(jobs: int):
        def run() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                spec = sweep_spec(Path(tmp) / "sw", args.n_train, args.epochs, args.n_test)
                points = expand(spec)
                outcome = run_sweep(points, spec.out_dir, jobs=jobs)
                torch.set_num_threads(threads)
                if outcome.names("failed") or not all(RunDir(spec.out_dir / p.name).done for p in points):
                    raise SystemExit(f"jobs={jobs}: a run failed: {outcome.summary()}")
        return run

    times = interleaved({"jobs=1": contender(1), "jobs=2": contender(2)}, args.rounds, args.warmup)
    what = {"jobs=1": f"1 process × {threads} threads", "jobs=2": f"2 processes × {max(1, threads // 2)} threads"}
    print("\n| contender | median (s) | ratio vs jobs=1 |\n|---|---|---|")
    for name in times:
        ratio = paired_ratio(times[name], times["jobs=1"])
        print(f"| {name} ({what[name]}) | {median(times[name]):.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
