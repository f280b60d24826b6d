"""The training loop: robust fine-tuning with an ε schedule, per-epoch validation and checkpoints."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft.attacks import build_attack
from robustft.config import Config
from robustft.data import DataSplits, build_data, eval_batches, num_train_batches, train_batches
from robustft.eval.diagnostics import failure_threshold
from robustft.eval.metrics import accuracy, delay_time
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir, write_json
from robustft.schedules import Schedule, build_eps_schedule, build_lr_schedule
from robustft.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from robustft.train.optim import build_optimizer, set_lr

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EpochStats:
    """Running sums of one epoch's training batches."""

    loss: float = 0.0
    correct: int = 0
    n: int = 0
    eps: float = 0.0

    def add(self, loss: float, logits: torch.Tensor, y: torch.Tensor, eps: float) -> None:
        self.loss += loss * len(y)
        self.eps += eps * len(y)
        self.correct += (logits.argmax(1) == y).sum().item()
        self.n += len(y)


def validate(model: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """Clean accuracy and loss on the validation split; adversarial ones at ε_g on its first ``val_adv_n``
    examples, with the training attack and a fixed seed (comparable across epochs)."""
    size, bs = cfg.data.image_size, cfg.data.eval_batch_size
    model.eval()
    out = dict(zip(("val_clean_acc", "val_clean_loss"), accuracy(model, eval_batches(data.val, size, bs), device)))
    n_adv = min(cfg.train.val_adv_n, len(data.val))
    if n_adv > 0 and cfg.attack.eps > 0:
        subset = data.val.subset(torch.arange(n_adv))
        with torch.random.fork_rng():
            torch.manual_seed(cfg.train.seed)
            acc, loss = accuracy(model, eval_batches(subset, size, bs), device, build_attack(cfg.attack), cfg.attack.eps)
        out.update(val_adv_acc=acc, val_adv_loss=loss)
    return out


def _check_finite(loss: torch.Tensor, epoch: int, step: int, run: RunDir) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"the training loss became {loss.item()} at epoch {epoch} (step {step}); the last good checkpoint "
            f"({run.checkpoint_path}) is kept. Lower optim.lr, set optim.grad_clip, then resume with --resume."
        )


def fit(cfg: Config, run: RunDir, resume: bool = False, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune the configured model into ``run``; returns the training summary (also in summary.json).

    With ``resume`` the run continues from its last checkpoint: weights, optimiser, LR and ε schedule
    positions and random state are restored, so it ends as an uninterrupted run would. ``on_epoch`` is
    called with each epoch's row after its checkpoint is written (a hyper-parameter search reports it).
    """
    # --- setup: data, model, objective, optimiser and the two schedules
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    data = build_data(cfg.data)
    model = build_model(cfg.model, cfg.model.num_classes or data.num_classes).to(device)
    objective, optimizer = build_objective(cfg), build_optimizer(model, cfg.optim)
    epochs, steps_per_epoch = cfg.train.epochs, num_train_batches(len(data.train), cfg.data.batch_size)
    lr_at = build_lr_schedule(cfg.optim, epochs, steps_per_epoch)
    eps_target = 0.0 if cfg.objective.name == "standard" else cfg.attack.eps  # the ε the objective trains at
    eps_schedule = build_eps_schedule(cfg.schedule, eps_target, epochs, seed=cfg.train.seed)
    start_epoch, step, elapsed = 0, 0, 0.0
    # --- resume: weights, optimiser, progress and random state from the last checkpoint
    if resume:
        ckpt = load_checkpoint(run.checkpoint_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, elapsed = ckpt["epochs_done"], ckpt["step"], ckpt.get("elapsed", 0.0)
        set_rng_state(ckpt["rng"])
        eps_schedule = eps_schedule.with_state(ckpt.get("schedule", {}))
        run.truncate_metrics(start_epoch)
        log.info("resuming %s at epoch %d/%d (step %d)", run.path, start_epoch, epochs, step)
    for epoch in range(start_epoch, epochs):
        t0, stats = time.perf_counter(), EpochStats()
        eps = eps_schedule.eps_at(epoch)
        model.train()
        bar = tqdm(train_batches(data.train, cfg.data.image_size, cfg.data.batch_size, cfg.train.seed, epoch,
                                 cfg.data.flip, cfg.data.pad_crop),
                   total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=None, leave=False)
        for i, (x, y) in enumerate(bar):
            # --- one optimiser step at the scheduled ε and LR
            x, y = x.to(device), y.to(device)
            eps = eps_schedule.eps_at(epoch, i, steps_per_epoch)
            set_lr(optimizer, lr_at(step))
            out = objective(model, x, y, eps)
            _check_finite(out.loss.detach(), epoch, step, run)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            step += 1
            stats.add(out.loss.item(), out.logits.detach(), y, eps)
            bar.set_postfix(loss=f"{stats.loss / stats.n:.3f}", eps=f"{eps * 255:.2f}/255")
            if step % cfg.train.log_every == 0:
                run.log({"kind": "step", "epoch": epoch, "step": step, "eps": eps, "lr": optimizer.param_groups[0]["lr"],
                         "loss": out.loss.item(), **out.parts})
        # --- end of epoch: validate, log, checkpoint
        row = {"kind": "epoch", "epoch": epoch, "step": step, "eps": eps, "eps_mean": stats.eps / stats.n,
               "lr": optimizer.param_groups[0]["lr"], "train_loss": stats.loss / stats.n,
               "train_acc": stats.correct / stats.n, **validate(model, data, cfg, device)}
        eps_schedule = _observe(eps_schedule, epoch, row)
        elapsed += time.perf_counter() - t0
        row["elapsed_s"] = elapsed
        run.log(row)
        log.info("epoch %d/%d  ε=%.2f/255  %s", epoch + 1, epochs, eps * 255,
                 "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("train_", "val_"))))
        save_checkpoint(run.checkpoint_path, model, optimizer, epoch + 1, step,
                        {"elapsed": elapsed, "schedule": eps_schedule.state()})
        if on_epoch is not None:
            on_epoch(row)
    return write_summary(run, cfg, eps_schedule, data.num_classes)


def _observe(schedule: Schedule, epoch: int, row: dict) -> Schedule:
    """Show the schedule the epoch's validation accuracy; log (and record in ``row``) an auto switch."""
    after = schedule.observe(epoch, row["val_clean_acc"])
    if after.state().get("switch") is not None and schedule.state().get("switch") is None:
        row["schedule_switch"] = after.state()["switch"]
        log.info("auto schedule: validation clean accuracy stopped improving after epoch %d; ε ramps up "
                 "from epoch %d", epoch + 1, epoch + 2)
    return after


def write_summary(run: RunDir, cfg: Config, schedule: Schedule, num_classes: int) -> dict:
    """Summarise the epoch rows of a run into summary.json: wall time, delay time, final validation
    numbers, the resolved ε schedule (where auto switched) and the number of classes (chance level)."""
    rows = run.rows("epoch")
    summary = {"epochs": len(rows), "train_time_s": rows[-1]["elapsed_s"] if rows else 0.0,
               "num_classes": num_classes, "schedule": schedule.describe(),
               "delay_threshold": cfg.train.delay_threshold,
               "delay_epochs": delay_time([r["val_clean_acc"] for r in rows], cfg.train.delay_threshold),
               "final": {k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith(("val_", "train_"))}}
    if summary["schedule"]["kind"] == "auto" and rows and not any(r.get("eps_mean", r["eps"]) for r in rows):
        log.warning("auto schedule: validation clean accuracy did not plateau before the last epoch, so ε stayed 0 "
                    "for the whole run; lower schedule.patience, raise schedule.tolerance or train longer")
    final = summary["final"].get("val_clean_acc")
    if cfg.data.n_val > 0 and final is not None and final < failure_threshold(num_classes):
        log.warning("transfer failure: validation clean accuracy %.1f %% is near chance (%d classes); "
                    "see `robustft diagnose %s`", 100 * final, num_classes, run.path)
    write_json(run.path / "summary.json", summary)
    return summary
