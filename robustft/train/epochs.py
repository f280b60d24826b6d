"""What the training loop decides from its epoch rows: whether catastrophic overfitting stops it, which epoch's
weights are the best so far, what the ε schedule learns from validation, which weights are evaluated, and the
training summary.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import nn

from robustft import distributed as ddp
from robustft.config import SCHEDULES, TrainConfig
from robustft.errors import CatastrophicOverfittingError
from robustft.eval.metrics import delay_time
from robustft.runs import EpochRow, RunDir, TrainSummary
from robustft.schedules import Schedule
from robustft.train.checkpoint import load_model_weights
from robustft.train.ema import EMA
from robustft.train.monitor import best_robust_epoch, collapsed, overfit_verdict
from robustft.train.speed import Accelerator

log = logging.getLogger(__name__)


def load_best_weights(model: nn.Module, kept: dict[str, torch.Tensor] | None, run: RunDir | None) -> None:
    """Put the best epoch's evaluated weights into ``model``: those kept in memory by this start, else those of
    an earlier start of a resumed run (``checkpoints/best.pt``)."""
    if kept is not None:
        model.load_state_dict(kept)
    elif run is not None:
        load_model_weights(run.best_path, model)
    else:
        raise ValueError("train.select=best_robust: the best epoch's weights are neither in memory nor in a run "
                         "directory")



def overfit_stop(opts: TrainConfig, row: EpochRow, epoch: int, history: list[EpochRow], run: RunDir | None) -> bool:
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


def best_weights(opts: TrainConfig, model: nn.Module, ema: EMA | None, eps_target: float,
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


def observe(schedule: Schedule, epoch: int, row: EpochRow) -> tuple[Schedule, EpochRow]:
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
    if described["kind"] in SCHEDULES and SCHEDULES[described["kind"]].adaptive and rows \
            and not any(r.eps_mean for r in rows):
        log.warning("%s schedule: validation clean accuracy did not plateau before the last epoch, so ε stayed 0 "
                    "for the whole run; lower schedule.patience, raise schedule.tolerance or train longer", described["kind"])
    return summary


def selection(opts: TrainConfig, eps_target: float, rows: list[EpochRow], run: RunDir | None) -> dict:
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
