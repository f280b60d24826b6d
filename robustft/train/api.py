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

from robustft.attacks import APGD, FGSM, NFGSM, PGD
from robustft.attacks.base import FoldedBatchNorm, FullPrecision
from robustft.config import (
    HEAD_STARTS,
    OBJECTIVES,
    SCHEDULES,
    TUNE_MODES,
    FinetuneConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    to_epochs,
)
from robustft.config.eps import eps_argument
from robustft.config.validate import schedule_problems
from robustft.data import as_source, as_train_data
from robustft.errors import ConfigError, RunExistsError
from robustft.objectives import Objective
from robustft.runs import UNKNOWN, EpochRow, RunDir, TrainSummary, remove_temp_files
from robustft.schedules import Schedule, build_eps_schedule, build_lr_schedule
from robustft.train.checkpoint import kept_rng_state
from robustft.train.optim import build_optimizer
from robustft.train.speed import kept_layout_and_modes
from robustft.train.trainer import Loop, train_loop
from robustft.train.tune import PAPER, Tuning
from robustft.train.validation import Validation

log = logging.getLogger(__name__)

LOOP_OPTIONS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {
    "epochs", "seed", "device", "out_dir", "run_name", "evaluate", "val_adv_n"}
"""The ``train`` section's settings that :func:`fit` takes as keyword arguments of the same names and defaults
(``ema_decay``, ``monitor_n``, ``on_overfit``, ``select``, ``precision``, ``channels_last``, ``compile``, ...)."""


def tuning(mode: str = PAPER.mode, *, head: str = PAPER.head, probe_epochs: int | None = None, head_module: str = "head",
           **settings: Any) -> Tuning:
    """What :func:`fit` trains and how the head starts, as a config's ``finetune`` section says it: ``mode``
    (``full``, ``linear``, ``bitfit``, ``lora`` with ``rank``, ``alpha``, ``targets``), ``head`` (``random``,
    ``linear_probe``, ``robust_linear_probe``) and its ``probe_epochs``; e.g. ``tuning("lora", rank=8)`` or
    ``tuning(head="robust_linear_probe", probe_epochs=5)``. ``head_module`` names the model's classifier layer (its
    child module; every other child is the backbone).

    Raises:
        TypeError: a setting that the finetune section does not have.
        ConfigError: an invalid value, named with its fix.
    """
    keys = {f.name for f in dataclasses.fields(FinetuneConfig)} - {"mode", "head", "probe_epochs"}
    if set(settings) - keys:
        raise TypeError(f"tuning: unknown setting(s) {sorted(set(settings) - keys)}; it takes {sorted(keys)}")
    cfg = FinetuneConfig(mode=mode, head=head, probe_epochs=probe_epochs, **settings)
    problems = TUNE_MODES.problems(cfg, None) + HEAD_STARTS.problems(cfg, None)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(Tuning.from_config(cfg), head_module=head_module)


def eps_schedule(kind: str = "hinge", *, eps: float | str, epochs: int, seed: int = 0, **settings: Any) -> Schedule:
    """An ε schedule to ε_g = ``eps`` over ``epochs`` epochs: ``kind`` and ``settings`` as in a config's
    ``schedule`` section (docs/schedules.md), e.g. ``eps_schedule("hinge", eps=8/255, epochs=10, t1=0.25,
    t2=0.75)`` for Epsilon-Scheduling or ``eps_schedule("fix", eps=8/255, epochs=10)`` for RFT-fix.

    Checked by the config's rules: ``eps`` in [0, 1] (pixel units; ``"8/255"`` is read too), hinges (``t1``,
    ``t2``, ``latest_t1``) as whole epochs (an int in [0, ``epochs``]) or fractions of training (a float in [0, 1],
    taken of ``epochs``: 0.25 of 10 epochs is epoch 2.5), and each kind's own keys. The schedule is built for
    ``epochs`` (``describe()["epochs"]``); :func:`fit` refuses to train it for another number of epochs.

    Raises:
        TypeError: a setting that the schedule section does not have.
        ConfigError: an invalid value (a :class:`robustft.errors.UserError`), named with its fix.
    """
    unknown = set(settings) - {f.name for f in dataclasses.fields(ScheduleConfig)} - {"kind"}
    if unknown:
        raise TypeError(f"eps_schedule: unknown setting(s) {sorted(unknown)}; the schedule section has "
                        f"{sorted(f.name for f in dataclasses.fields(ScheduleConfig))}")
    eps_target = eps_argument(eps, "eps")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs: the training length, a whole number of epochs >= 1, got {epochs!r}")
    cfg = ScheduleConfig(kind=kind, **settings)
    problems = schedule_problems(cfg, epochs, epochs_key="epochs")
    if problems:
        raise ConfigError(problems)
    return build_eps_schedule(cfg, eps_target, epochs, seed=seed)


def fit(model: nn.Module, train: Iterable, *, objective: Objective, schedule: Schedule, epochs: int,
        val: Any = None, optimizer: torch.optim.Optimizer | None = None,
        lr_schedule: Callable[[int], float] | None = None, grad_clip: float | None = None, seed: int = 0,
        run: str | Path | None = None, resume: bool = False, on_epoch: Callable[[EpochRow], None] | None = None,
        ema_decay: float | None = None, select: str = "final", on_overfit: str = "warn", monitor_n: int = 128,
        monitor_steps: int = 10, overfit_gap: float = 0.10, delay_threshold: float = 0.05, log_every: int = 50,
        precision: str = "fp32", attack_fp32: bool = True, channels_last: bool | str = "auto",
        compile: bool = False, tuning: Tuning | None = None) -> TrainSummary:
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
        lr_schedule: multiplier of each parameter group's LR (as it is when ``fit`` starts) as a function of
            the optimiser step; ``fit`` sets each group's ``lr`` every step and writes nothing else into them.
        grad_clip: clip the gradient norm to this value.
        seed: seeds the randomness of training: attacks, dropout, and a shuffling DataLoader's order (drawn from
            torch's global generator, which ``fit`` seeds while it runs and then puts back).
        run: a run directory (created): config.yaml (what ``fit`` knows of the run, ``unknown`` for the model's and
            the data's names), metrics.jsonl, a checkpoint after every epoch, summary.json and DONE at the end: the
            CLI's ``table``, ``diagnose`` and ``report`` read it, and :func:`robustft.evaluate_run` with
            ``model=`` and ``data=`` evaluates it. With ``resume`` a killed run continues from its last
            checkpoint and ends as an uninterrupted one would.
        on_epoch: called with each epoch's metrics row (:class:`robustft.runs.EpochRow`), after its checkpoint.
        tuning: what trains and how the head starts (:func:`robustft.tuning`, e.g. ``tuning("lora", rank=8,
            head="linear_probe")``): applied to ``model`` in place before the optimiser is built (adapters added,
            the rest frozen; a model you froze or gave adapters yourself trains as it is with the default None).
            Pass the same tuning again with ``resume``.

    The other keyword arguments (``ema_decay``, ``select``, ``on_overfit``, ``monitor_n``, ``monitor_steps``,
    ``overfit_gap``, ``delay_threshold``, ``log_every``, ``precision``, ``attack_fp32``, ``channels_last``,
    ``compile``) are the ``train`` section's settings of the same names (docs/configuration.md), with the same
    defaults; the device is the model's.

    When it returns, ``model`` holds the weights to evaluate (the weight average with ``ema_decay``), in the
    memory layout and train/eval modes it came in with (training lays it out channels-last with
    ``channels_last``, and switches modes). The generators of ``random``, numpy and torch are as they were: two
    calls with the same ``seed`` train the same weights, whatever the caller drew before. Progress: a bar per
    epoch on a terminal, and one log line per epoch (``logging.getLogger("robustft")`` at INFO level).

    Raises:
        TypeError: data of an unusable kind.
        ConfigError: a setting out of range, an ``auto`` schedule without ``val``, or ``select="best_robust"``
            without validation.
        RunExistsError: ``run`` holds a checkpoint and ``resume`` is false.
    """
    opts = TrainConfig(epochs=epochs, seed=seed, evaluate=False, ema_decay=ema_decay, select=select,
                       on_overfit=on_overfit, monitor_n=monitor_n, monitor_steps=monitor_steps, overfit_gap=overfit_gap,
                       delay_threshold=delay_threshold, log_every=log_every, precision=precision,
                       attack_fp32=attack_fp32, channels_last=channels_last, compile=compile)
    _check(opts, schedule, val)
    tuning = tuning or Tuning()
    if tuning.probe_epochs >= epochs:
        raise ConfigError(f"tuning: {tuning.probe_epochs} probing epochs in a run of {epochs}; leave at least one "
                          "to fine-tune")
    device = next(model.parameters()).device
    data = as_train_data(train)
    run_dir = _prepare_run(run, resume) if run is not None else None
    resuming = resume and run_dir is not None and run_dir.checkpoint_path.exists()
    tuning.apply(model)
    _check_optimizer(optimizer, model)
    with kept_rng_state(), kept_layout_and_modes(model):
        validation, num_classes = None, None
        if val is not None:
            source = as_source(val)
            size = source.read(torch.arange(1)).shape[-1]
            validation = Validation(source, size, seed=seed, attack=getattr(objective, "attack", None),
                                    monitor_n=opts.monitor_n, monitor_steps=opts.monitor_steps)
            num_classes = int(source.labels.max()) + 1 if len(source) else None
        if optimizer is None:
            optimizer = build_optimizer(model, OptimConfig())
            lr_schedule = lr_schedule or build_lr_schedule(OptimConfig(), epochs, data.steps_per_epoch)
            optim: dict[str, Any] = {**dataclasses.asdict(OptimConfig()), "grad_clip": grad_clip}
        else:
            optim = {"grad_clip": grad_clip}
        if run_dir is not None and (not resuming or not run_dir.config_path.exists()):
            run_dir.write_own_config(own_run_config(run_dir, opts, objective, schedule, optim, device,
                                                    len(validation.source) if validation is not None else 0, tuning),
                                     OWN_RUN_NOTE)
        loop = Loop(model, data, objective, schedule, optimizer, lr_schedule or (lambda step: 1.0), opts, device,
                    validation=validation, grad_clip=grad_clip, num_classes=num_classes, tuning=tuning, run=run_dir,
                    on_epoch=on_epoch)
        summary = train_loop(loop, resuming)
    if run_dir is not None:
        run_dir.mark_done()
    return summary


def _check(opts: TrainConfig, schedule: Schedule, val: Any) -> None:
    """The settings :func:`fit` cannot train with, named with the remedy.

    Raises:
        ConfigError: the first such setting (the type the config path raises for the same problem).
    """
    if opts.epochs < 1:
        raise ConfigError(f"epochs: at least 1, got {opts.epochs}")
    eps_argument(schedule.eps_target, "schedule.eps_target")
    if schedule.epochs is not None and schedule.epochs != opts.epochs:
        raise ConfigError(f"epochs: fit trains {opts.epochs} epochs, but the schedule was built for "
                          f"{schedule.epochs}; build it with eps_schedule(..., epochs={opts.epochs}) or pass "
                          f"epochs={schedule.epochs} to fit")
    if opts.ema_decay is not None and not 0 < opts.ema_decay < 1:
        raise ConfigError(f"ema_decay: between 0 and 1 (e.g. 0.99), got {opts.ema_decay}")
    if opts.on_overfit not in ("warn", "stop") or opts.select not in ("final", "best_robust"):
        raise ConfigError(f"on_overfit: warn or stop (got {opts.on_overfit!r}); select: final or best_robust "
                          f"(got {opts.select!r})")
    kind = schedule.describe()["kind"]
    if val is None and kind in SCHEDULES and SCHEDULES[kind].adaptive:
        raise ConfigError(f"schedule: a {kind} schedule watches validation accuracy; pass val=...")
    if val is None and opts.select == "best_robust":
        raise ConfigError("select: best_robust picks the epoch by the monitor on validation data; pass val=...")


def _check_optimizer(optimizer: torch.optim.Optimizer | None, model: nn.Module) -> None:
    """A given optimiser must hold every parameter that trains (adapters a tuning added after it was built would
    never move).

    Raises:
        ConfigError: a trained parameter the optimiser does not hold, named.
    """
    if optimizer is None:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if missing:
        raise ConfigError(f"optimizer: it does not hold {len(missing)} trained parameter(s) of the model (e.g. "
                          f"{', '.join(missing[:3])}): build it after robustft.tuning(...).apply(model), or let fit "
                          "build it (optimizer=None)")


def _prepare_run(path: str | Path, resume: bool) -> RunDir:
    """The run directory of an object-API run: created fresh, or kept for a resume.

    Raises:
        RunExistsError: it holds a checkpoint and ``resume`` is false.
    """
    run = RunDir(Path(path).expanduser())
    if run.checkpoint_path.exists() and not resume:
        raise RunExistsError(f"run={str(run.path)!r} already holds a checkpoint; continue it with resume=True, or "
                             "choose another run directory")
    if not (resume and run.checkpoint_path.exists()):
        run.create(None)
    remove_temp_files(run.path / "checkpoints")
    return run


OWN_RUN_NOTE = """Written by robustft.fit: the model and the data were Python objects, so model.name and data.name
are unknown (and the objective, attack or schedule kind where they were not robustft's). Only the keys
written here are known; readers take robustft's defaults for the others. summary.json holds the resolved
ε schedule. Evaluate the run in Python: robustft.evaluate_run(RUN, model=..., data=...)."""
"""The comment at the top of the config.yaml of a run of :func:`fit`."""


def own_run_config(run: RunDir, opts: TrainConfig, objective: Objective, schedule: Schedule, optim: dict[str, Any],
                   device: torch.device, n_val: int, tuning: Tuning | None = None) -> dict[str, dict[str, Any]]:
    """The config sections of a run of :func:`fit`, as far as its objects tell (:data:`robustft.runs.UNKNOWN`
    where they do not): the train section, the objective, its attack, the schedule and ``optim`` (all of it
    when robustft built the optimiser)."""
    train = dataclasses.asdict(opts) | {"device": str(device), "out_dir": str(run.path.parent),
                                        "run_name": run.path.name}
    tuning = tuning or Tuning()
    finetune = {"mode": tuning.mode, "head": tuning.head, **dict(tuning.options),
                **({"probe_epochs": tuning.probe_epochs} if tuning.probes else {})}
    return {"data": {"name": UNKNOWN, "n_val": n_val}, "model": {"name": UNKNOWN}, "finetune": finetune,
            "attack": _attack_section(getattr(objective, "attack", None), schedule.eps_target),
            "objective": _objective_section(objective), "schedule": _schedule_section(schedule, opts.epochs),
            "optim": optim, "train": train}


def _objective_section(objective: Objective) -> dict[str, Any]:
    """``objective.name`` (and what else its ``OBJECTIVES`` entry records, e.g. TRADES' beta) of one of robustft's
    objectives, else unknown."""
    entry = next((e for e in OBJECTIVES.entries() if type(objective) is e.extra.get("type")), None) or \
        next((e for e in OBJECTIVES.entries() if isinstance(objective, e.extra.get("type") or ())), None)
    if entry is None:
        return {"name": UNKNOWN}
    return {"name": entry.name, **entry.extra.get("record", lambda o: {})(objective)}


def _attack_section(attack: Any, eps: float) -> dict[str, Any]:
    """ε_g, and the norm, name and steps of one of robustft's training attacks (unknown for others)."""
    while isinstance(attack, (FoldedBatchNorm, FullPrecision)):
        attack = attack.attack
    names = {APGD: "apgd", PGD: "pgd", FGSM: "fgsm", NFGSM: "nfgsm"}
    out: dict[str, Any] = {"eps": float(eps), "name": names.get(type(attack), UNKNOWN)}
    threat = getattr(attack, "threat", None)
    if getattr(threat, "name", None) in ("linf", "l2"):
        out["norm"] = threat.name  # type: ignore[union-attr]
    if out["name"] in ("apgd", "pgd") and isinstance(getattr(attack, "num_steps", None), int):
        out["num_steps"] = attack.num_steps
    return out


def _schedule_section(schedule: Schedule, epochs: int) -> dict[str, Any]:
    """The schedule's kind, with its hinges (whole epochs as an int, else as the fraction of training that
    resolves to them), points and granularity where the kind takes them; unknown for a schedule that is not
    robustft's."""
    described = schedule.describe()
    kind = str(described.get("kind"))
    if kind not in SCHEDULES or SCHEDULES[kind].adaptive:  # its resolved state is in summary.json
        return {"kind": kind if kind in SCHEDULES else UNKNOWN}
    keys = SCHEDULES[kind].keys
    out: dict[str, Any] = {"kind": kind}
    whole = to_epochs(1.0, epochs)  # the epochs a fraction of 1 stands for
    for key in ("t1", "t2"):
        value = described.get(key)
        if key in keys and isinstance(value, (int, float)):
            out[key] = int(value) if float(value).is_integer() or not whole else value / whole
    if "points" in keys and described.get("points"):
        out["points"] = described["points"]
    if "granularity" in keys:
        out["granularity"] = "step" if described.get("per_step") else "epoch"
    return out
