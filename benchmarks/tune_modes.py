"""What each fine-tuning mode trains and what its training step costs, side by side in one process.

    python benchmarks/tune_modes.py --repeats 6 --warmup 1

The demo's regime (EfficientNet-Lite0 with SiLU and its embedded ImageNet weights, a new head, a batch of 64
Fashion-MNIST training images at 28×28, ε_g = 32/255, APGD-7, BatchNorm folded for the attack as the demo trains).
Contenders, interleaved in every round after untimed warm-up rounds: one full adversarial-training step
(``train_step`` + AdamW, as the training loop takes it) of each ``finetune.mode`` (``full``, ``linear``,
``bitfit``, ``lora`` at rank 8), and ``probe``: a step of the head's probing (``finetune.head:
robust_linear_probe``: the backbone in eval mode, its gradients dropped before the optimiser step). Reported: the
parameters each mode trains (of all), the median step, its ratio to ``full`` (median of per-round ratios) and an
epoch of the demo's 1,000 training images (15 steps).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable

import torch

from robustft.config import Config
from robustft.data import build_data, train_batches
from robustft.experiments.demo import demo_config
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train.optim import build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.trainer import EpochStats, StepContext, train_step
from robustft.train.tune import Tuning

from timing import interleaved, machine, median, paired_ratio, set_threads

NO_RUN = Path("no-run-directory")


class Setup:
    """A tuned model, its step context and optimiser, and one training batch."""

    def __init__(self, cfg: Config, start: dict[str, torch.Tensor]):
        torch.manual_seed(cfg.train.seed)
        data = build_data(cfg.data)
        self.model = build_model(cfg.model, data.num_classes)
        self.model.load_state_dict(start)  # the same weights in every mode, then the mode's adapters and freezing
        self.tuning = Tuning.from_config(cfg.finetune)
        self.tuning.apply(self.model)
        speed = Accelerator(cfg.train, torch.device("cpu"))
        self.net = speed.prepare(self.model)
        self.ctx = StepContext(self.net, build_objective(cfg), speed, None, cfg.train.seed, RunDir(NO_RUN))
        self.optimizer = build_optimizer(self.model, cfg.optim)
        d = cfg.data
        self.x, self.y = next(iter(train_batches(data.train, d.image_size, d.batch_size, 0, 0, d.flip, d.pad_crop)))
        self.x = speed.batch(self.x)
        self.eps, self.step_no = cfg.attack.eps, 0
        self.steps_per_epoch = len(data.train) // d.batch_size
        self.trained = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.total = sum(p.numel() for p in self.model.parameters())

    def step(self) -> None:
        """One optimiser step of epoch 0, as the training loop takes it."""
        self.model.train()
        self.tuning.begin_epoch(self.model, 0)
        self.optimizer.zero_grad(set_to_none=True)
        train_step(self.ctx, self.model, self.x, self.y, self.eps, 0, self.step_no, EpochStats())
        self.tuning.drop_frozen_grads(self.model, 0)
        self.optimizer.step()
        self.step_no += 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rank", type=int, default=8)
    args = p.parse_args(argv)
    set_threads(args.threads)
    base = demo_config(["objective.name=adversarial", "schedule.kind=fix", "schedule.t1=null", "schedule.t2=null"])
    torch.manual_seed(0)
    start = copy.deepcopy(build_model(base.model, 10).state_dict())
    modes: dict[str, Config] = {
        "full": base, "linear": base.replace("finetune", mode="linear"),
        "bitfit": base.replace("finetune", mode="bitfit"),
        f"lora-r{args.rank}": base.replace("finetune", mode="lora", rank=args.rank),
        "probe": base.replace("finetune", head="robust_linear_probe"),
    }
    setups = {name: Setup(cfg, start) for name, cfg in modes.items()}
    contenders: dict[str, Callable[[], object]] = {name: s.step for name, s in setups.items()}
    times = interleaved(contenders, args.repeats, args.warmup)
    print(f"\nmachine: {machine()}")
    print(f"demo regime: ε_g {base.attack.eps * 255:.0f}/255, {base.attack.name} {base.attack.num_steps} steps, batch "
          f"{base.data.batch_size}, 28×28; medians of {args.repeats} interleaved rounds after {args.warmup} warm-up "
          "rounds\n")
    print("| mode | trained parameters | step (s) | ratio to full | epoch (s) |")
    print("|---|---|---|---|---|")
    for name, s in setups.items():
        t = times[name]
        trained = s.trained if name != "probe" else sum(q.numel() for n, q in s.model.named_parameters()
                                                         if s.tuning.is_head(n))
        print(f"| {name} | {trained:,} of {s.total:,} ({100 * trained / s.total:.2f} %) | {median(t):.3f} | "
              f"{paired_ratio(t, times['full']):.2f} | {median(t) * s.steps_per_epoch:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
