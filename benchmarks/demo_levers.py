"""Cheaper adversarial steps for the demo's regime, timed side by side in one process.

    python benchmarks/demo_levers.py --repeats 8 --warmup 2

The demo's model (EfficientNet-Lite0 with SiLU, embedded ImageNet weights, new head) and a batch of 64
Fashion-MNIST training images; ε_g = 32/255 and APGD-7 as the demo trains. Contenders, interleaved in
every round after untimed warm-up rounds (medians and medians of per-round ratios reported):

- ``step-32`` / ``step-28``: one full adversarial-training step (``train_step`` + AdamW, as ``fit`` takes it,
  attack unfolded) on images zero-padded to 32×32 and on the native 28×28; ``step-28-folded``: the same with
  ``attack.fold_bn`` (the default);
- ``attack-32`` / ``attack-28``: the training attack alone (APGD-7, eval mode) at both sizes;
- ``attack-28-folded``: the same attack on a copy with BatchNorm folded into the convolutions, refreshed
  from the model's weights at every call (``robustft.models.fold.FoldedCopy``), as the training attack runs
  with ``attack.fold_bn``;
- ``eval-28`` / ``eval-28-folded``: a batch of 256 test images through 10 iterations of APGD-CE, every
  iteration on every image (the model here is not trained, so an evaluation that stops at the first
  misclassified point would attack almost nothing), unfolded and folded once as the evaluator folds (the
  folded copy is channels-last); ``eval-28-default-layout``: unfolded in the default memory layout, as the
  evaluation ran before (training lays the model out channels-last; the evaluation built it anew);
- ``step-28-folded-b128``: the folded step on a batch of 128 (twice the demo's), to compare the cost per example;
- ``monitor``: the catastrophic-overfitting monitor of one epoch (``train.monitor_n`` = 128 validation images
  under the training attack and under APGD-CE-10, folded, as the demo runs it) and ``validate``: the epoch's
  clean validation pass (500 images); their cost is reported against an epoch of folded steps (the demo's
  1,000 training images are 15 steps of 64).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable

import torch

from robustft.attacks import APGD
from robustft.config import Config
from robustft.data import build_data, train_batches
from robustft.experiments.demo import demo_config
from robustft.models import build_model, fold_batchnorm
from robustft.models.fold import FoldedCopy
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train.optim import build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.trainer import EpochStats, StepContext, train_step
from robustft.train.validation import Validation, monitor, validate

from timing import interleaved, machine, median, paired_ratio, set_threads

NO_RUN = Path("no-run-directory")


class Setup:
    """A model, its step context and optimiser, and one training batch, at one image size."""

    def __init__(self, cfg: Config):
        torch.manual_seed(cfg.train.seed)
        data = build_data(cfg.data)
        self.model = build_model(cfg.model, data.num_classes)
        speed = Accelerator(cfg.train, torch.device("cpu"))
        self.net = speed.prepare(self.model)
        self.ctx = StepContext(self.net, build_objective(cfg), speed, None, cfg.train.seed, RunDir(NO_RUN))
        self.optimizer = build_optimizer(self.model, cfg.optim)
        d = cfg.data
        self.x, self.y = next(iter(train_batches(data.train, d.image_size, d.batch_size, 0, 0, d.flip, d.pad_crop)))
        self.x = speed.batch(self.x)
        evals = next(iter(train_batches(data.test, d.image_size, 256, 1, 0)))
        self.x_eval, self.y_eval = speed.batch(evals[0]), evals[1]
        self.eps, self.step_no, self.steps = cfg.attack.eps, 0, cfg.attack.num_steps
        self.kept = FoldedCopy(self.model, self.x)  # as the training attack keeps it: refreshed every call
        self.val = Validation.from_config(cfg, data)
        self.steps_per_epoch = len(data.train) // d.batch_size

    def step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        train_step(self.ctx, self.model, self.x, self.y, self.eps, 0, self.step_no, EpochStats())
        self.optimizer.step()
        self.step_no += 1

    def attack(self, folded: bool = False) -> torch.Tensor:
        attack = APGD(num_steps=self.steps)  # the training attack (attack.fold_bn off here: both ways are timed)
        return attack(self.kept() if folded else self.net, self.x, self.y, self.eps)

    def evaluate(self, folded: bool = False, default_layout: bool = False) -> torch.Tensor:
        net = fold_batchnorm(self.net, self.x_eval) if folded else self.net
        if default_layout:  # as robustft.evaluate_run built the model before: no channels-last anywhere
            net = copy.deepcopy(self.net).to(memory_format=torch.contiguous_format)
        return APGD(num_steps=10)(net, self.x_eval, self.y_eval, self.eps)  # every iteration on every image


    def monitor(self) -> dict[str, float]:
        return monitor(self.net, self.val, torch.device("cpu"), self.eps)

    def validate(self) -> dict[str, float]:
        return validate(self.net, self.val, torch.device("cpu"))


def agreement(s: Setup) -> float:
    """Largest |logit difference| between the model and its folded copy, eval mode, on the eval batch."""
    s.net.eval()
    with torch.no_grad():
        return float((s.net(s.x_eval) - fold_batchnorm(s.net, s.x_eval)(s.x_eval)).abs().max())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = p.parse_args(argv)
    set_threads(args.threads)
    base = demo_config([*args.set, "attack.fold_bn=false"])  # the full steps run unfolded; folding timed apart
    s32 = Setup(base.replace("data", image_size=32))
    s28 = Setup(base.replace("data", image_size=28))
    s28f = Setup(base.replace("data", image_size=28).replace("attack", fold_bn=True))
    s128 = Setup(base.replace("data", image_size=28, batch_size=128).replace("attack", fold_bn=True))
    for s in (s28, s28f, s128):  # same weights: only the input or the attack's copy differs
        s.model.load_state_dict(copy.deepcopy(s32.model.state_dict()))
    contenders: dict[str, Callable[[], object]] = {
        "step-32": s32.step, "step-28": s28.step, "step-28-folded": s28f.step,
        "attack-32": s32.attack, "attack-28": s28.attack, "attack-28-folded": lambda: s28.attack(folded=True),
        "eval-28": s28.evaluate, "eval-28-folded": lambda: s28.evaluate(folded=True),
        "eval-28-default-layout": lambda: s28.evaluate(default_layout=True),
        "step-28-folded-b128": s128.step, "monitor": s28f.monitor, "validate": s28f.validate,
    }
    times = interleaved(contenders, args.repeats, args.warmup)
    print(f"\nmachine: {machine()}")
    print(f"demo regime: ε_g {base.attack.eps * 255:.0f}/255, {base.attack.name} {base.attack.num_steps} steps, "
          f"batch {base.data.batch_size}; evaluation batch 256, APGD-CE 10; medians of {args.repeats} interleaved "
          f"rounds after {args.warmup} warm-up rounds\n")
    print("| contender | median (s) | ratio (median of per-round ratios) |")
    print("|---|---|---|")
    pairs = {"step-28": "step-32", "step-28-folded": "step-28", "attack-28": "attack-32", "attack-28-folded": "attack-28",
             "eval-28-folded": "eval-28", "eval-28-default-layout": "eval-28"}
    for name, t in times.items():
        ratio = f"{paired_ratio(t, times[pairs[name]]):.2f} × {pairs[name]}" if name in pairs else "1.00"
        print(f"| {name} | {median(t):.3f} | {ratio} |")
    step, epoch = median(times["step-28-folded"]), median(times["step-28-folded"]) * s28f.steps_per_epoch
    print(f"\nper example, folded step: batch 128 {median(times['step-28-folded-b128']) / 128 * 1e3:.2f} ms, batch "
          f"{base.data.batch_size} {step / base.data.batch_size * 1e3:.2f} ms (ratio "
          f"{median(times['step-28-folded-b128']) / 128 / (step / base.data.batch_size):.2f})")
    print(f"an epoch of folded steps ({s28f.steps_per_epoch} steps): {epoch:.1f} s; the monitor "
          f"{median(times['monitor']):.2f} s ({100 * median(times['monitor']) / epoch:.0f} % of it), the clean "
          f"validation {median(times['validate']):.2f} s ({100 * median(times['validate']) / epoch:.0f} %)")
    print(f"\nfolded vs unfolded logits, eval mode, 256 test images: max |difference| {agreement(s28):.2e}")


if __name__ == "__main__":
    sys.exit(main())
