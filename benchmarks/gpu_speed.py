"""GPU speed settings side by side on a paper backbone: fp32, bf16 autocast, channels-last and ``torch.compile``.

    python benchmarks/gpu_speed.py --repeats 10 --warmup 3
    python benchmarks/gpu_speed.py --config configs/paper/vit_b-cub200-eps4.yaml --no-compile

Same model (the paper preset's backbone, ``convnext_base`` by default, built with ``model.pretrained=false``:
the speed of a step does not depend on the weights, and no hub is needed), same random batch at the preset's
image size (224×224), same AdamW optimiser settings. Every contender gets its own ``copy.deepcopy`` of the
initial model and its own optimiser, and is prepared by ``robustft.train.speed.Accelerator`` exactly as
``fit`` prepares a run:

- ``fp32``: eager, default memory layout, no autocast;
- ``bf16``: bf16 autocast for the training forward passes (the attack crafted in fp32, ``train.attack_fp32``);
- ``bf16-cl``: bf16 and channels-last (``train.channels_last=true``);
- ``bf16-cl-compile``: bf16, channels-last and ``train.compile=true`` (inductor), whose first calls
  (compilation) are timed apart before the rounds.

Each is timed on (a) a clean training step (``train_step`` at ε = 0, then AdamW) and (b) an adversarial
training step with the preset's training attack (APGD-CE, ``attack.num_steps`` = 7, at ε_g), interleaved in
every round after untimed warm-up rounds, with ``torch.cuda.synchronize()`` closing every timed call.
Prints medians, images per second and the ratio to fp32 in the same round (< 1: faster). Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from typing import Callable

import torch

from robustft.config import Config, format_eps, load_config
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train.optim import build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.trainer import StepContext

from adversarial_step import NO_RUN, our_step
from timing import interleaved, median, paired_ratio

SETTINGS = {  # contender → (train.precision, train.channels_last, train.compile)
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "bf16-cl": ("bf16", True, False),
    "bf16-cl-compile": ("bf16", True, True),
}


def synced(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation, so wall time covers the GPU work it queued."""

    def call() -> None:
        fn()
        torch.cuda.synchronize()

    return call


def contenders(cfg: Config, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str],
               device: torch.device) -> dict[str, Callable[[], None]]:
    """``NAME/clean`` and ``NAME/adv`` for every setting in ``names``, each on its own model and optimiser."""
    timed: dict[str, Callable[[], None]] = {}
    for name in names:
        precision, channels_last, compiled = SETTINGS[name]
        train = replace(cfg.train, precision=precision, channels_last=channels_last, compile=compiled)
        own = copy.deepcopy(model).to(device)
        speed = Accelerator(train, device)
        ctx = StepContext(speed.prepare(own), build_objective(cfg), speed, len(y), cfg.train.seed, RunDir(NO_RUN))
        optimizer = build_optimizer(own, cfg.optim)
        counter = iter(range(10**9))
        for kind, eps in (("clean", 0.0), ("adv", cfg.attack.eps)):
            timed[f"{name}/{kind}"] = synced(lambda ctx=ctx, own=own, opt=optimizer, eps=eps, counter=counter:
                                             our_step(ctx, own, opt, x, y, eps, next(counter)))
    return timed


def report(cfg: Config, args: argparse.Namespace, times: dict[str, list[float]], first: dict[str, float]) -> None:
    gpu = torch.cuda.get_device_name()
    print(f"\n{gpu}, torch {torch.__version__}; {cfg.model.name} (random init), batch {args.batch_size} at "
          f"{cfg.data.image_size}×{cfg.data.image_size}, training attack APGD-CE {cfg.attack.num_steps} steps "
          f"at ε = {format_eps(cfg.attack.eps)}; {args.repeats} rounds after {args.warmup} warm-up rounds\n")
    print("| setting | clean step (s) | img/s | × fp32 | adversarial step (s) | img/s | × fp32 | first call (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in SETTINGS:
        if f"{name}/clean" not in times:
            continue
        row = [name]
        for kind in ("clean", "adv"):
            t = times[f"{name}/{kind}"]
            row += [f"{median(t):.3f}", f"{args.batch_size / median(t):.0f}",
                    f"{paired_ratio(t, times[f'fp32/{kind}']):.2f}"]
        row.append(f"{first[name]:.0f}" if name in first else "—")
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/paper/convnext_b-stanford_cars-eps4.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--repeats", type=int, default=10, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile contender")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_speed.py needs a CUDA device (benchmarks/cpu_speed.py times the CPU settings)")
    device = torch.device("cuda")
    cfg = load_config(args.config, ["model.pretrained=false", "data.num_workers=0", *args.overrides])
    num_classes = cfg.model.num_classes or 196
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, num_classes)
    size = cfg.data.image_size
    x = torch.rand(args.batch_size, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (args.batch_size,), device=device)
    names = [n for n in SETTINGS if not (args.no_compile and SETTINGS[n][2])]
    timed = contenders(cfg, model, x, y, names, device)
    first: dict[str, float] = {}
    for name in names:  # compilation (and cuDNN autotuning) happen here, outside the rounds
        t0 = time.perf_counter()
        timed[f"{name}/clean"]()
        timed[f"{name}/adv"]()
        first[name] = time.perf_counter() - t0
        print(f"  first calls of {name}: {first[name]:.1f} s", flush=True)
    times = interleaved(timed, args.repeats, args.warmup)
    report(cfg, args, times, first)


if __name__ == "__main__":
    main()
