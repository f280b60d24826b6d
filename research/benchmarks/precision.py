"""bf16 autocast against fp32 on this machine: step times side by side, and accuracy after identical runs.

    python research/benchmarks/precision.py --repeats 10 --warmup 2

1. Step times, interleaved in every round after untimed warm-up rounds (medians reported): a clean training
   step (ε = 0, no attack) and an adversarial training step (APGD-CE, 7 steps, ε_g = 8/255) through
   ``robustft.train.train_step`` + AdamW, in fp32, in bf16 with the attack crafted in fp32
   (``train.attack_fp32=true``, the default) and in bf16 throughout (``train.attack_fp32=false``). Same model
   (EfficientNet-Lite0, embedded ImageNet weights), same batch (64 Fashion-MNIST images at 32×32).
2. Accuracy: the same short RFT-fix run (``configs/fmnist_fix.yaml`` with 300 training and 200 validation
   images, 5 epochs, seed 0, no adversarial validation) in fp32 and in bf16 (attack in fp32), each evaluated
   in fp32 on 200 test images over ε = 0, 1/255, …, 8/255 with APGD-CE (10 steps, sanity checks off):
   Clean, Adv. (at ε_g) and E.adv, and the differences bf16 − fp32. One seed by default; one pair of
   runs cannot tell a precision effect from run-to-run variation, so ``--seeds K`` repeats the pair with
   seeds 0..K−1 and reports the mean ± std of the paired differences. ``--skip-accuracy`` leaves this out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from robustft.api import evaluate_run, fine_tune
from robustft.config import Config, format_eps, load_config
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train.speed import Accelerator
from robustft.train.trainer import StepContext, micro_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the helpers it shares with benchmarks/
from adversarial_step import NO_RUN, our_step, setup  # noqa: E402
from timing import interleaved, machine, median, paired_ratio, set_threads  # noqa: E402

PRECISIONS = {  # short name → (train.precision, train.attack_fp32)
    "fp32": ("fp32", True),
    "bf16": ("bf16", True),
    "bf16-attack-bf16": ("bf16", False),
}


def precision_overrides(name: str) -> list[str]:
    precision, attack_fp32 = PRECISIONS[name]
    return [f"train.precision={precision}", f"train.attack_fp32={str(attack_fp32).lower()}"]


def step_times(args: argparse.Namespace) -> None:
    """Part 1: clean and adversarial step times per precision, interleaved."""
    base = [f"data.batch_size={args.batch_size}", f"data.n_train={args.batch_size}", "data.n_val=0",
            "data.n_test=10", "train.device=cpu", f"attack.num_steps={args.num_steps}", *args.overrides]
    cfgs = {name: load_config(args.config, base + precision_overrides(name)) for name in PRECISIONS}
    model, _, optimizer, x, y = setup(cfgs["fp32"])
    run = RunDir(NO_RUN)
    contexts = {}
    for name, cfg in cfgs.items():
        speed = Accelerator(cfg.train, torch.device("cpu"))
        contexts[name] = StepContext(speed.prepare(model), build_objective(cfg), speed,
                                     micro_batch_size(cfg.data, 1), cfg.train.seed, run)
    eps = cfgs["fp32"].attack.eps
    counter = iter(range(10**9))
    jobs = {"clean-fp32": (contexts["fp32"], 0.0), "clean-bf16": (contexts["bf16"], 0.0),
            "adv-fp32": (contexts["fp32"], eps), "adv-bf16": (contexts["bf16"], eps),
            "adv-bf16-attack-bf16": (contexts["bf16-attack-bf16"], eps)}
    contenders = {name: (lambda c=c, e=e: our_step(c, model, optimizer, x, y, e, next(counter)))
                  for name, (c, e) in jobs.items()}
    times = interleaved(contenders, args.repeats, args.warmup)
    med = {k: median(v) for k, v in times.items()}
    cfg = cfgs["fp32"]
    print(f"\nmachine: {machine()}; bf16 CPU support reported by torch: "
          f"{torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    print(f"{cfg.model.name}, {cfg.data.name} {cfg.data.image_size}×{cfg.data.image_size}, batch "
          f"{cfg.data.batch_size}, {cfg.attack.name.upper()} {cfg.attack.num_steps} steps at ε_g "
          f"{format_eps(eps)}; median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds\n")
    print("| step | fp32 (s) | bf16, attack in fp32 (s) | bf16 throughout (s) | bf16 attack fp32 / fp32 "
          "| bf16 throughout / fp32 |")
    print("|---|---|---|---|---|---|")
    print(f"| clean training step | {med['clean-fp32']:.3f} | {med['clean-bf16']:.3f} | – (no attack) | "
          f"{med['clean-bf16'] / med['clean-fp32']:.2f} | – |")
    print(f"| adversarial training step (APGD-{cfg.attack.num_steps}) | {med['adv-fp32']:.3f} | "
          f"{med['adv-bf16']:.3f} | {med['adv-bf16-attack-bf16']:.3f} | {med['adv-bf16'] / med['adv-fp32']:.2f} | "
          f"{med['adv-bf16-attack-bf16'] / med['adv-fp32']:.2f} |")
    paired = {k: paired_ratio(times[k], times[f"{k.split('-')[0]}-fp32"])
              for k in ("clean-bf16", "adv-bf16", "adv-bf16-attack-bf16")}
    print("\n- median of per-round ratios to fp32: " + ", ".join(f"{k} {v:.2f}" for k, v in paired.items()))
    fastest = min(("fp32", med["adv-fp32"]), ("bf16 (attack fp32)", med["adv-bf16"]),
                  ("bf16 throughout", med["adv-bf16-attack-bf16"]), key=lambda t: t[1])
    clean_faster = "fp32" if med["clean-fp32"] <= med["clean-bf16"] else "bf16"
    print(f"- faster here: clean step **{clean_faster}** "
          f"({max(med['clean-fp32'], med['clean-bf16']) / min(med['clean-fp32'], med['clean-bf16']):.2f}× "
          f"the other); adversarial step **{fastest[0]}**")


def accuracy(args: argparse.Namespace) -> None:
    """Part 2: the same short run in fp32 and bf16 (per seed, fp32 then bf16), evaluated in fp32."""
    rows: dict[tuple[int, str], tuple[float, float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="robustft-precision-") as tmp:
        for seed in range(args.seeds):
            for name in ("fp32", "bf16"):
                cfg = load_config(args.config, [
                    f"data.n_train={args.acc_n_train}", f"data.n_val={args.acc_n_val}",
                    f"train.epochs={args.acc_epochs}", f"eval.n={args.acc_eval_n}", "eval.num_steps=10",
                    "eval.checks=false", f"train.seed={seed}", "train.val_adv_n=0", "train.evaluate=false",
                    "train.device=cpu", f"train.out_dir={tmp}", f"train.run_name={name}-{seed}",
                    *args.overrides, *precision_overrides(name)])
                run = fine_tune(cfg)
                result = evaluate_run(run.path)
                train_time = RunDir(run.path).epoch_rows()[-1].elapsed_s
                rows[seed, name] = (result.clean, result.adv, result.expected, train_time)
                print(f"  seed {seed}, {name}: clean {100 * result.clean:.1f}, adv {100 * result.adv:.1f}, "
                      f"E.adv {100 * result.expected:.1f}, training {train_time:.1f} s", flush=True)
    print_accuracy(cfg, args, rows)


def print_accuracy(cfg: Config, args: argparse.Namespace, rows: dict[tuple[int, str], tuple[float, ...]]) -> None:
    print(f"\n{args.config} with data.n_train={args.acc_n_train}, data.n_val={args.acc_n_val}, "
          f"train.epochs={args.acc_epochs}, train.val_adv_n=0, seeds {list(range(args.seeds))} "
          f"(batch {cfg.data.batch_size}, "
          f"{cfg.attack.name.upper()}-{cfg.attack.num_steps} at ε_g {format_eps(cfg.attack.eps)}); evaluated in fp32 "
          f"on {args.acc_eval_n} test images, APGD-CE 10 steps over ε = 0, 1/255, …, ε_g\n")
    print("| seed | precision | Clean (%) | Adv. (%) | E.adv (%) | training time (s) |")
    print("|---|---|---|---|---|---|")
    for (seed, name), (clean, adv, expected, t) in rows.items():
        print(f"| {seed} | {name} | {100 * clean:.1f} | {100 * adv:.1f} | {100 * expected:.1f} | {t:.1f} |")
    seeds = range(args.seeds)
    diffs = np.array([[100 * (b - a) for a, b in zip(rows[s, "fp32"][:3], rows[s, "bf16"][:3])] for s in seeds])
    times = [rows[s, "bf16"][3] / rows[s, "fp32"][3] for s in seeds]
    spread = (lambda c: f" ± {diffs[:, c].std():.1f}") if args.seeds > 1 else (lambda c: "")
    print(f"| {'mean' if args.seeds > 1 else seeds[0]} | bf16 − fp32 | "
          + " | ".join(f"{diffs[:, c].mean():+.1f}{spread(c)}" for c in range(3))
          + f" | ×{float(np.median(times)):.2f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fmnist_fix.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every part (repeatable)")
    p.add_argument("--repeats", type=int, default=10, help="timed interleaved rounds of part 1")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--batch-size", type=int, default=64, help="batch of part 1")
    p.add_argument("--num-steps", type=int, default=7, help="APGD steps in part 1")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--skip-speed", action="store_true", help="leave out part 1")
    p.add_argument("--skip-accuracy", action="store_true", help="leave out part 2")
    p.add_argument("--acc-n-train", type=int, default=300)
    p.add_argument("--acc-n-val", type=int, default=200)
    p.add_argument("--acc-epochs", type=int, default=5)
    p.add_argument("--acc-eval-n", type=int, default=200)
    p.add_argument("--seeds", type=int, default=1, help="part 2 runs each precision with seeds 0..seeds-1")
    args = p.parse_args(argv)
    set_threads(args.threads)
    logging.getLogger("robustft").setLevel(logging.ERROR)  # a 5-epoch run may trip the transfer-failure warning
    if not args.skip_speed:
        step_times(args)
    if not args.skip_accuracy:
        accuracy(args)


if __name__ == "__main__":
    main()
