"""The training loop: robust fine-tuning with an ε schedule, per-epoch validation and checkpoints.

:func:`train_loop` is the one loop: it takes objects (a model on [0, 1] pixels, training batches, an objective,
an ε schedule, an optimiser and its LR schedule, what to validate) and, with a run directory, checkpoints
every epoch and resumes exactly. :func:`fit_config` builds those objects from a :class:`Config` (the CLI's and
``robustft.fine_tune``'s path); :func:`robustft.train.api.fit` builds them from a user's own model and data.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, replace
from typing import Callable, NoReturn, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft import distributed as ddp
from robustft.config import Config, DataConfig, TrainConfig, is_clean_objective
from robustft.data import SourceBatches, TrainData, build_data
from robustft.data.loader import Augmentation
from robustft.errors import CatastrophicOverfittingError, ConfigError, DataError, NonFiniteLossError
from robustft.eval.diagnostics import failure_threshold
from robustft.eval.metrics import delay_time
from robustft.models import build_model
from robustft.objectives import AdversarialObjective, Objective, ObjectiveOutput, build_objective
from robustft.runs import EpochRow, RunDir, StepRow, TrainSummary
from robustft.schedules import Schedule, build_eps_schedule, build_lr_schedule
from robustft.train.carry import CarriedPerturbations
from robustft.train.checkpoint import (
    kept_rng_state,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    set_rng_state,
)
from robustft.train.ema import EMA, Swapped
from robustft.train.monitor import best_robust_epoch, collapsed, overfit_verdict
from robustft.train.optim import apply_settings, build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.validation import Validation, monitor, validate

log = logging.getLogger(__name__)


MAX_ABS_WEIGHT = 1e10
"""|value| of a weight, buffer (BatchNorm running statistics) or averaged weight above which training has
diverged: trained networks stay within ~1e4, float32 overflows to ∞ at 3.4e38."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``auto`` and ``cuda`` use GPU ``LOCAL_RANK`` under torchrun;
    anything else as given."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def _check_weights(model: nn.Module, ema: EMA | None, epoch: int, step: int, run: RunDir | None,
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


def train_loop(model: nn.Module, data: TrainData, *, objective: Objective, eps_schedule: Schedule,
               optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float], opts: TrainConfig,
               device: torch.device, validation: Validation | None = None, grad_clip: float | None = None,
               micro_batch: int | None = None, run: RunDir | None = None, resume: bool = False,
               on_resume: Callable[[dict], None] | None = None, on_epoch: Callable[[EpochRow], None] | None = None,
               num_classes: int | None = None, carry: CarriedPerturbations | None = None) -> TrainSummary:
    """Fine-tune ``model`` for ``opts.epochs`` epochs; returns the training summary (with ``run``, also its
    summary.json). The one training loop of robustft: :func:`fit_config` and :func:`robustft.train.api.fit`
    build its arguments.

    Each optimiser step takes a batch of ``data.epoch(epoch)``, sets the LR to each group's peak LR (its
    ``base_lr`` where the group has one, as robustft's own groups do, else its ``lr`` when the loop starts; kept
    aside, the groups get no new key) × ``lr_at(step)`` and ε to ``eps_schedule.eps_at(epoch, i, steps)``, and
    minimises ``objective`` (which attacks at that ε). After each epoch the weights to be evaluated (the weight
    average with ``opts.ema_decay``) are validated on ``validation`` (clean accuracy, ``val_adv_*``, the overfitting
    monitor). With ``run`` each epoch's row goes to metrics.jsonl and a checkpoint is written; ``resume`` continues
    from it (weights, optimiser, weight average, schedule positions and random state restored, so the run ends as an
    uninterrupted one would), after ``on_resume(checkpoint)``. ``on_epoch`` is called with each epoch's row after
    its checkpoint. When training ends ``model`` holds the weights to evaluate (the weight average, or the best
    robust epoch's under ``opts.select: best_robust``). Under ``torchrun`` the processes share each batch (each
    ``data`` yields its process's share) and only process 0 writes to ``run``. With ``carry``
    (robustft/train/carry.py; ``data`` must be robustft's own :class:`SourceBatches`, one process) each example's
    attack starts from its perturbation of the previous epoch; the memory is checkpointed and restored with the
    rest.
    """
    shard = ddp.init_from_env(device)
    seed_everything(opts.seed)
    speed = Accelerator(opts, device)
    if carry is not None and (not isinstance(data, SourceBatches) or shard.world > 1):
        raise ConfigError("attack.carry: carried perturbations need robustft's own training data (SourceBatches: "
                          "they follow each example's position and augmentation) and one process")
    ctx = StepContext(ddp.wrap(speed.prepare(model), device), objective, speed, micro_batch, opts.seed, run, carry)
    ema = EMA(model, opts.ema_decay) if opts.ema_decay is not None else None
    epochs, steps_per_epoch = opts.epochs, data.steps_per_epoch
    eps_target = eps_schedule.eps_target
    start_epoch, step, elapsed = 0, 0, 0.0
    peaks = [group.get("base_lr", group["lr"]) for group in optimizer.param_groups]
    # --- resume: weights, optimiser, weight average, progress and random state from the last checkpoint
    if resume:
        if run is None:
            raise ConfigError("resume: there is nothing to resume from without a run directory; pass run=... or resume=False")
        ckpt = load_checkpoint(run.checkpoint_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.load_checkpoint_state(ckpt["ema"])
        start_epoch, step, elapsed = ckpt["epochs_done"], ckpt["step"], ckpt.get("elapsed", 0.0)
        set_rng_state(ckpt["rng"])
        eps_schedule = eps_schedule.with_state(ckpt.get("schedule", {}))
        if carry is not None:
            carry.load_state(ckpt["carry"])
        if shard.main:
            run.truncate_metrics(start_epoch)
        if on_resume is not None:
            on_resume(ckpt)
        log.info("resuming %s at epoch %d/%d (step %d)", run.path, start_epoch, epochs, step)
        peaks = [group.get("base_lr", peak) for group, peak in zip(optimizer.param_groups, peaks)]  # as resumed
    stopped_row: list[EpochRow] = []
    kept_best: dict[str, torch.Tensor] | None = None
    rows = [r for r in run.epoch_rows() if r.epoch < start_epoch] if resume and run is not None else []
    for epoch in range(start_epoch, epochs):
        t0, stats = time.perf_counter(), EpochStats()
        eps = eps_schedule.eps_at(epoch)
        model.train()
        batches = cast(SourceBatches, data).epoch_drawn(epoch) if carry is not None else data.epoch(epoch)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                   disable=None if shard.main else True, leave=False)
        for i, (x, y, *drawn) in enumerate(bar):
            # --- one optimiser step at the scheduled ε and LR, over this process's micro-batches
            eps = eps_schedule.eps_at(epoch, i, steps_per_epoch)
            _set_lr(optimizer, peaks, lr_at(step))
            optimizer.zero_grad(set_to_none=True)
            out = train_step(ctx, model, x, y, eps, epoch, step, stats, (drawn[0], drawn[1]) if drawn else None)
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            bar.set_postfix(loss=f"{stats.loss / stats.n:.3f}", eps=f"{eps * 255:.2f}/255")
            if run is not None and step % opts.log_every == 0 and shard.main:
                run.log(StepRow(epoch=epoch, step=step, eps=eps, lr=optimizer.param_groups[0]["lr"],
                                loss=out.loss.item(), parts=out.parts))
        if stats.n == 0:
            raise DataError(f"epoch {epoch + 1}: the training data yielded no batches; give data with at least "
                            "one batch")
        # --- end of epoch: validate and monitor the weights to be evaluated, log, checkpoint (process 0 writes)
        _check_weights(model, ema, epoch, step, run, speed.precision)  # nothing diverged is kept
        stats = stats.reduced()
        measured, eps_mean = {}, stats.eps / stats.n
        if validation is not None:
            with Swapped(model, ema):
                measured = validate(model, validation, device) | monitor(model, validation, device, eps_mean)
        elapsed += time.perf_counter() - t0
        row = EpochRow(epoch=epoch, step=step, eps=eps, eps_mean=eps_mean, lr=optimizer.param_groups[0]["lr"],
                       train_loss=stats.loss / stats.n, train_acc=stats.correct / stats.n, elapsed_s=elapsed,
                       **measured)
        if validation is not None:
            eps_schedule, row = _observe(eps_schedule, epoch, row)
        log.info("epoch %d/%d  ε=%.2f/255  %s", epoch + 1, epochs, eps * 255,
                 "  ".join(f"{k}={v:.4f}" for k, v in row.measurements().items()))
        if _overfit_stop(opts, row, epoch, rows, run):
            stopped_row = [row]
            if run is not None and shard.main:
                run.log(row)
            break
        rows.append(row)
        best = _best_weights(opts, model, ema, eps_target, rows)
        if run is not None and shard.main:
            run.log(row)
            extra = {"elapsed": elapsed, "schedule": eps_schedule.state()}
            if carry is not None:
                extra["carry"] = carry.state()
            if ema is not None:
                extra |= {"ema": ema.checkpoint_state(), "eval_model": ema.state_dict(model)}
            if best is not None:  # first: a kill between the two writes redoes it
                save_checkpoint(run.best_path, model, None, epoch + 1, step, {"eval_model": best})
            save_checkpoint(run.checkpoint_path, model, optimizer, epoch + 1, step, extra)
        kept_best = best if best is not None else kept_best
        if on_epoch is not None and shard.main:
            with kept_rng_state():  # what the callback draws leaves training's random streams alone
                on_epoch(row)
    ddp.barrier()
    select = _selection(opts, eps_target, rows, run)
    if select["rule"] == "best_robust":  # an earlier start of a resumed run may have found it
        _load_best_weights(model, kept_best, run)
    elif ema is not None:
        model.load_state_dict(ema.state_dict(model))
    summary = summarize(rows, stopped_row, opts, eps_schedule, num_classes, speed, select,
                        has_val=validation is not None and len(validation.source) > 0)
    if run is not None and shard.main:
        run.write_summary(summary)
    return summary


def _set_lr(optimizer: torch.optim.Optimizer, peaks: list[float], multiplier: float) -> None:
    """Set each group's LR to its peak × ``multiplier``."""
    for group, peak in zip(optimizer.param_groups, peaks):
        group["lr"] = peak * multiplier


def _load_best_weights(model: nn.Module, kept: dict[str, torch.Tensor] | None, run: RunDir | None) -> None:
    """Put the best epoch's evaluated weights into ``model``: those kept in memory by this start, else those of
    an earlier start of a resumed run (``checkpoints/best.pt``)."""
    if kept is not None:
        model.load_state_dict(kept)
    elif run is not None:
        load_model_weights(run.best_path, model)
    else:
        raise ValueError("train.select=best_robust: the best epoch's weights are neither in memory nor in a run "
                         "directory")


def fit_config(cfg: Config, run: RunDir, resume: bool = False,
               on_epoch: Callable[[EpochRow], None] | None = None) -> TrainSummary:
    """Fine-tune the configured model into ``run``: build the data, model, objective, optimiser and schedules
    of ``cfg`` and run :func:`train_loop`; returns the training summary (also in summary.json). With
    ``resume`` the run continues from its last checkpoint; a resume may change the optimiser settings of
    ``robustft.runs.RESUMABLE_KEYS`` (recorded in the run)."""
    device = resolve_device(cfg.train.device)
    shard = ddp.init_from_env(device)
    seed_everything(cfg.train.seed)
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.head_classes(cfg.model.num_classes)).to(device)
    if shard.world > 1 and len(data.train) < cfg.data.batch_size:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is more than the {len(data.train)} training "
                          f"examples, so {shard.world} processes cannot share a batch; lower it")
    d = cfg.data
    batches = SourceBatches(data.train, d.image_size, d.batch_size, cfg.train.seed, d.flip, d.pad_crop, d.color_jitter,
                            d.rotation, shard=(shard.rank, shard.world), num_workers=d.num_workers)
    optimizer = build_optimizer(model, cfg.optim)
    eps_target = 0.0 if is_clean_objective(cfg.objective.name) else cfg.attack.eps  # the ε the objective trains at
    eps_schedule = build_eps_schedule(cfg.schedule, eps_target, cfg.train.epochs, seed=cfg.train.seed)

    def on_resume(ckpt: dict) -> None:
        apply_settings(optimizer, cfg.optim)  # the checkpoint's LR and weight decay, unless the resume changed them
        if shard.main:
            run.record_resume(cfg, ckpt["epochs_done"], ckpt["step"])  # changed optimiser settings: logged, kept

    carry = CarriedPerturbations.empty(len(data.train), (3, d.image_size, d.image_size)) if cfg.attack.carry else None
    summary = train_loop(model, batches, objective=build_objective(cfg), eps_schedule=eps_schedule,
                         optimizer=optimizer, lr_at=build_lr_schedule(cfg.optim, cfg.train.epochs,
                                                                       batches.steps_per_epoch),
                         opts=cfg.train, device=device, validation=Validation.from_config(cfg, data),
                         grad_clip=cfg.optim.grad_clip, micro_batch=micro_batch_size(cfg.data, shard.world),
                         run=run, resume=resume, on_resume=on_resume, on_epoch=on_epoch,
                         num_classes=data.num_classes, carry=carry)
    if shard.main and cfg.data.n_val > 0:
        final = summary.final.get("val_clean_acc")
        if final is not None and final < failure_threshold(data.num_classes):
            log.warning("transfer failure: validation clean accuracy %.1f %% is near chance (%d classes); "
                        "see `robustft diagnose %s`", 100 * final, data.num_classes, run.path)
    return summary


def _overfit_stop(opts: TrainConfig, row: EpochRow, epoch: int, history: list[EpochRow], run: RunDir | None) -> bool:
    """Whether the monitor found catastrophic overfitting in this epoch and the run should end before
    checkpointing it (``train.on_overfit: stop`` and a collapse, see robustft/train/monitor.py); logs a
    warning whenever the gap is above the threshold.

    Raises:
        CatastrophicOverfittingError: the run must stop but has no checkpoint to fall back on.
    """
    gap, attack_acc, ref_acc, mon_eps = row.mon_gap, row.mon_attack_acc, row.mon_ref_acc, row.mon_eps
    if gap is None or attack_acc is None or ref_acc is None or mon_eps is None or gap <= opts.overfit_gap:
        return False
    log.warning("monitor, epoch %d: accuracy under the training attack %.1f %% vs %.1f %% under APGD-CE at "
                "ε=%.2f/255 (gap above %.0f points: the training attack is much weaker than APGD-CE on this model; "
                "catastrophic overfitting if it persists to the end or APGD-CE accuracy collapses)", epoch + 1,
                100 * attack_acc, 100 * ref_acc, 255 * mon_eps, 100 * opts.overfit_gap)
    if opts.on_overfit != "stop" or not collapsed(history, row, opts.overfit_gap):
        return False
    if epoch == 0 or (run is not None and not run.checkpoint_path.exists()):
        raise CatastrophicOverfittingError(
            f"catastrophic overfitting in epoch {epoch + 1} and no earlier checkpoint to keep; train with "
            "attack.name=nfgsm or a multi-step attack, or a smaller ε_g")
    log.warning("train.on_overfit=stop: training ends; the run keeps the weights of epoch %d", epoch)
    return True


def _best_weights(opts: TrainConfig, model: nn.Module, ema: EMA | None, eps_target: float,
                  history: list[EpochRow]) -> dict[str, torch.Tensor] | None:
    """With ``train.select: best_robust``, a copy of the weights to evaluate when this epoch (the last row of
    ``history``) is the best so far (monitor accuracy under APGD-CE, among epochs trained at ε_g), else None."""
    if opts.select != "best_robust":
        return None
    best = best_robust_epoch(history, eps_target)
    if best is None or best.epoch != history[-1].epoch:
        return None
    weights = ema.state_dict(model) if ema is not None else model.state_dict()
    return {k: v.detach().clone() for k, v in weights.items()}


def _observe(schedule: Schedule, epoch: int, row: EpochRow) -> tuple[Schedule, EpochRow]:
    """Show the schedule the epoch's validation accuracy; log (and record in the row returned) an auto switch."""
    if row.val_clean_acc is None:  # not validated
        return schedule, row
    after = schedule.observe(epoch, row.val_clean_acc)
    if after.state().get("switch") is not None and schedule.state().get("switch") is None:
        row = replace(row, schedule_switch=after.state()["switch"])
        log.info("auto schedule: validation clean accuracy stopped improving after epoch %d; ε ramps up "
                 "from epoch %d", epoch + 1, epoch + 2)
    return after, row


def summarize(rows: list[EpochRow], stopped_row: list[EpochRow], opts: TrainConfig, schedule: Schedule,
              num_classes: int | None, speed: Accelerator | None, select: dict,
              has_val: bool = True) -> TrainSummary:
    """The training summary of the epoch rows whose weights were kept (and ``stopped_row``: [the row of the
    epoch training stopped at], or []): wall time, delay time, final validation numbers, the resolved ε
    schedule (where auto switched), the number of classes (chance level), the overfitting monitor's verdict,
    the epoch training stopped at (``train.on_overfit: stop``) and which weights are evaluated (``select``)."""
    stopped = stopped_row[0].epoch if stopped_row else None
    described = schedule.describe()
    summary = TrainSummary(
        epochs=len(rows), train_time_s=rows[-1].elapsed_s if rows else 0.0, num_classes=num_classes,
        schedule=described, delay_threshold=opts.delay_threshold,
        delay_epochs=delay_time([r.val_clean_acc for r in rows], opts.delay_threshold) if has_val else None,
        final=rows[-1].measurements() if rows else {}, processes=ddp.current().world,
        precision=speed.precision if speed is not None else "fp32",
        channels_last=speed.channels_last if speed is not None else False,
        compile=speed.compile if speed is not None else False,
        catastrophic_overfitting=overfit_verdict(rows + stopped_row, opts.overfit_gap, stopped).to_dict(),
        stopped_at_epoch=stopped, select=select)
    if described["kind"] == "auto" and rows and not any(r.eps_mean for r in rows):
        log.warning("auto schedule: validation clean accuracy did not plateau before the last epoch, so ε stayed 0 "
                    "for the whole run; lower schedule.patience, raise schedule.tolerance or train longer")
    return summary


def _selection(opts: TrainConfig, eps_target: float, rows: list[EpochRow], run: RunDir | None) -> dict:
    """Which weights the evaluation takes: the rule, the epoch (1-based count of epochs done) and file."""
    weights = "ema" if opts.ema_decay is not None else "live"
    last = run.checkpoint_path.name if run is not None else None
    if opts.select == "best_robust":
        best = best_robust_epoch(rows, eps_target)
        if best is not None:
            return {"rule": "best_robust", "epochs_done": best.epoch + 1, "mon_ref_acc": best.mon_ref_acc,
                    "checkpoint": run.best_path.name if run is not None else None, "weights": weights}
        log.warning("train.select=best_robust: no epoch was trained at ε_g with the monitor on; the final "
                    "weights are evaluated")
    return {"rule": "final", "epochs_done": len(rows), "checkpoint": last, "weights": weights}
