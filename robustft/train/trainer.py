"""The training loop: robust fine-tuning with an ε schedule, per-epoch validation and checkpoints.

:func:`train_loop` is the one loop: it takes a :class:`Loop` of objects (a model on [0, 1] pixels, training
batches, an objective, an ε schedule, an optimiser and its LR schedule, what to validate) and, with a run
directory, checkpoints every epoch and resumes exactly. Its named steps are :class:`Loop`'s methods (start,
restore, end of epoch, checkpoint, finish); one optimiser step is robustft/train/step.py, what the loop decides
from its epoch rows robustft/train/epochs.py. :func:`fit_config` builds the objects from a :class:`Config` (the
CLI's and ``robustft.fine_tune``'s path); :func:`robustft.train.api.fit` builds them from a user's own model and
data.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft import distributed as ddp
from robustft.config import Config, TrainConfig, is_clean_objective
from robustft.data import SourceBatches, TrainData, build_data
from robustft.errors import ConfigError, DataError, NonFiniteLossError
from robustft.eval.diagnostics import failure_threshold
from robustft.objectives import Objective, build_objective
from robustft.runs import EpochRow, RunDir, StepRow, TrainSummary
from robustft.schedules import Schedule, build_eps_schedule, build_lr_schedule
from robustft.train.carry import CarriedPerturbations
from robustft.train.checkpoint import kept_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from robustft.train.ema import EMA, Swapped
from robustft.train.epochs import best_weights, load_best_weights, observe, selection, summarize
from robustft.train.epochs import overfit_stop as _overfit_stop
from robustft.train.optim import apply_settings, build_optimizer
from robustft.train.speed import Accelerator
from robustft.train.step import MAX_ABS_WEIGHT as MAX_ABS_WEIGHT
from robustft.train.step import EpochStats, StepContext, check_weights, micro_batch_size, train_step
from robustft.train.tune import Tuning, build_tuned_model
from robustft.train.validation import Validation, monitor, validate

__all__ = ["MAX_ABS_WEIGHT", "EpochStats", "Loop", "NonFiniteLossError", "StepContext", "fit_config",
           "micro_batch_size", "resolve_device", "seed_everything", "train_loop", "train_step"]

log = logging.getLogger(__name__)


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



@dataclass(eq=False)
class Loop:
    """What :func:`train_loop` trains and with what, and the loop's progress while it runs.

    ``model`` (on [0, 1] pixels) is fine-tuned for ``opts.epochs`` epochs on ``data`` by minimising ``objective``
    (which attacks at the ε of ``eps_schedule``) with ``optimizer``, each group's LR its peak (its ``base_lr`` where
    the group has one, as robustft's own groups do, else its ``lr`` when the loop starts; kept aside, the groups get
    no new key) × ``lr_at(step)``, gradients clipped to norm ``grad_clip``, each process's share of a batch passed
    ``micro_batch`` examples at a time. After each epoch the weights to be evaluated (the weight average with
    ``opts.ema_decay``) are validated on ``validation`` (clean accuracy, ``val_adv_*``, the overfitting monitor).
    With ``run`` each epoch's row goes to metrics.jsonl and a checkpoint is written; a resume continues from it,
    after ``on_resume(checkpoint)``. ``on_epoch`` is called with each epoch's row after its checkpoint.
    ``num_classes`` (chance level) goes to the summary. ``tuning`` says what trains and how the head starts
    (its probing epochs: robustft/train/tune.py; it was applied to the model before the optimiser was built). With ``carry`` (robustft/train/carry.py; ``data`` must be
    robustft's own :class:`SourceBatches`, one process) each example's attack starts from its perturbation of the
    previous epoch; the memory is checkpointed and restored with the rest.
    """

    model: nn.Module
    data: TrainData
    objective: Objective
    eps_schedule: Schedule
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    opts: TrainConfig
    device: torch.device
    validation: Validation | None = None
    grad_clip: float | None = None
    micro_batch: int | None = None
    num_classes: int | None = None
    carry: CarriedPerturbations | None = None
    tuning: Tuning = field(default_factory=Tuning)
    run: RunDir | None = None
    on_resume: Callable[[dict], None] | None = None
    on_epoch: Callable[[EpochRow], None] | None = None
    # progress, set by start() and restore()
    shard: ddp.Shard = field(init=False, repr=False)
    speed: Accelerator = field(init=False, repr=False)
    ctx: StepContext = field(init=False, repr=False)
    ema: EMA | None = field(init=False, repr=False)
    schedule: Schedule = field(init=False, repr=False)  # eps_schedule as resumed and observed
    peaks: list[float] = field(init=False, repr=False)  # each group's peak LR
    epochs_done: int = field(init=False, repr=False)
    step: int = field(init=False, repr=False)
    elapsed: float = field(init=False, repr=False)  # seconds of training and validation over all starts
    rows: list[EpochRow] = field(init=False, repr=False)  # the epochs whose weights were kept
    stopped: EpochRow | None = field(init=False, repr=False)  # the epoch catastrophic overfitting stopped
    kept_best: dict[str, torch.Tensor] | None = field(init=False, repr=False)  # best_robust weights of this start

    def start(self) -> None:
        """Join the processes, seed, prepare the speed levers and the weight average; progress at zero."""
        self.shard = ddp.init_from_env(self.device)
        seed_everything(self.opts.seed)
        self.speed = Accelerator(self.opts, self.device)
        if self.carry is not None and (not isinstance(self.data, SourceBatches) or self.shard.world > 1):
            raise ConfigError("attack.carry: carried perturbations need robustft's own training data (SourceBatches: "
                              "they follow each example's position and augmentation) and one process")
        net = ddp.wrap(self.speed.prepare(self.model), self.device)
        self.ctx = StepContext(net, self.objective, self.speed, self.micro_batch, self.opts.seed, self.run, self.carry)
        self.ema = EMA(self.model, self.opts.ema_decay) if self.opts.ema_decay is not None else None
        self.schedule, self.epochs_done, self.step, self.elapsed = self.eps_schedule, 0, 0, 0.0
        self.peaks = [group.get("base_lr", group["lr"]) for group in self.optimizer.param_groups]
        self.rows, self.stopped, self.kept_best = [], None, None

    def restore(self) -> None:
        """Resume from the run's last checkpoint: weights, optimiser, weight average, schedule positions,
        perturbation memory and random state, so the run ends as an uninterrupted one would."""
        run = self.run
        if run is None:
            raise ConfigError("resume: there is nothing to resume from without a run directory; pass run=... or resume=False")
        ckpt = load_checkpoint(run.checkpoint_path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None:
            self.ema.load_checkpoint_state(ckpt["ema"])
        self.epochs_done, self.step, self.elapsed = ckpt["epochs_done"], ckpt["step"], ckpt.get("elapsed", 0.0)
        set_rng_state(ckpt["rng"])
        self.schedule = self.schedule.with_state(ckpt.get("schedule", {}))
        if self.carry is not None:
            self.carry.load_state(ckpt["carry"])
        if self.shard.main:
            run.truncate_metrics(self.epochs_done)
        if self.on_resume is not None:
            self.on_resume(ckpt)
        log.info("resuming %s at epoch %d/%d (step %d)", run.path, self.epochs_done, self.opts.epochs, self.step)
        self.peaks = [group.get("base_lr", peak) for group, peak in zip(self.optimizer.param_groups, self.peaks)]
        self.rows = [r for r in run.epoch_rows() if r.epoch < self.epochs_done]

    def batches(self, epoch: int) -> Iterable[tuple]:
        """This process's batches of ``epoch``: (x, y), with ``carry`` also their positions and augmentation."""
        if self.carry is not None:
            return cast(SourceBatches, self.data).epoch_drawn(epoch)
        return self.data.epoch(epoch)

    def end_epoch(self, epoch: int, stats: EpochStats, eps: float, t0: float) -> EpochRow | None:
        """Check the weights, validate and monitor those to be evaluated, show the schedule the result and log
        the epoch's row; None when catastrophic overfitting stops training (``train.on_overfit: stop``)."""
        check_weights(self.model, self.ema, epoch, self.step, self.run, self.speed.precision)  # nothing diverged is kept
        stats = stats.reduced()
        measured: dict[str, Any] = {}
        eps_mean = stats.eps / stats.n
        if self.validation is not None:
            with Swapped(self.model, self.ema):
                measured = (validate(self.model, self.validation, self.device)
                            | monitor(self.model, self.validation, self.device, eps_mean))
        self.elapsed += time.perf_counter() - t0
        row = EpochRow(epoch=epoch, step=self.step, eps=eps, eps_mean=eps_mean,
                       lr=self.optimizer.param_groups[0]["lr"], train_loss=stats.loss / stats.n,
                       train_acc=stats.correct / stats.n, elapsed_s=self.elapsed, phase=self.tuning.phase(epoch),
                       **measured)
        if self.validation is not None:
            self.schedule, row = observe(self.schedule, epoch, row)
        log.info("epoch %d/%d  ε=%.2f/255  %s", epoch + 1, self.opts.epochs, eps * 255,
                 "  ".join(f"{k}={v:.4f}" for k, v in row.measurements().items()))
        if _overfit_stop(self.opts, row, epoch, self.rows, self.run):
            self.stopped = row
            if self.run is not None and self.shard.main:
                self.run.log(row)
            return None
        self.rows.append(row)
        return row

    def checkpoint(self, epoch: int, row: EpochRow) -> None:
        """Log the epoch's row and write its checkpoint (and, the best robust epoch so far, best.pt) from
        process 0; then show the row to ``on_epoch``."""
        best = best_weights(self.opts, self.model, self.ema, self.eps_schedule.eps_target, self.rows)
        if self.run is not None and self.shard.main:
            self.run.log(row)
            extra = {"elapsed": self.elapsed, "schedule": self.schedule.state()}
            if self.carry is not None:
                extra["carry"] = self.carry.state()
            if self.ema is not None:
                extra |= {"ema": self.ema.checkpoint_state(), "eval_model": self.ema.state_dict(self.model)}
            if best is not None:  # first: a kill between the two writes redoes it
                save_checkpoint(self.run.best_path, self.model, None, epoch + 1, self.step, {"eval_model": best})
            save_checkpoint(self.run.checkpoint_path, self.model, self.optimizer, epoch + 1, self.step, extra)
        self.kept_best = best if best is not None else self.kept_best
        if self.on_epoch is not None and self.shard.main:
            with kept_rng_state():  # what the callback draws leaves training's random streams alone
                self.on_epoch(row)

    def finish(self) -> TrainSummary:
        """Put the weights to evaluate into the model (the weight average, or the best robust epoch's) and
        return the summary (process 0 also writes it to the run)."""
        ddp.barrier()
        select = selection(self.opts, self.eps_schedule.eps_target, self.rows, self.run)
        if select["rule"] == "best_robust":  # an earlier start of a resumed run may have found it
            load_best_weights(self.model, self.kept_best, self.run)
        elif self.ema is not None:
            self.model.load_state_dict(self.ema.state_dict(self.model))
        has_val = self.validation is not None and len(self.validation.source) > 0
        summary = replace(summarize(self.rows, [self.stopped] if self.stopped is not None else [], self.opts,
                                    self.schedule, self.num_classes, self.speed, select, has_val=has_val),
                          tuning=self.tuning.describe(self.model))
        if self.run is not None and self.shard.main:
            self.run.write_summary(summary)
        return summary


def train_loop(loop: Loop, resume: bool = False) -> TrainSummary:
    """Fine-tune ``loop.model`` for ``loop.opts.epochs`` epochs (see :class:`Loop`); returns the training summary
    (with ``loop.run``, also its summary.json). The one training loop of robustft: :func:`fit_config` and
    :func:`robustft.train.api.fit` build its :class:`Loop`.

    Each optimiser step takes a batch of ``loop.data.epoch(epoch)``, sets the LR and ε as scheduled and minimises
    the objective; each epoch ends with the weight check, validation and the overfitting monitor, and (with a run
    directory) a checkpoint. ``resume`` continues from the run's last checkpoint. When training ends the model holds
    the weights to evaluate (the weight average, or the best robust epoch's under ``opts.select: best_robust``).
    Under ``torchrun`` the processes share each batch (each ``data`` yields its process's share) and only process 0
    writes to the run.
    """
    # --- start: processes, seed, speed levers, weight average
    loop.start()
    # --- resume: weights, optimiser, weight average, progress and random state from the last checkpoint
    if resume:
        loop.restore()
    opts, model, optimizer, ema, run = loop.opts, loop.model, loop.optimizer, loop.ema, loop.run
    steps_per_epoch = loop.data.steps_per_epoch
    for epoch in range(loop.epochs_done, opts.epochs):
        t0, stats = time.perf_counter(), EpochStats()
        model.train()
        loop.tuning.begin_epoch(model, epoch)  # a frozen backbone runs in eval mode
        bar = tqdm(loop.batches(epoch), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="batch",
                   disable=None if loop.shard.main else True, leave=False)
        for i, (x, y, *drawn) in enumerate(bar):
            # --- step: one optimiser step at the scheduled ε and LR, over this process's micro-batches
            eps = loop.tuning.eps(epoch, loop.eps_schedule.eps_target, loop.schedule.eps_at(epoch, i, steps_per_epoch))
            _set_lr(optimizer, loop.peaks, loop.lr_at(loop.step))
            optimizer.zero_grad(set_to_none=True)
            out = train_step(loop.ctx, model, x, y, eps, epoch, loop.step, stats,
                             (drawn[0], drawn[1]) if drawn else None)
            loop.tuning.drop_frozen_grads(model, epoch)  # while the head is probed, the rest stays as it is
            if loop.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            loop.step += 1
            bar.set_postfix(loss=f"{stats.loss / stats.n:.3f}", eps=f"{eps * 255:.2f}/255")
            if run is not None and loop.step % opts.log_every == 0 and loop.shard.main:
                run.log(StepRow(epoch=epoch, step=loop.step, eps=eps, lr=optimizer.param_groups[0]["lr"],
                                loss=out.loss.item(), parts=out.parts))
        if stats.n == 0:
            raise DataError(f"epoch {epoch + 1}: the training data yielded no batches; give data with at least "
                            "one batch")
        # --- end of epoch: weight check, validation and monitor, schedule observation, overfitting stop
        row = loop.end_epoch(epoch, stats, eps, t0)
        if row is None:
            break
        # --- checkpoint (process 0 writes), then the caller's callback
        loop.checkpoint(epoch, row)
    # --- finish: the weights to evaluate, the summary
    return loop.finish()


def _set_lr(optimizer: torch.optim.Optimizer, peaks: list[float], multiplier: float) -> None:
    """Set each group's LR to its peak × ``multiplier``."""
    for group, peak in zip(optimizer.param_groups, peaks):
        group["lr"] = peak * multiplier


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
    model = build_tuned_model(cfg.model, cfg.finetune, data.head_classes(cfg.model.num_classes)).to(device)
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
    loop = Loop(model, batches, build_objective(cfg), eps_schedule, optimizer,
                build_lr_schedule(cfg.optim, cfg.train.epochs, batches.steps_per_epoch), cfg.train, device,
                validation=Validation.from_config(cfg, data), grad_clip=cfg.optim.grad_clip,
                micro_batch=micro_batch_size(cfg.data, shard.world), num_classes=data.num_classes, carry=carry,
                tuning=Tuning.from_config(cfg.finetune), run=run, on_resume=on_resume, on_epoch=on_epoch)
    summary = train_loop(loop, resume)
    if shard.main and cfg.data.n_val > 0:
        final = summary.final.get("val_clean_acc")
        if final is not None and final < failure_threshold(data.num_classes):
            log.warning("transfer failure: validation clean accuracy %.1f %% is near chance (%d classes); "
                        "see `robustft diagnose %s`", 100 * final, data.num_classes, run.path)
    return summary
