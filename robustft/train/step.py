"""One optimiser step of the training loop: forward and backward passes over micro-batches, with the guards
that stop a diverging run before it keeps NaN, ∞ or exploded values (:func:`train_step`, :func:`check_weights`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NoReturn, cast

import torch
from torch import nn

from robustft import distributed as ddp
from robustft.config import DataConfig
from robustft.data.loader import Augmentation
from robustft.errors import ConfigError, NonFiniteLossError
from robustft.objectives import AdversarialObjective, Objective, ObjectiveOutput
from robustft.runs import RunDir
from robustft.train.carry import CarriedPerturbations
from robustft.train.ema import EMA
from robustft.train.speed import Accelerator

MAX_ABS_WEIGHT = 1e10
"""|value| of a weight, buffer (BatchNorm running statistics) or averaged weight above which training has
diverged: trained networks stay within ~1e4, float32 overflows to ∞ at 3.4e38."""


@dataclass
class EpochStats:
    """Running sums of one epoch's training batches (floats once summed over processes)."""

    loss: float = 0.0
    correct: float = 0
    n: float = 0
    eps: float = 0.0

    def add(self, loss: float, logits: torch.Tensor, y: torch.Tensor, eps: float) -> None:
        self.loss += loss * len(y)
        self.eps += eps * len(y)
        self.correct += (logits.argmax(1) == y).sum().item()
        self.n += len(y)

    def reduced(self) -> "EpochStats":
        """The sums over every process."""
        return EpochStats(*ddp.all_reduce_sum([self.loss, self.correct, self.n, self.eps]))


def _check_finite(loss: float, model: nn.Module, epoch: int, step: int, run: RunDir | None, precision: str) -> None:
    """Stop before an update that would write NaN or ∞ into the weights: a non-finite loss, or a finite loss
    whose gradient is not (one reduction over all gradients; no GradScaler hides either in fp32 or bf16)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_ok = not grads or bool(torch.isfinite(torch.stack([g.float().norm() for g in grads]).sum()))
    bad = [float(not math.isfinite(loss)), float(not grad_ok)]
    if ddp.current().world > 1:  # every process stops together, or the others would wait forever
        bad = ddp.all_reduce_sum(bad)
    if bad[0] or bad[1]:
        what = f"the training loss became {loss}" if bad[0] else "the gradient became non-finite (the loss did not)"
        _stop(what, epoch, step, run, precision)


def check_weights(model: nn.Module, ema: EMA | None, epoch: int, step: int, run: RunDir | None,
                   precision: str) -> None:
    """Stop before a checkpoint would keep NaN, ∞ or exploded values (|v| > :data:`MAX_ABS_WEIGHT`) in the
    weights, the buffers or the weight average. A finite training loss does not vouch for them: BatchNorm
    trains on batch statistics, so its running statistics can overflow unseen and collapse the evaluated model.
    Once per epoch: one reduction per tensor, one transfer and one collective."""
    tensors = model.state_dict() | ({f"ema.{k}": v for k, v in ema.params.items()} if ema is not None else {})
    named = [(k, v) for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    peaks = torch.stack([v.detach().abs().max().float() for _, v in named]).cpu() if named else torch.zeros(0)
    bad = ~(peaks <= MAX_ABS_WEIGHT)  # NaN compares false, so it counts as bad
    count = [float(bad.sum())]
    if ddp.current().world > 1:  # every process stops together, or the others would wait forever
        count = ddp.all_reduce_sum(count)
    if not count[0]:
        return
    worst = [f"{k} ({peaks[i].item():.3g})" for i, (k, _) in enumerate(named) if bad[i]][:3]
    _stop(f"the weights diverged although the loss stayed finite: {int(bad.sum())} tensor(s) of weights or buffers "
          f"hold NaN, ∞ or values beyond ±{MAX_ABS_WEIGHT:.0e}, e.g. {', '.join(worst) or 'on another process'}",
          epoch, step, run, precision)


def _stop(what: str, epoch: int, step: int, run: RunDir | None, precision: str) -> NoReturn:
    """Raise the :class:`NonFiniteLossError` of a diverged run: ``what`` went wrong, where, what was kept
    and how to go on (the loss, gradient and weight checks all stop this way)."""
    hint = " or train.precision=fp32" if precision != "fp32" else ""
    if run is None:
        raise NonFiniteLossError(f"{what} at epoch {epoch} (step {step}). Lower the learning rate or clip the "
                                 f"gradient norm{hint}; train with a run directory to keep checkpoints to resume from.")
    if not run.checkpoint_path.exists():  # stopped in the first epoch: there is nothing to resume
        raise NonFiniteLossError(
            f"{what} at epoch {epoch} (step {step}), before the first checkpoint; nothing was kept. "
            f"Lower optim.lr or set optim.grad_clip{hint}, then run again (without --resume: the new start "
            f"takes over {run.path})."
        )
    raise NonFiniteLossError(
        f"{what} at epoch {epoch} (step {step}); the last good checkpoint ({run.checkpoint_path}) is kept. "
        f"Lower optim.lr or set optim.grad_clip{hint}, then resume from it: --resume --set optim.lr=... "
        f"(a resume may change these; the run records the change in resumes.jsonl)."
    )


def micro_batch_size(cfg: DataConfig, world: int) -> int:
    """Examples per forward/backward pass on each of ``world`` processes (``data.micro_batch_size``, else the
    process's whole share of the batch).

    Raises:
        ConfigError: the batch does not split evenly over processes and micro-batches.
    """
    if cfg.batch_size % world:
        raise ConfigError(f"data.batch_size: {cfg.batch_size} examples do not split evenly over {world} processes")
    per_process = cfg.batch_size // world
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise ConfigError(f"data.micro_batch_size: {micro} does not divide the {per_process} examples each of the "
                          f"{world} processes gets from data.batch_size={cfg.batch_size}")
    return micro


@dataclass
class StepContext:
    """What one optimiser step needs besides its batch."""

    net: nn.Module  # the model's forward passes: channels-last, compiled and in DDP under torchrun as configured
    objective: Objective
    speed: Accelerator
    micro: int | None  # examples per forward/backward pass (None: the whole batch)
    seed: int
    run: RunDir | None
    carry: CarriedPerturbations | None = None  # attack.carry: every example's last perturbation


def train_step(ctx: StepContext, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, epoch: int,
               step: int, stats: EpochStats, drawn: tuple[torch.Tensor, Augmentation] | None = None) -> ObjectiveOutput:
    """Forward and backward passes over this process's micro-batches of one batch through ``ctx.net``
    (DistributedDataParallel under torchrun), gradients averaged over processes (not yet applied). Each
    micro-batch starts from the step's BatchNorm statistics and draws its attack and dropout randomness from
    a seed of (seed, step, its index in the global batch), so runs on 1 or N processes with the same
    micro-batches compute the same step. With ``ctx.carry`` and ``drawn`` (the batch's positions in the
    training data and its augmentation), each example's attack starts from its carried perturbation, and the
    new one is kept."""
    shard = ddp.current()
    xs, ys = (x.split(ctx.micro), y.split(ctx.micro)) if ctx.micro else ((x,), (y,))
    chunks = len(ys)
    running, worst = ddp.RunningStats(model, chunks), 0.0
    for j, (xb, yb) in enumerate(zip(xs, ys)):
        running.begin_chunk()
        xb = ctx.speed.batch(xb)
        yb = yb.to(xb.device)
        torch.manual_seed((ctx.seed * 1_000_003 + step) * 4099 + shard.rank * chunks + j)
        carried = _carried(ctx, drawn, j, len(yb), eps)
        with ddp.sync_gradients(ctx.net, now=j == chunks - 1):  # averaged over processes in the last backward
            with ctx.speed.autocast():
                if carried is None:
                    out = ctx.objective(ctx.net, xb, yb, eps)
                else:
                    start = carried[0].starts(xb, *carried[1:], eps)  # validation allows carry for adversarial only
                    out = cast(AdversarialObjective, ctx.objective)(ctx.net, xb, yb, eps, x_init=start)
            (out.loss / chunks).backward()
        if carried is not None and out.x_adv is not None:
            carried[0].update(xb, out.x_adv, *carried[1:])
        loss = out.loss.item()
        worst = loss if not math.isfinite(loss) else worst
        stats.add(loss, out.logits.detach(), yb, eps)
        running.end_chunk()
    # once per step: one collective, before any update
    _check_finite(worst, model, epoch, step, ctx.run, ctx.speed.precision)
    running.finish()
    return out


def _carried(ctx: StepContext, drawn: tuple[torch.Tensor, Augmentation] | None, chunk: int, size: int,
             eps: float) -> tuple[CarriedPerturbations, torch.Tensor, Augmentation] | None:
    """(memory, positions, augmentation) of micro-batch ``chunk`` (``size`` examples) when its attack starts
    from carried perturbations (``attack.carry``, ε > 0), else None."""
    if ctx.carry is None or drawn is None or eps == 0:
        return None
    part = slice(chunk * size, (chunk + 1) * size)
    return ctx.carry, drawn[0][part], drawn[1].rows(part)

