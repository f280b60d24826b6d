"""Fine-tune any ``nn.Module`` on any DataLoader: the object API of the training loop.

::

    import robustft
    from robustft.attacks import APGD
    from robustft.objectives import AdversarialObjective

    summary = robustft.fit(model, train_loader, val=val_loader, epochs=10,
                           objective=AdversarialObjective(APGD(num_steps=7)),
                           schedule=robustft.eps_schedule("hinge", eps=8/255, epochs=10))

``model`` takes [0, 1] pixels (wrap one that expects normalised input in :class:`robustft.models.Normalized`).
The config path (``robustft.fine_tune``, the CLI) builds the same objects from a config and runs the same loop,
:func:`robustft.train.trainer.train_loop`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from robustft.config import OptimConfig, ScheduleConfig, TrainConfig
from robustft.data import as_source, as_train_data
from robustft.objectives import Objective
from robustft.runs import EpochRow, RunDir, remove_temp_files
from robustft.schedules import Schedule, build_eps_schedule, build_lr_schedule
from robustft.train.optim import build_optimizer
from robustft.train.trainer import train_loop
from robustft.train.validation import Validation

log = logging.getLogger(__name__)

LOOP_OPTIONS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {
    "epochs", "seed", "device", "out_dir", "run_name", "evaluate", "val_adv_n"}
"""The ``train`` section's settings that :func:`fit` takes as keyword arguments (``ema_decay``, ``monitor_n``,
``on_overfit``, ``select``, ``precision``, ``channels_last``, ``compile``, ...)."""


def eps_schedule(kind: str = "hinge", *, eps: float, epochs: int, seed: int = 0, **settings: Any) -> Schedule:
    """An ε schedule to ε_g = ``eps`` over ``epochs`` epochs: ``kind`` and ``settings`` as in a config's
    ``schedule`` section (README, "ε schedules"), e.g. ``eps_schedule("hinge", eps=8/255, epochs=10, t1=0.25,
    t2=0.75)`` for Epsilon-Scheduling or ``eps_schedule("fix", eps=8/255, epochs=10)`` for RFT-fix.

    Raises:
        TypeError: a setting that the schedule section does not have.
    """
    unknown = set(settings) - {f.name for f in dataclasses.fields(ScheduleConfig)} - {"kind"}
    if unknown:
        raise TypeError(f"eps_schedule: unknown setting(s) {sorted(unknown)}; the schedule section has "
                        f"{sorted(f.name for f in dataclasses.fields(ScheduleConfig))}")
    return build_eps_schedule(ScheduleConfig(kind=kind, **settings), float(eps), epochs, seed=seed)


def fit(model: nn.Module, train: Iterable, *, objective: Objective, schedule: Schedule, epochs: int,
        val: Any = None, optimizer: torch.optim.Optimizer | None = None,
        lr_schedule: Callable[[int], float] | None = None, grad_clip: float | None = None, seed: int = 0,
        run: str | Path | None = None, resume: bool = False, on_epoch: Callable[[EpochRow], None] | None = None,
        **options: Any) -> dict:
    """Fine-tune ``model`` in place with ``objective`` under the ε ``schedule``; returns the training summary.

    Args:
        model: any module taking images in [0, 1] (its own normalisation inside) and returning logits.
        train: a torch ``DataLoader`` (or any re-iterable of ``(images, labels)`` batches with a length),
            iterated once per epoch; or robustft's :class:`robustft.data.SourceBatches`.
        objective: e.g. ``AdversarialObjective(APGD(num_steps=7))``, ``TradesObjective(...)``,
            ``StandardObjective()``, or your own (``objective(model, x, y, eps) -> ObjectiveOutput``).
        schedule: the ε schedule (:func:`eps_schedule`); its ε_g is the target radius.
        epochs: training length.
        val: validation data, read once (a DataLoader, ``(images, labels)`` tensors or an image source): after
            every epoch, clean accuracy and the catastrophic-overfitting monitor on it (the monitor uses the
            objective's ``attack``); None: no validation (and no ``auto`` schedule).
        optimizer: None: AdamW with robustft's defaults (LR 1e-3, weight decay 0.05 except on norms and
            biases) under a 1-epoch warm-up then cosine decay. Your own optimiser keeps its LRs unless
            ``lr_schedule`` is given.
        lr_schedule: multiplier of each parameter group's LR as a function of the optimiser step.
        grad_clip: clip the gradient norm to this value.
        seed: seeds initialisation-free randomness: attacks, dropout, and a shuffling DataLoader's order.
        run: a run directory: metrics.jsonl, a checkpoint after every epoch and summary.json; with ``resume``
            a killed run continues from its last checkpoint and ends as an uninterrupted one would.
        on_epoch: called with each epoch's metrics row (:class:`robustft.runs.EpochRow`), after its checkpoint.
        **options: the ``train`` section's loop settings (:data:`LOOP_OPTIONS`), e.g. ``ema_decay=0.99``,
            ``monitor_n=128``, ``on_overfit="stop"``, ``select="best_robust"``, ``precision="bf16"``, ``device``
            is the model's.

    When it returns, ``model`` holds the weights to evaluate (the weight average with ``ema_decay``).

    Raises:
        TypeError: an unknown option, or data of an unusable kind.
        ValueError: a setting out of range, a run directory that exists without ``resume``, an ``auto``
            schedule without ``val``, or ``select="best_robust"`` without validation.
    """
    unknown = set(options) - LOOP_OPTIONS
    if unknown:
        raise TypeError(f"fit: unknown option(s) {sorted(unknown)}; choose from {sorted(LOOP_OPTIONS)}")
    opts = TrainConfig(epochs=epochs, seed=seed, evaluate=False, **options)
    _check(opts, schedule, val)
    device = next(model.parameters()).device
    data = as_train_data(train)
    validation = None
    if val is not None:
        source = as_source(val)
        size = source.read(torch.arange(1)).shape[-1]
        validation = Validation(source, size, seed=seed, attack=getattr(objective, "attack", None),
                                monitor_n=opts.monitor_n, monitor_steps=opts.monitor_steps)
    if optimizer is None:
        optimizer = build_optimizer(model, OptimConfig())
        lr_schedule = lr_schedule or build_lr_schedule(OptimConfig(), epochs, data.steps_per_epoch)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    run_dir = _prepare_run(run, resume) if run is not None else None
    resuming = resume and run_dir is not None and run_dir.checkpoint_path.exists()
    return train_loop(model, data, objective=objective, eps_schedule=schedule, optimizer=optimizer,
                      lr_at=lr_schedule or (lambda step: 1.0), opts=opts, device=device, validation=validation,
                      grad_clip=grad_clip, run=run_dir, resume=resuming, on_epoch=on_epoch)


def _check(opts: TrainConfig, schedule: Schedule, val: Any) -> None:
    """The settings :func:`fit` cannot train with, named with the remedy."""
    if opts.epochs < 1:
        raise ValueError(f"epochs: at least 1, got {opts.epochs}")
    if opts.ema_decay is not None and not 0 < opts.ema_decay < 1:
        raise ValueError(f"ema_decay: between 0 and 1 (e.g. 0.99), got {opts.ema_decay}")
    if opts.on_overfit not in ("warn", "stop") or opts.select not in ("final", "best_robust"):
        raise ValueError(f"on_overfit: warn or stop (got {opts.on_overfit!r}); select: final or best_robust "
                         f"(got {opts.select!r})")
    if val is None and schedule.describe()["kind"] == "auto":
        raise ValueError("schedule: an auto schedule watches validation accuracy; pass val=...")
    if val is None and opts.select == "best_robust":
        raise ValueError("select: best_robust picks the epoch by the monitor on validation data; pass val=...")


def _prepare_run(path: str | Path, resume: bool) -> RunDir:
    """The run directory of an object-API run: created fresh, or kept for a resume.

    Raises:
        ValueError: it holds a checkpoint and ``resume`` is false.
    """
    run = RunDir(Path(path).expanduser())
    if run.checkpoint_path.exists() and not resume:
        raise ValueError(f"{run.path} already holds a checkpoint; continue it with resume=True, or choose "
                         "another run directory")
    if not (resume and run.checkpoint_path.exists()):
        run.create(None)
    remove_temp_files(run.path / "checkpoints")
    return run
