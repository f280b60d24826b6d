"""Speed settings side by side: on the CPU, memory layout (contiguous vs channels-last), intra-op threads (1 vs 2)
and, optionally, ``torch.compile`` (inductor) on the embedded backbone; on a GPU, fp32, bf16 autocast,
channels-last and ``torch.compile`` on a paper backbone.

    python benchmarks/speed.py --device cpu --repeats 10 --warmup 2
    python benchmarks/speed.py --device cpu --repeats 10 --warmup 2 --compile    # + torch.compile (minutes of warm-up)
    python benchmarks/speed.py --device cuda --repeats 10 --warmup 3
    python benchmarks/speed.py --device cuda --config configs/paper/vit_b-cub200-eps4.yaml --no-compile

Each device times its own contenders below; the other device's are left out. Timed side by side, interleaved
in every round after untimed warm-up rounds (``timing.interleaved``: odd rounds run in reverse order), medians
reported.

**--device cpu** (``--warmup`` 2 by default, ``--compile`` off). Same model (``configs/fmnist_fix.yaml``:
EfficientNet-Lite0 with its embedded ImageNet weights and a new head), same batch (64 Fashion-MNIST images
at 32×32 from the config's training batches), ε = 8/255 (the config's ε_g). Every contender gets its own
``copy.deepcopy`` of the same initial model (and its own AdamW optimiser where it trains), so one
contender's layout, weights or optimiser state never reach another:

1. Memory layout, default (contiguous) vs channels-last — the channels-last contender is prepared by
   ``Accelerator(cfg.train, cpu)`` with ``train.channels_last=true`` (``model.to(memory_format=
   torch.channels_last)``, and batches through ``.contiguous(memory_format=torch.channels_last)``) — for
   (a) a clean training step (``train_step`` at ε = 0: forward, backward, then AdamW), (b) one N-FGSM
   attack call (``robustft.attacks.NFGSM()``: one input gradient, parameters frozen), (c) one APGD-7
   attack call (``robustft.attacks.APGD(num_steps=7)``) and (d) a full adversarial training step with
   N-FGSM (``attack.name=nfgsm``) through ``train_step`` + AdamW.
2. Intra-op threads: the clean training step with ``torch.set_num_threads(1)`` vs 2, set inside each
   contender's call and restored after it.
3. ``--compile``: the clean training step with the forward pass compiled (``train.compile=true``, inductor)
   vs eager (the default-layout row of 1). Its first call (compilation) is timed on its own before the
   rounds and reported apart from the steady-state median.

Before timing, a correctness check on fresh copies of the same weights and the same batch: the default and
the channels-last model's eval-mode logits agree to within 1e-4 relative (max |Δ| / max |logit|; the exit
status is 1 when they do not); their input gradients are compared, and every convolution's output is
checked to really come out channels-last in one and contiguous in the other. Train-mode logits (BatchNorm
on batch statistics) are reported against an fp64 reference but not checked: on CPUs torch computes batch
statistics of a channels-last tensor with another kernel, whose rounding error was ~30× the contiguous
kernel's here (torch 2.14), enough to move the logits by ~1e-3 relative. After timing, the timed models'
weights are checked to have kept their layout, and the attacks' outputs' layout is printed.

Ratios are what carry over (the machine is shared); a ratio < 1 means faster than the group's baseline.
Run it on an otherwise idle machine (the load average is printed): while another process keeps the
cores busy, every parallel region of the 2-thread contender waits for a descheduled thread (a dry run
beside a busy process measured 2 threads 60–95× slower than 1).
``TORCHINDUCTOR_COMPILE_THREADS=1`` keeps the inductor's compile workers off the other core.

**--device cuda** (``--warmup`` 3 by default, ``--compile`` on; needs a CUDA device). Same model (the paper
preset's backbone, ``convnext_base`` by default, built with ``model.pretrained=false``: the speed of a step
does not depend on the weights, and no hub is needed), same random batch at the preset's image size
(224×224), same AdamW optimiser settings. Every setting gets its own ``copy.deepcopy`` of the initial model
and its own optimiser, and is prepared by ``robustft.train.speed.Accelerator`` exactly as ``fit`` prepares
a run:

- ``fp32``: eager, default memory layout, no autocast;
- ``bf16``: bf16 autocast for the training forward passes (the attack crafted in fp32, ``train.attack_fp32``);
- ``bf16-cl``: bf16 and channels-last (``train.channels_last=true``);
- ``bf16-cl-compile``: bf16, channels-last and ``train.compile=true`` (inductor), whose first calls
  (compilation) are timed apart before the rounds (``--no-compile`` leaves it out).

Each is timed on (a) a clean training step (``train_step`` at ε = 0, then AdamW) and (b) an adversarial
training step with the preset's training attack (APGD-CE, ``attack.num_steps`` = 7, at ε_g), with
``torch.cuda.synchronize()`` closing every timed call. Prints medians, images per second and the ratio to
fp32 in the same round (< 1: faster).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import APGD, NFGSM, Attack
from robustft.config import Config, format_eps, load_config
from robustft.data import build_data, train_batches
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train.optim import build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.trainer import StepContext, micro_batch_size

from adversarial_step import NO_RUN, our_step
from timing import interleaved, machine, median, paired_ratio, set_threads

DEFAULTS = {  # device → (config, warm-up rounds, torch.compile contender)
    "cpu": ("configs/fmnist_fix.yaml", 2, False),
    "cuda": ("configs/paper/convnext_b-stanford_cars-eps4.yaml", 3, True),
}


# ============================================================================ --device cpu
CPU = torch.device("cpu")
CL = torch.channels_last
TOLERANCE = 1e-4
"""Largest relative difference (max |Δ| / max |value|) allowed between the two layouts' logits."""
THREAD_COUNTS = (1, 2)
"""Intra-op thread counts of part 2; the first is the baseline."""
APGD_STEPS = 7
LAYOUTS = {"default": [], "channels-last": ["train.channels_last=true"]}
"""Layout name → config overrides (the first is the baseline)."""


@dataclass
class Contender:
    """One timed call: its group (a table section), its label, the call, and the model it runs."""

    group: str
    label: str
    call: Callable[[], object]
    model: nn.Module
    channels_last: bool = False
    last: dict[str, torch.Tensor] = field(default_factory=dict)  # the last attack output, for its layout


GROUPS = {
    "clean": "clean training step (forward, backward, AdamW; ε = 0)",
    "nfgsm": "N-FGSM attack call (one input gradient)",
    "apgd": f"APGD-{APGD_STEPS} attack call",
    "adv": "adversarial training step, N-FGSM (`train_step` + AdamW)",
    "threads": "clean training step, intra-op threads",
    "compile": "clean training step, `torch.compile` (inductor)",
}


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside, the previous count restored after (None: unchanged)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def base_setup(cfg: Config) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The initial model every contender copies, and one training batch of the config."""
    torch.manual_seed(cfg.train.seed)
    data = build_data(cfg.data)
    model = build_model(cfg.model, cfg.model.num_classes or data.num_classes)
    d = cfg.data
    x, y = next(iter(train_batches(data.train, d.image_size, d.batch_size, cfg.train.seed, 0, d.flip, d.pad_crop)))
    return model, x, y


def training_step(group: str, label: str, cfg: Config, base: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  eps: float, threads: int | None = None) -> Contender:
    """``our_step`` (zero grads, ``train_step``, AdamW) on an own copy of ``base``, prepared as ``cfg.train`` says."""
    model = copy.deepcopy(base)
    speed = Accelerator(cfg.train, CPU)
    ctx = StepContext(speed.prepare(model), build_objective(cfg), speed, micro_batch_size(cfg.data, 1),
                      cfg.train.seed, RunDir(NO_RUN))
    optimizer = build_optimizer(model, cfg.optim)
    counter = itertools.count()

    def call() -> None:
        with num_threads(threads):
            our_step(ctx, model, optimizer, x, y, eps, next(counter))

    return Contender(group, label, call, model, cfg.train.channels_last)


def attack_call(group: str, label: str, cfg: Config, base: nn.Module, x: torch.Tensor, y: torch.Tensor,
                attack: Attack, eps: float) -> Contender:
    """One attack call on an own copy of ``base``; the batch goes through the layout's ``Accelerator.batch``."""
    model = copy.deepcopy(base)
    speed = Accelerator(cfg.train, CPU)
    net = speed.prepare(model)
    contender = Contender(group, label, lambda: None, model, cfg.train.channels_last)

    def call() -> torch.Tensor:
        model.train()  # as in training: the attack switches to eval mode and back
        out = attack(net, speed.batch(x), y, eps)
        contender.last["x_adv"] = out
        return out

    contender.call = call
    return contender


def cpu_contenders(cfgs: dict[str, Config], base: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   compile_cfg: Config | None) -> dict[str, Contender]:
    """What is timed, by short name ``group/label``; each group's first member is its baseline."""
    eps = cfgs["default"].attack.eps
    out: list[Contender] = []
    for kind in ("clean", "nfgsm", "apgd", "adv"):
        for layout, cfg in cfgs.items():
            if kind == "clean":
                out.append(training_step(kind, layout, cfg, base, x, y, 0.0))
            elif kind == "adv":
                out.append(training_step(kind, layout, cfg, base, x, y, eps))
            else:
                attack = NFGSM() if kind == "nfgsm" else APGD(num_steps=APGD_STEPS)
                out.append(attack_call(kind, layout, cfg, base, x, y, attack, eps))
    for n in THREAD_COUNTS:
        out.append(training_step("threads", f"{n} thread{'s' if n > 1 else ''}", cfgs["default"], base, x, y, 0.0,
                                 threads=n))
    if compile_cfg is not None:
        out.append(training_step("compile", "compiled, steady state", compile_cfg, base, x, y, 0.0))
    return {f"{c.group}/{c.label}": c for c in out}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |a|."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def conv_output_layouts(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(channels-last, total) over the convolution outputs of one forward pass whose layout is unambiguous
    (a tensor with 1×1 spatial size, or one channel, is both contiguous and channels-last)."""
    seen: list[bool] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        if out.is_contiguous() != out.is_contiguous(memory_format=CL):
            seen.append(out.is_contiguous(memory_format=CL))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sum(seen), len(seen)


def weight_layouts(model: nn.Module) -> tuple[int, int]:
    """(channels-last, total) over the 4-D parameters whose layout is unambiguous (the stem convolution's;
    1×1 and depthwise kernels are both contiguous and channels-last)."""
    seen = [p.is_contiguous(memory_format=CL) for p in model.parameters()
            if p.dim() == 4 and p.is_contiguous() != p.is_contiguous(memory_format=CL)]
    return sum(seen), len(seen)


def check_layouts(base: nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Same weights, same batch, default vs channels-last, on fresh copies: eval-mode logits within TOLERANCE
    (the pass/fail check), input gradients and train-mode logits (against an fp64 reference) reported,
    convolution outputs in the intended layout. Prints what it finds."""
    x_cl = x.contiguous(memory_format=CL)
    plain, cl = copy.deepcopy(base).eval(), copy.deepcopy(base).to(memory_format=CL).eval()
    print("correctness, default vs channels-last (same weights, same batch):")
    with torch.no_grad():
        a, b = plain(x), cl(x_cl)
    rel = relative(a, b)
    ok = rel <= TOLERANCE
    print(f"  logits, eval mode: max |Δ| / max |logit| = {rel:.2e} ({'within' if ok else '**NOT** within'} "
          f"{TOLERANCE:g}); same predictions: {bool((a.argmax(1) == b.argmax(1)).all())}")
    grads = []
    for model, xb in ((plain, x), (cl, x_cl)):
        xb = xb.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(F.cross_entropy(model(xb), y), xb)[0])
    same_sign = (grads[0].sign() == grads[1].sign()).float().mean().item()
    print(f"  input gradient of the cross-entropy, eval mode: max |Δ| / max |g| = {relative(*grads):.2e}, "
          f"same sign on {100 * same_sign:.3f} % of the pixels; the channels-last one laid out channels-last: "
          f"{grads[1].is_contiguous(memory_format=CL) and not grads[1].is_contiguous()}")
    for name, model, xb in (("default", plain, x), ("channels-last", cl, x_cl)):
        n_cl, n = conv_output_layouts(model, xb)
        print(f"  {name}: {n_cl}/{n} convolution outputs (unambiguous ones) laid out channels-last")
    # train mode (BatchNorm on batch statistics), fresh copies: their running statistics move, so not reused
    plain, cl, ref = copy.deepcopy(base).train(), copy.deepcopy(base).to(memory_format=CL).train(), \
        copy.deepcopy(base).double().train()
    with torch.no_grad():
        a, b, r = plain(x), cl(x_cl), ref(x.double())
    print(f"  logits, train mode (batch statistics; reported, not checked): max |Δ| / max |logit| = "
          f"{relative(a, b):.2e}; against an fp64 reference: default {relative(r, a.double()):.2e}, "
          f"channels-last {relative(r, b.double()):.2e}")
    return ok


def check_after(timed: dict[str, Contender]) -> None:
    """The timed models kept their layout (nothing leaked between copies), and the attacks' output layout."""
    bad = []
    for name, c in timed.items():
        n_cl, n = weight_layouts(c.model)
        if n_cl != (n if c.channels_last else 0):
            bad.append(f"{name} ({n_cl}/{n} channels-last)")
    print("- layouts after timing: " + ("every model's unambiguous 4-D weights are as intended"
                                        if not bad else "**unexpected** in " + ", ".join(bad)))
    outs = [f"{name} {'channels-last' if x.is_contiguous(memory_format=CL) and not x.is_contiguous() else 'contiguous'}"
            for name, c in timed.items() if (x := c.last.get("x_adv")) is not None]
    if outs:
        print("- layout of the attacks' returned batches: " + ", ".join(outs))


def cpu_report(cfg: Config, args: argparse.Namespace, timed: dict[str, Contender],
               times: dict[str, list[float]], first_compiled: float | None, ok: bool, load: float) -> None:
    bs = cfg.data.batch_size
    med = {name: median(v) for name, v in times.items()}
    print(f"\nmachine: {machine()}; 1-minute load average before the run {load:.2f}")
    print(f"command: `{shlex.join(['python', 'benchmarks/speed.py', *sys.argv[1:]])}`")
    print(f"{cfg.model.name} ({'pretrained' if cfg.model.pretrained else 'random init'}), {cfg.data.name} "
          f"{cfg.data.image_size}×{cfg.data.image_size}, batch {bs}, ε {format_eps(cfg.attack.eps)} (N-FGSM: "
          f"noise 2ε, step ε; APGD-{APGD_STEPS}: CE, random start), precision {cfg.train.precision}; median of "
          f"{args.repeats} interleaved rounds after {args.warmup} warm-up rounds; eval-mode logits of the two "
          f"layouts {'agree' if ok else '**disagree**'} to {TOLERANCE:g} relative\n")
    # rows per group: (label, timed name or None, seconds, images/s, ratio); the first row is the baseline
    groups: dict[str, list[tuple[str, str, float, str, str]]] = {}
    for name, c in timed.items():
        rows = groups.setdefault(c.group, [])
        if c.group == "compile" and not rows:  # eager = the default-layout clean step, timed in the same rounds
            rows.append(("eager (= the clean default row)", "clean/default", med["clean/default"],
                         f"{bs / med['clean/default']:.0f}", "1.00 (baseline)"))
        base_name = rows[0][1] if rows else name
        ratio = "1.00 (baseline)" if base_name == name else f"{med[name] / med[base_name]:.2f}"
        rows.append((c.label, name, med[name], f"{bs / med[name]:.0f}", ratio))
        if c.group == "compile" and first_compiled is not None:
            rows.append(("compiled, first call (compilation; one call, not a median)", "", first_compiled, "–",
                         f"{first_compiled / med[base_name]:.1f}"))
    print("| what | contender | median (s) | images/s | ratio vs baseline |")
    print("|---|---|---|---|---|")
    paired = []
    for group, rows in groups.items():
        for i, (label, name, seconds, ips, ratio) in enumerate(rows):
            print(f"| {GROUPS[group] if i == 0 else ''} | {label} | {seconds:.3f} | {ips} | {ratio} |")
            if i > 0 and name:
                paired.append(f"{group} {label} {paired_ratio(times[name], times[rows[0][1]]):.2f}")
    print("\n- ratio vs baseline = ratio of the medians; median of the per-round ratios (robust to drifting "
          "load): " + ", ".join(paired))
    check_after(timed)


def run_cpu(args: argparse.Namespace) -> None:
    """The CPU contenders: the layouts' correctness check, the rounds, the table (exit status 1 when the two
    layouts' eval-mode logits disagree)."""
    load = os.getloadavg()[0]
    logging.getLogger("robustft").setLevel(logging.WARNING)
    base = [f"data.batch_size={args.batch_size}", f"data.n_train={args.batch_size}", "data.n_val=0",
            "data.n_test=10", "train.device=cpu", "train.precision=fp32", "attack.name=nfgsm", *args.overrides]
    if args.image_size is not None:
        base.append(f"data.image_size={args.image_size}")
    cfgs = {layout: load_config(args.config, base + extra) for layout, extra in LAYOUTS.items()}
    compile_cfg = load_config(args.config, base + ["train.compile=true"]) if args.compile else None
    model, x, y = base_setup(cfgs["default"])
    ok = check_layouts(model, x, y)
    timed = cpu_contenders(cfgs, model, x, y, compile_cfg)
    first_compiled = None
    if compile_cfg is not None:
        print("compiling (the first call of the compiled contender) …", flush=True)
        t0 = time.perf_counter()
        timed["compile/compiled, steady state"].call()
        first_compiled = time.perf_counter() - t0
        print(f"  first call: {first_compiled:.1f} s", flush=True)
    times = interleaved({name: c.call for name, c in timed.items()}, args.repeats, args.warmup)
    cpu_report(cfgs["default"], args, timed, times, first_compiled, ok, load)
    if not ok:
        sys.exit(1)


# ============================================================================ --device cuda
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


def cuda_contenders(cfg: Config, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str],
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


def cuda_report(cfg: Config, args: argparse.Namespace, times: dict[str, list[float]], first: dict[str, float]) -> None:
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


def run_cuda(args: argparse.Namespace) -> None:
    """The GPU contenders: their first calls (compilation, cuDNN autotuning) timed apart, the rounds, the table."""
    if not torch.cuda.is_available():
        sys.exit("speed.py --device cuda needs a CUDA device (--device cpu times the CPU settings)")
    device = torch.device("cuda")
    overrides = ["model.pretrained=false", "data.num_workers=0", *args.overrides]
    if args.image_size is not None:
        overrides.append(f"data.image_size={args.image_size}")
    cfg = load_config(args.config, overrides)
    num_classes = cfg.model.num_classes or 196
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, num_classes)
    size = cfg.data.image_size
    x = torch.rand(args.batch_size, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (args.batch_size,), device=device)
    names = [n for n in SETTINGS if args.compile or not SETTINGS[n][2]]
    timed = cuda_contenders(cfg, model, x, y, names, device)
    first: dict[str, float] = {}
    for name in names:  # compilation (and cuDNN autotuning) happen here, outside the rounds
        t0 = time.perf_counter()
        timed[f"{name}/clean"]()
        timed[f"{name}/adv"]()
        first[name] = time.perf_counter() - t0
        print(f"  first calls of {name}: {first[name]:.1f} s", flush=True)
    times = interleaved(timed, args.repeats, args.warmup)
    cuda_report(cfg, args, times, first)


# ============================================================================ both
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=list(DEFAULTS), default="cpu", help="whose contenders to time (default: cpu)")
    p.add_argument("--config", default=None, help="config the model, data and ε come from (default: "
                   + "; ".join(f"{device}: {config}" for device, (config, _, _) in DEFAULTS.items()) + ")")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every contender (repeatable)")
    p.add_argument("--repeats", type=int, default=10, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default: 2 on cpu, 3 on cuda)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads of everything but the cpu's part 2 (default: torch's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=None,
                   help="image side in pixels (default: the config's; 32 on cpu, 224 on cuda)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="time the torch.compile (inductor) contender: minutes of warm-up (default: off on cpu, "
                        "on on cuda)")
    args = p.parse_args(argv)
    config, warmup, compiled = DEFAULTS[args.device]
    args.config = args.config or config
    args.warmup = warmup if args.warmup is None else args.warmup
    args.compile = compiled if args.compile is None else args.compile
    set_threads(args.threads)
    (run_cpu if args.device == "cpu" else run_cuda)(args)


if __name__ == "__main__":
    main()
