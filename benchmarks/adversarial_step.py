"""Cost of one adversarial-training step: robustft's ``train_step`` vs a textbook PGD training loop.

    python benchmarks/adversarial_step.py --repeats 15 --warmup 3 --batch-size 64

Same model (robustft's ``build_model``: EfficientNet-Lite0, embedded ImageNet weights, new head), same
batch (Fashion-MNIST at 32×32 from the config), same number of attack steps K (``attack.num_steps``, 7), same
AdamW optimiser. Two ways to take one adversarial-training step:

- ours: ``robustft.train.train_step`` with a ``StepContext`` built from the config, as ``fit`` does (APGD-CE,
  input-only gradients through ``torch.autograd.grad`` with the parameters frozen while crafting), then
  ``optimizer.step()``;
- naive: L∞ PGD written the usual textbook way: the model in eval mode while crafting (as ours, so the
  comparison isolates gradient handling), parameters left with ``requires_grad=True``, ``loss.backward()`` on
  the model at each of the K steps (filling and accumulating parameter gradients), sign step of
  ``attack.rel_step_size``·ε, projection, gradients zeroed after the attack; it runs also when ε = 0. Then
  the training forward, backward and AdamW step.

Timed side by side, interleaved in every round after untimed warm-up rounds (medians reported): a clean
training step (ours at ε = 0: no attack), each attack alone, each full adversarial step, and one
input-gradient evaluation each way (frozen parameters + ``autograd.grad`` vs ``loss.backward()``). Prints the
ratio ours / naive of the full step against the target (≤ 0.6), the cost of one attack step relative to
one training step for each, and the floor that those per-step costs allow,
(1 + K·a_ours) / (1 + K·a_naive).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustft.config import Config, format_eps, load_config
from robustft.data import build_data, train_batches
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train.optim import build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.trainer import EpochStats, StepContext, micro_batch_size, train_step

from timing import interleaved, machine, median, paired_ratio, set_threads

NO_RUN = Path("no-run-directory")
"""Steps timed outside ``fit`` have no run directory; ``train_step`` only names it in a non-finite-loss error."""
TARGET = 0.6
"""The full adversarial step of ours should cost at most this fraction of the naive one."""


def naive_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, num_steps: int,
              step_size: float) -> torch.Tensor:
    """Textbook L∞ PGD with a random start: ``loss.backward()`` on the model at every step (parameter
    gradients are computed and accumulated too), eval mode while crafting, parameter gradients zeroed
    after. No shortcut for ε = 0."""
    was_training = model.training
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(num_steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        with torch.no_grad():
            x_adv = x_adv + step_size * x_adv.grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return x_adv.detach()


def naive_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               eps: float, num_steps: int, step_size: float) -> None:
    """One textbook adversarial-training step: attack, then forward/backward/AdamW on the attacked batch."""
    model.train()
    x_adv = naive_pgd(model, x, y, eps, num_steps, step_size)
    optimizer.zero_grad()
    F.cross_entropy(model(x_adv), y).backward()
    optimizer.step()


def our_step(ctx: StepContext, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, eps: float, step: int) -> None:
    """One step as ``fit`` takes it: zero the gradients, ``train_step``, ``optimizer.step()``."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    train_step(ctx, model, x, y, eps, 0, step, EpochStats())
    optimizer.step()


def input_grad_frozen(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One input gradient with the parameters frozen (what each of our attack steps computes)."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    x = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
    for p in params:
        p.requires_grad_(True)
    model.train()
    return grad


def input_grad_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One input gradient the textbook way: ``loss.backward()`` with the parameters trainable."""
    model.eval()
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.train()
    return x.grad


def setup(cfg: Config) -> tuple[nn.Module, StepContext, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """Model, step context (as ``fit`` builds it), optimiser and one training batch of the config."""
    torch.manual_seed(cfg.train.seed)
    data = build_data(cfg.data)
    model = build_model(cfg.model, cfg.model.num_classes or data.num_classes)
    speed = Accelerator(cfg.train, torch.device("cpu"))
    run = RunDir(NO_RUN)
    ctx = StepContext(speed.prepare(model), build_objective(cfg), speed, micro_batch_size(cfg.data, 1),
                      cfg.train.seed, run)
    d = cfg.data
    x, y = next(iter(train_batches(data.train, d.image_size, d.batch_size, cfg.train.seed, 0, d.flip, d.pad_crop)))
    return model, ctx, build_optimizer(model, cfg.optim), x, y


def contenders(cfg: Config, model: nn.Module, ctx: StepContext, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
    """What is timed, by short name."""
    eps, k = cfg.attack.eps, cfg.attack.num_steps
    step_size = cfg.attack.rel_step_size * eps
    attack = ctx.objective.attack  # the objective's own training attack (APGD from the config)
    counter = iter(range(10**9))

    def ours_attack() -> torch.Tensor:
        model.train()
        return attack(ctx.net, x, y, eps)

    def naive_attack() -> torch.Tensor:
        model.train()
        return naive_pgd(model, x, y, eps, k, step_size)

    return {
        "clean": lambda: our_step(ctx, model, optimizer, x, y, 0.0, next(counter)),
        "grad-ours": lambda: input_grad_frozen(model, x, y),
        "grad-naive": lambda: input_grad_backward(model, x, y),
        "attack-ours": ours_attack,
        "attack-naive": naive_attack,
        "step-ours": lambda: our_step(ctx, model, optimizer, x, y, eps, next(counter)),
        "step-naive": lambda: naive_step(model, optimizer, x, y, eps, k, step_size),
    }


LABELS = {
    "clean": "clean training step (forward, backward, AdamW; ours at ε = 0)",
    "grad-ours": "one input gradient, parameters frozen (`autograd.grad`)",
    "grad-naive": "one input gradient, textbook (`loss.backward()`)",
    "attack-ours": "attack alone, ours (APGD-CE, K steps)",
    "attack-naive": "attack alone, naive (PGD, K steps)",
    "step-ours": "full adversarial step, ours (`train_step` + AdamW)",
    "step-naive": "full adversarial step, naive",
}


def report(cfg: Config, args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    k = cfg.attack.num_steps
    med = {name: median(v) for name, v in times.items()}
    clean = med["clean"]
    print(f"\nmachine: {machine()}")
    print(f"model {cfg.model.name}, {cfg.data.name} {cfg.data.image_size}×{cfg.data.image_size}, batch "
          f"{cfg.data.batch_size}, ε {format_eps(cfg.attack.eps)}, K = {k} attack steps "
          f"(ours: {cfg.attack.name.upper()}, naive: PGD step {cfg.attack.rel_step_size}·ε), precision "
          f"{cfg.train.precision}; median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds\n")
    print("| measurement | median (s) | min (s) | × clean training step |")
    print("|---|---|---|---|")
    for name, label in LABELS.items():
        print(f"| {label} | {med[name]:.3f} | {min(times[name]):.3f} | {med[name] / clean:.2f} |")
    a_ours, a_naive = med["attack-ours"] / (k * clean), med["attack-naive"] / (k * clean)
    g_ours, g_naive = med["grad-ours"] / clean, med["grad-naive"] / clean
    floor = (1 + k * a_ours) / (1 + k * a_naive)
    ratio = med["step-ours"] / med["step-naive"]
    paired = paired_ratio(times["step-ours"], times["step-naive"])
    print(f"\n- one attack step / one training step (attack alone ÷ K ÷ clean step): ours **{a_ours:.2f}**, "
          f"naive **{a_naive:.2f}** (one isolated input gradient: ours {g_ours:.2f}, naive {g_naive:.2f})")
    print(f"- floor from these per-step costs, (1 + K·a_ours) / (1 + K·a_naive) with K = {k}: **{floor:.2f}**")
    print(f"- full adversarial step, ours / naive: **{ratio:.2f}** (median of per-round ratios {paired:.2f}); "
          f"target ≤ {TARGET}: **{'met' if ratio <= TARGET else 'missed'}**")
    print(f"- attack alone, ours / naive: {med['attack-ours'] / med['attack-naive']:.2f}; training part of "
          f"the full step (full − attack alone): ours {med['step-ours'] - med['attack-ours']:.3f} s, "
          f"naive {med['step-naive'] - med['attack-naive']:.3f} s, clean step {clean:.3f} s")
    print(f"- ours, APGD bookkeeping beyond its gradient evaluations (attack alone − K × one input gradient): "
          f"{med['attack-ours'] - k * med['grad-ours']:+.3f} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fmnist_fix.yaml", help="config the model, data and attack come from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable), e.g. --set attack.num_steps=10")
    p.add_argument("--repeats", type=int, default=15, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-steps", type=int, default=None, help="K, attack steps (default: the config's)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    overrides = [f"data.batch_size={args.batch_size}", f"data.n_train={args.batch_size}", "data.n_val=0",
                 "data.n_test=10", "train.device=cpu", *args.overrides]
    if args.num_steps is not None:
        overrides.append(f"attack.num_steps={args.num_steps}")
    cfg = load_config(args.config, overrides)
    if cfg.objective.name != "adversarial":
        sys.exit(f"objective.name: this benchmark times the adversarial objective, got {cfg.objective.name!r}")
    model, ctx, optimizer, x, y = setup(cfg)
    times = interleaved(contenders(cfg, model, ctx, optimizer, x, y), args.repeats, args.warmup)
    report(cfg, args, times)


if __name__ == "__main__":
    main()
