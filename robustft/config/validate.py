"""Validation of a config: every bad value or combination is collected and raised once."""

from __future__ import annotations

import re
from typing import Any

from robustft.config.eps import format_eps
from robustft.config.registry import (
    DATASETS,
    EVAL_ATTACKS,
    HEAD_STARTS,
    OBJECTIVES,
    SCHEDULES,
    TRAIN_ATTACKS,
    TUNE_MODES,
    is_clean_objective,
)
from robustft.config.sections import (
    EVAL_MODES,
    EVAL_PRESETS,
    Config,
    ConfigError,
    ScheduleConfig,
    TrainConfig,
    expand_attacks,
)


class _Problems(list):
    """The problems found so far; :meth:`need` adds one where a condition fails."""

    def need(self, ok: bool, msg: str) -> None:
        if not ok:
            self.append(msg)


def validate(cfg: Config) -> None:
    """Check values and their combinations; raises :class:`ConfigError` naming every bad key."""
    p = _Problems()
    for check in (_data, _model, _finetune, _attack, _objective, _schedule, _optim, _train, _eval):
        check(cfg, p)
    if p:
        raise ConfigError(list(p))


def _data(cfg: Config, p: _Problems) -> None:
    """The problems of the ``data`` section."""
    d = cfg.data
    p.extend(DATASETS.problems(d, cfg))
    p.need(d.image_size >= 8, f"data.image_size: must be >= 8 pixels, got {d.image_size}")
    for key in ("n_train", "n_test"):
        v = getattr(d, key)
        p.need(v is None or v > 0, f"data.{key}: must be positive or null, got {v}")
    p.need(d.n_val >= 0, f"data.n_val: must be >= 0, got {d.n_val}")
    p.need(d.batch_size > 0, f"data.batch_size: must be positive, got {d.batch_size}")
    p.need(d.eval_batch_size > 0, f"data.eval_batch_size: must be positive, got {d.eval_batch_size}")
    p.need(d.pad_crop >= 0, f"data.pad_crop: must be >= 0 pixels, got {d.pad_crop}")
    p.need(0 <= d.color_jitter < 1, f"data.color_jitter: must be in [0, 1), got {d.color_jitter}")
    p.need(0 <= d.rotation <= 180, f"data.rotation: must be in [0, 180] degrees, got {d.rotation}")
    p.need(d.num_workers >= 0, f"data.num_workers: must be >= 0, got {d.num_workers}")
    p.need(d.micro_batch_size is None or 0 < d.micro_batch_size <= d.batch_size,
           f"data.micro_batch_size: must be in [1, data.batch_size={d.batch_size}] or null, got {d.micro_batch_size}")
    p.need(d.micro_batch_size is None or d.batch_size % d.micro_batch_size == 0,
           f"data.micro_batch_size: {d.micro_batch_size} must divide data.batch_size={d.batch_size}")


def _model(cfg: Config, p: _Problems) -> None:
    """The problems of the ``model`` section."""
    m = cfg.model
    p.need(m.num_classes is None or m.num_classes >= 2, f"model.num_classes: must be >= 2 or null, got {m.num_classes}")
    p.need(m.activation in (None, "silu", "gelu", "softplus"),
           f"model.activation: {m.activation!r} is not silu, gelu, softplus or null (keep the backbone's)")
    p.need(0 <= m.drop_rate < 1, f"model.drop_rate: must be in [0, 1), got {m.drop_rate}")
    p.need(m.bn_momentum is None or 0 < m.bn_momentum <= 1, f"model.bn_momentum: must be in (0, 1] or null, got {m.bn_momentum}")


def _finetune(cfg: Config, p: _Problems) -> None:
    """The problems of the ``finetune`` section: its mode's and its head start's keys and checks."""
    f = cfg.finetune
    p.extend(TUNE_MODES.problems(f, cfg))
    p.extend(HEAD_STARTS.problems(f, cfg))


def _attack(cfg: Config, p: _Problems) -> None:
    """The problems of the ``attack`` section and how it combines with the others."""
    a, d = cfg.attack, cfg.data
    p.need(a.norm in ("linf", "l2"), f"attack.norm: unknown norm {a.norm!r}; choose linf or l2")
    p.extend(TRAIN_ATTACKS.problems(a, cfg))
    p.need(a.num_steps >= 1, f"attack.num_steps: must be >= 1, got {a.num_steps}")
    p.need(a.restarts >= 1, f"attack.restarts: must be >= 1, got {a.restarts}")
    p.need(a.rel_step_size is None or a.rel_step_size > 0,
           f"attack.rel_step_size: must be positive or null (the attack's default), got {a.rel_step_size}")
    p.need(a.noise_mult >= 0, f"attack.noise_mult: must be >= 0 (a multiple of ε), got {a.noise_mult}")
    if a.carry:
        p.need(a.name in ("apgd", "pgd"), f"attack.carry: carried perturbations start apgd or pgd, not {a.name}")
        takes = [e.name for e in OBJECTIVES.entries() if e.extra.get("carry")]
        p.need(cfg.objective.name in takes, f"attack.carry: carried perturbations are for objective.name="
               f"{' or '.join(takes)}, not {cfg.objective.name}")
        p.need(d.color_jitter == 0 and d.rotation == 0, "attack.carry: carried perturbations follow flips and crops "
               "only; set data.color_jitter=0 and data.rotation=0")


def _objective(cfg: Config, p: _Problems) -> None:
    """The problems of the ``objective`` section."""
    p.extend(OBJECTIVES.problems(cfg.objective, cfg))
    p.need(cfg.objective.beta >= 0, f"objective.beta: must be >= 0, got {cfg.objective.beta}")
    p.need(cfg.objective.trades_inner in ("kl", "ce"),
           f"objective.trades_inner: {cfg.objective.trades_inner!r} is not kl or ce")


def _schedule(cfg: Config, p: _Problems) -> None:
    """The problems of the ``schedule`` section."""
    p.extend(schedule_problems(cfg.schedule, cfg.train.epochs, cfg))


def _optim(cfg: Config, p: _Problems) -> None:
    """The problems of the ``optim`` section and how it combines with the others."""
    o, t = cfg.optim, cfg.train
    for key in ("lr", "weight_decay", "head_lr", "head_weight_decay"):
        v = getattr(o, key)
        p.need(v is None or v >= 0, f"optim.{key}: must be >= 0, got {v}")
    p.need(o.lr > 0, f"optim.lr: must be positive, got {o.lr}")
    p.need(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, f"optim.beta1/beta2: must be in [0, 1), got {o.beta1}, {o.beta2}")
    p.need(0 <= o.warmup_epochs <= t.epochs, f"optim.warmup_epochs: must be in [0, train.epochs], got {o.warmup_epochs}")
    p.need(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
    p.need(o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip: must be positive or null, got {o.grad_clip}")


def _train(cfg: Config, p: _Problems) -> None:
    """The problems of the ``train`` section and how it combines with the others."""
    t = cfg.train
    p.need(t.epochs >= 1, f"train.epochs: must be >= 1, got {t.epochs}")
    p.need(t.val_adv_n >= 0, f"train.val_adv_n: must be >= 0, got {t.val_adv_n}")
    p.need(t.monitor_n >= 0, f"train.monitor_n: must be >= 0 (0 turns the monitor off), got {t.monitor_n}")
    p.need(t.monitor_steps >= 10, f"train.monitor_steps: the reference attack needs at least 10 steps, got {t.monitor_steps}")
    p.need(0 < t.overfit_gap < 1, f"train.overfit_gap: must be in (0, 1) (0.10 = 10 points), got {t.overfit_gap}")
    p.need(t.on_overfit in ("warn", "stop"), f"train.on_overfit: {t.on_overfit!r} is not warn or stop")
    p.need(t.ema_decay is None or 0 < t.ema_decay < 1, f"train.ema_decay: must be in (0, 1) or null, got {t.ema_decay}")
    p.need(t.select in ("final", "best_robust"), f"train.select: {t.select!r} is not final or best_robust")
    p.need(t.select != "best_robust" or (t.monitor_n > 0 and not is_clean_objective(cfg.objective.name)),
           "train.select: best_robust picks by the monitor's APGD-CE accuracy at ε_g; it needs train.monitor_n > 0 "
           "and a robust objective")
    p.need(0 <= t.delay_threshold < 1, f"train.delay_threshold: must be in [0, 1), got {t.delay_threshold}")
    p.need(t.precision in ("fp32", "bf16", "auto"), f"train.precision: {t.precision!r} is not fp32, bf16 or auto")
    p.need(t.channels_last in (True, False, "auto"), f"train.channels_last: {t.channels_last!r} is not true, false or auto")
    p.need(t.log_every >= 1, f"train.log_every: must be >= 1, got {t.log_every}")
    p.need(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", t.device) is not None,
           f"train.device: {t.device!r} is not auto, cpu, cuda, cuda:N or mps")


def _eval(cfg: Config, p: _Problems) -> None:
    """The problems of the ``eval`` section."""
    e = cfg.eval
    unknown = [a for a in expand_attacks(list(e.attacks)) if a not in EVAL_ATTACKS]
    p.need(not unknown and len(e.attacks) > 0, f"eval.attacks: unknown attack(s) {unknown or '(none given)'}; "
           f"choose from {', '.join(EVAL_ATTACKS)} or a preset ({', '.join(EVAL_PRESETS)})")
    for key in ("square_queries", "check_n", "check_queries"):
        p.need(getattr(e, key) >= 1, f"eval.{key}: must be >= 1, got {getattr(e, key)}")
    p.need(e.bootstrap >= 0, f"eval.bootstrap: must be >= 0 (0 turns the intervals off), got {e.bootstrap}")
    p.need(e.eps_weights is None or all(w >= 0 for w in e.eps_weights) and sum(e.eps_weights) > 0,
           f"eval.eps_weights: must be non-negative with a positive sum, got {e.eps_weights}")
    if e.eps_grid and e.eps_weights is not None:
        points = sorted({0.0, *e.eps_grid})  # the grid the evaluator walks
        p.need(len(e.eps_weights) == len(e.eps_grid) == len(points),
               f"eval.eps_weights: give one weight per ε of eval.eps_grid, ε = 0 included, each ε once: the grid "
               f"[{', '.join(str(format_eps(x)) for x in points)}] has {len(points)}, got {len(e.eps_weights)} weights")
    p.need(e.num_steps is None or e.num_steps >= 1, f"eval.num_steps: must be >= 1 or null, got {e.num_steps}")
    p.need(e.warm_steps is None or e.warm_steps >= 1, f"eval.warm_steps: must be >= 1 or null, got {e.warm_steps}")
    p.need(e.fmn_steps >= 1, f"eval.fmn_steps: must be >= 1, got {e.fmn_steps}")
    p.need(e.check_autoattack is None or e.check_autoattack >= 0,
           f"eval.check_autoattack: must be >= 0 (0 turns the check off) or null, got {e.check_autoattack}")
    p.need(e.warm_start in (None, True, False), f"eval.warm_start: must be true, false or null, got {e.warm_start!r}")
    p.need(e.restarts >= 1, f"eval.restarts: must be >= 1, got {e.restarts}")
    p.need(e.targets >= 1, f"eval.targets: must be >= 1 (apgd-t's wrong classes attacked in turn), got {e.targets}")
    p.need(e.mode in (None, *EVAL_MODES), f"eval.mode: {e.mode!r} is not {', '.join(EVAL_MODES)} or null")
    stray = sorted(set(e.at_target or []) - set(expand_attacks(list(e.attacks))))
    p.need(not stray, f"eval.at_target: {', '.join(stray)} not among eval.attacks ({', '.join(expand_attacks(list(e.attacks)))})")
    p.need(e.eps_step > 0, f"eval.eps_step: must be positive, got {e.eps_step}")
    p.need(e.n is None or e.n > 0, f"eval.n: must be positive or null, got {e.n}")

HINGE_KEYS = ("t1", "t2", "latest_t1")
"""The schedule keys that are points of training: whole epochs (int) or fractions of training (float)."""


def to_epochs(value: int | float, epochs: int) -> float:
    """A hinge in epochs of progress: whole epochs (int) as they are, a fraction f of training (float in [0, 1])
    as f · ``epochs``, the same scale as a piecewise schedule's progress (0.25 and 0.75 of 6 epochs are 1.5 and
    4.5). With per-epoch granularity epoch e trains at the multiplier of t = e, so a hinge at 1.0 (t = E) is
    reached by no epoch; "the end of training" of ``linear`` and ``auto`` is the last epoch, E − 1, instead."""
    return float(value) if isinstance(value, int) else value * epochs


def hinges_in_epochs(s: ScheduleConfig, epochs: int) -> tuple[float, float]:
    """(t1, t2) of a hinge-shaped schedule in epochs, its kind's defaults (``SCHEDULES`` entry) filled in: t1 is 0
    for a kind that neither takes nor defaults it (a warm-up), and t2 is t1 for one without t2 (a switch)."""
    t1 = to_epochs(SCHEDULES.default(s.kind, "t1", s.t1) or 0, epochs)
    t2 = SCHEDULES.default(s.kind, "t2", s.t2)
    return (t1, t1) if t2 is None else (t1, to_epochs(t2, epochs))


def schedule_problems(s: ScheduleConfig, epochs: int, config: Config | None = None,
                      epochs_key: str = "train.epochs") -> list[str]:
    """Every problem of a schedule section for ``epochs`` of training: the rules all kinds share (granularity,
    hinges, the auto schedule's knobs) and its kind's own (the ``SCHEDULES`` registry, robustft/schedules.py).
    The config and :func:`robustft.train.eps_schedule` both check a schedule with it; ``config`` is the rest of
    the configuration the kind's check may look at (None: the defaults), ``epochs_key`` how the messages name
    the training length."""
    p = hinge_problems(s, epochs, epochs_key)
    if s.granularity not in ("epoch", "step"):
        p.append(f"schedule.granularity: {s.granularity!r} is not epoch or step")
    if not isinstance(s.patience, int) or s.patience < 1:
        p.append(f"schedule.patience: must be a whole number of epochs >= 1, got {s.patience!r}")
    if not isinstance(s.tolerance, (int, float)) or s.tolerance < 0:
        p.append(f"schedule.tolerance: must be >= 0, got {s.tolerance!r}")
    if s.tolerance_mode not in ("absolute", "relative"):
        p.append(f"schedule.tolerance_mode: {s.tolerance_mode!r} is not absolute or relative")
    if any(isinstance(v, bool) or not isinstance(v, (int, float, type(None))) for v in _hinges(s)):
        return p  # the kinds' checks compare hinges as numbers
    config = config if config is not None else Config(schedule=s, train=TrainConfig(epochs=epochs))
    return p + SCHEDULES.problems(s, config)


def _hinges(s: ScheduleConfig) -> list[Any]:
    return [getattr(s, key) for key in HINGE_KEYS]


def hinge_problems(s: ScheduleConfig, epochs: int, epochs_key: str = "train.epochs") -> list[str]:
    """What is wrong with the hinges set (``t1``, ``t2``, ``latest_t1``): each must be whole epochs (an int in
    [0, ``epochs``]) or a fraction of training (a float in [0, 1]), nothing else."""
    p = []
    for key in HINGE_KEYS:
        v = getattr(s, key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            p.append(f"schedule.{key}: expected whole epochs (an int) or a fraction of training (a float in "
                     f"[0, 1]), got {v!r}")
        elif isinstance(v, float) and not 0.0 <= v <= 1.0:
            as_fraction = f"; {v:g} epochs of {epochs} is {key}={v / epochs:.4g}" if 0 < v <= epochs else ""
            p.append(f"schedule.{key}: a float is a fraction of training and must be in [0, 1], got {v:g}; give "
                     f"whole epochs as an integer (e.g. {key}={max(round(v), 0)}) or a fraction in [0, 1]{as_fraction}")
        elif isinstance(v, int) and not 0 <= v <= epochs:
            p.append(f"schedule.{key}: {v} epochs is outside [0, {epochs_key}={epochs}]")
    return p


def hinges_in_range(s: ScheduleConfig, epochs: int) -> bool:
    """Whether every hinge set is within training (ints: epochs; floats: fractions)."""
    return all(v is None or (0.0 <= v <= 1.0 if isinstance(v, float) else 0 <= v <= epochs) for v in (s.t1, s.t2))


def points_problems(points: list[Any]) -> list[str]:
    """What is wrong with a piecewise schedule's ``[progress, multiplier]`` points."""
    p: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            p.append(msg)

    pairs = all(isinstance(pt, (list, tuple)) and len(pt) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in pt) for pt in points)
    need(pairs and len(points) > 0, f"schedule.points: expected [progress, multiplier] pairs such as "
                                    f"[[0, 0], [0.5, 1]], got {points!r}")
    if not pairs or not points:
        return p
    xs, ys = [pt[0] for pt in points], [pt[1] for pt in points]
    need(all(0 <= x <= 1 for x in xs) and all(b > a for a, b in zip(xs, xs[1:])),
         f"schedule.points: progress values must increase within [0, 1] (fractions of training), got {xs}")
    need(all(y >= 0 for y in ys), f"schedule.points: multipliers must be >= 0, got {ys}")
    return p
