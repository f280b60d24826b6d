"""Schedules as functions of training progress: the ε multiplier α(t) and the learning rate.

Progress ``t`` is measured in epochs, 0-based. With per-epoch granularity ``t`` is the epoch index, so ε
is constant within an epoch (the paper's choice); with per-step granularity
``t = epoch + step / steps_per_epoch``. ``E`` is the number of training epochs. Every schedule gives
``ε(t) = α(t) · ε_g``:

==========  ===========================================================================================
kind        α(t)
==========  ===========================================================================================
fix         1                                                  (RFT-fix: ε_g from the first step)
hinge       0 for t < T1; (t − T1)/(T2 − T1) for T1 ≤ t < T2; 1 for t ≥ T2   (Epsilon-Scheduling)
warmup      hinge with T1 = 0                                  (linear warm-up)
switch      hinge with T1 = T2                                 (hard switch: 0, then 1)
linear      hinge with T1 = 0, T2 = the end of training        (end-to-end linear)
uniform     u(seed, epoch[, step]) ~ U[0, 1], drawn once per epoch (or per step)
piecewise   linear interpolation of (progress, α) points, progress = t / E in [0, 1], flat outside
auto        0 until validation clean accuracy stops improving at epoch k, then a linear ramp that reaches
            1 at T2 (default: the end of training): per epoch, hinge with T1 = k, so epoch k + 1 is
            the first with ε > 0; per step, hinge from T1 = k + 1. A plateau found after T2 gives a
            hard switch to 1 at epoch k + 1. With ``latest_t1`` L, k is at most ⌈L⌉ (beyond the paper)
==========  ===========================================================================================

Hinges (``t1``, ``t2``, ``latest_t1``) are whole epochs (an int) or fractions of training (a float in [0, 1]): a
fraction f is the point T = f · E, on the same scale as t and as piecewise's progress t / E (0.25 and 0.75 of
6 epochs are T1 = 1.5 and T2 = 4.5). With per-epoch granularity epoch e trains at α(e), so those hinges give
α = 0, 0, 1/6, 1/2, 5/6, 1 for epochs 0–5, and a hinge at 1.0 (T = E) is reached by no epoch. "The end of
training", where ``linear`` and ``auto`` end their ramp, is another point: the last epoch, T = E − 1, with
per-epoch granularity (so the final epoch trains at ε_g), and T = E with per-step granularity.
:meth:`Schedule.describe` gives the hinges in epochs, as resolved, beside ``epochs`` (E).

Special cases: hinge with T1 = T2 = 0 is fix. Schedules are frozen values: ``eps_at(epoch, step,
steps_per_epoch)`` is a pure function of progress, and the only schedule that learns from training,
``auto``, does so through :meth:`observe`, which returns a *new* schedule; its state (the validation
history and where it switched) is what :meth:`state` returns, saved in every checkpoint, so a resumed run
continues the same schedule. ``uniform`` draws from a generator seeded by (seed, epoch, step), so its
values are reproducible and need no state at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from robustft.config import (
    SCHEDULES,
    Config,
    OptimConfig,
    ScheduleConfig,
    hinges_in_epochs,
    hinges_in_range,
    points_problems,
    to_epochs,
)
from robustft.errors import ConfigError


def hinge_multiplier(t: float, t1: float, t2: float) -> float:
    """α(t) of the two-hinge schedule; ``t``, ``t1``, ``t2`` in epochs with ``t1 <= t2``."""
    if t < t1:
        return 0.0
    if t >= t2:
        return 1.0
    return (t - t1) / (t2 - t1)


def end_of_training(epochs: int, per_step: bool) -> float:
    """The progress at which a ramp "to the end" reaches 1: the last epoch (E − 1) when ε is set per
    epoch, so that epoch trains at ε_g; E when it is set per step."""
    return float(epochs) if per_step else float(max(epochs - 1, 0))


def resolve_hinges(cfg: ScheduleConfig, epochs: int) -> tuple[float, float]:
    """(T1, T2) in epochs for a hinge-shaped schedule config whose hinges are set by hand, filling its kind's
    defaults (``SCHEDULES`` entry)."""
    t1, t2 = hinges_in_epochs(cfg, epochs)
    if t2 < t1:
        raise ConfigError(f"schedule: t2 ({t2} epochs) must not come before t1 ({t1} epochs); give t2 ≥ t1")
    return t1, t2


def plateau_epoch(history: Sequence[float], patience: int, tolerance: float, relative: bool = False) -> int | None:
    """The first epoch (0-based) after which validation accuracy has not improved for ``patience`` epochs,
    or None.

    An epoch improves when its accuracy beats the last improving one by more than ``tolerance``: an
    absolute margin in accuracy (0.02 = 2 points) or, with ``relative``, a fraction of it (0.02 = 2 %).
    Small gains do not reset the count but add up until they pass the margin (Keras' ``min_delta``).
    """
    best, since = -math.inf, 0
    for epoch, acc in enumerate(history):
        margin = tolerance * abs(best) if relative else tolerance
        if best == -math.inf or acc > best + margin:  # only a real improvement moves the reference
            best, since = acc, 0
        else:
            since += 1
        if since >= patience:
            return epoch
    return None


@dataclass(frozen=True)
class Schedule:
    """What every ε schedule shares: ``eps_at`` from ``multiplier``, and no state unless it overrides."""

    eps_target: float
    per_step: bool = False
    epochs: int | None = None
    """The training length E the schedule was built for (its hinges and points are resolved against it);
    None: any (a schedule that does not depend on it). :func:`robustft.train.fit` refuses another length."""

    def progress(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """t in epochs: the epoch index, plus the fraction of it done with per-step granularity."""
        return epoch + step / steps_per_epoch if self.per_step else float(epoch)

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """α at the given epoch (0-based) and step within it."""
        raise NotImplementedError

    def eps_at(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """ε in pixel units at the given epoch (0-based) and step within it."""
        return self.multiplier(epoch, step, steps_per_epoch) * self.eps_target

    def observe(self, epoch: int, val_clean_acc: float) -> "Schedule":
        """The schedule after epoch ``epoch`` validated at ``val_clean_acc`` (unchanged unless adaptive)."""
        return self

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to continue this schedule ({} for the pure ones)."""
        return {}

    def with_state(self, state: dict[str, Any]) -> "Schedule":
        """This schedule with a checkpoint's :meth:`state` restored."""
        return self

    def describe(self) -> dict[str, Any]:
        """The resolved schedule, JSON-ready, for summaries and diagnostics: its kind, granularity, ε_g (``eps``)
        and training length (``epochs``), and its own parameters, hinges in epochs (module docstring)."""
        return {"kind": type(self).__name__.removesuffix("Schedule").lower(), "per_step": self.per_step,
                "eps": self.eps_target, "epochs": self.epochs}


@dataclass(frozen=True)
class HingeSchedule(Schedule):
    """Two hinges T1 ≤ T2 in epochs (fix, hinge, warmup, switch and linear are all of this shape)."""

    t1: float = 0.0
    t2: float = 0.0
    kind: str = "hinge"

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        return hinge_multiplier(self.progress(epoch, step, steps_per_epoch), self.t1, self.t2)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": self.kind, "t1": self.t1, "t2": self.t2}


@dataclass(frozen=True)
class UniformSchedule(Schedule):
    """α ~ U[0, 1] drawn once per epoch (per step with per-step granularity) from a generator seeded by
    (seed, epoch, step): reproducible from the seed, and across a resume, without any state."""

    seed: int = 0

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        return float(np.random.default_rng([self.seed, epoch, step if self.per_step else 0]).random())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}


@dataclass(frozen=True)
class PiecewiseSchedule(Schedule):
    """α linear between (progress, α) points, progress as a fraction of training; flat beyond the ends."""

    points: tuple[tuple[float, float], ...] = ((0.0, 1.0),)

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        xs, ys = zip(*self.points)
        return float(np.interp(self.progress(epoch, step, steps_per_epoch) / (self.epochs or 1), xs, ys))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "points": [list(p) for p in self.points]}


@dataclass(frozen=True)
class AutoSchedule(Schedule):
    """ε = 0 until validation clean accuracy stops improving, then a linear ramp to ε_g at ``ramp_end``.

    ``history`` holds the validation accuracies seen so far and ``switch`` the plateau epoch k (None while
    ε is still 0): epoch k + 1 is the first with ε > 0. Both are the checkpointed state.
    """

    patience: int = 5
    tolerance: float = 0.02
    relative: bool = False
    ramp_end: float = 1.0
    latest: float | None = None
    history: tuple[float, ...] = ()
    switch: float | None = None

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        t = self.progress(epoch, step, steps_per_epoch)
        if self.switch is None or t < self.switch + 1:  # up to the plateau epoch, ε was 0
            return 0.0
        first = self.switch + 1
        start = first if self.per_step else self.switch  # per epoch, epoch `first` already trains at α > 0
        return hinge_multiplier(t, start, max(self.ramp_end, first))

    def observe(self, epoch: int, val_clean_acc: float) -> "AutoSchedule":
        if len(self.history) != epoch:
            raise ValueError(f"auto schedule: expected the validation accuracy of epoch {len(self.history)}, "
                             f"got epoch {epoch}")
        history = self.history + (float(val_clean_acc),)
        switch = self.switch
        forced = self.latest is not None and epoch >= self.latest
        if switch is None and (forced or plateau_epoch(history, self.patience, self.tolerance, self.relative) is not None):
            switch = float(epoch)
        return replace(self, history=history, switch=switch)

    def state(self) -> dict[str, Any]:
        return {"history": list(self.history), "switch": self.switch}

    def with_state(self, state: dict[str, Any]) -> "AutoSchedule":
        return replace(self, history=tuple(state.get("history", ())), switch=state.get("switch"))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "patience": self.patience, "tolerance": self.tolerance,
                "relative": self.relative, "ramp_end": self.ramp_end, "latest": self.latest, "switch": self.switch}


def build_eps_schedule(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int = 0) -> Schedule:
    """The ε schedule of a config, with hinges and points resolved to epochs (``seed`` feeds uniform)."""
    return SCHEDULES[cfg.kind].build(cfg, eps_target, epochs, seed)


# ------------------------------------------------------------------------ the kinds (``schedule.kind``)
def _hinged(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int,
            hinges: tuple[float, float] | None = None) -> Schedule:
    """A two-hinge schedule with ``hinges`` (T1, T2) in epochs, or the config's (:func:`resolve_hinges`)."""
    t1, t2 = hinges if hinges is not None else resolve_hinges(cfg, epochs)
    return HingeSchedule(eps_target=eps_target, per_step=cfg.granularity == "step", epochs=epochs, t1=t1, t2=t2,
                         kind=cfg.kind)


def _fix(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int) -> Schedule:
    return _hinged(cfg, eps_target, epochs, seed, (0.0, 0.0))


def _linear(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int) -> Schedule:
    return _hinged(cfg, eps_target, epochs, seed, (0.0, end_of_training(epochs, cfg.granularity == "step")))


def _t2_default(s: ScheduleConfig) -> str:
    """What the error of a ramp that ends before it starts says of a t2 left to its kind's default."""
    return f"; t2 defaults to {SCHEDULES.default(s.kind, 't2', None)} of training"


def _ramp_problems(s: ScheduleConfig, config: Config) -> list[str]:
    """A hand-set ramp must not end before it starts."""
    if not hinges_in_range(s, config.train.epochs):
        return []  # said already
    t1, t2 = hinges_in_epochs(s, config.train.epochs)
    return [] if t2 >= t1 else [f"schedule.t1/t2: the ramp ends (t2 = {t2:g} epochs) before it starts (t1 = {t1:g} "
                                f"epochs){_t2_default(s) if s.t2 is None else ''}"]


def _warmup_problems(s: ScheduleConfig, config: Config) -> list[str]:
    return (["schedule.t1: warmup starts at 0; set t2 only"] if s.t1 not in (None, 0, 0.0) else []) + \
        _ramp_problems(s, config)


def _uniform(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int) -> Schedule:
    return UniformSchedule(eps_target=eps_target, per_step=cfg.granularity == "step", epochs=epochs, seed=seed)


def _piecewise(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int) -> Schedule:
    points = tuple((float(p), float(a)) for p, a in cfg.points or ())
    return PiecewiseSchedule(eps_target=eps_target, per_step=cfg.granularity == "step", points=points, epochs=epochs)


def _auto(cfg: ScheduleConfig, eps_target: float, epochs: int, seed: int) -> Schedule:
    per_step = cfg.granularity == "step"
    ramp_end = to_epochs(cfg.t2, epochs) if cfg.t2 is not None else end_of_training(epochs, per_step)
    latest = to_epochs(cfg.latest_t1, epochs) if cfg.latest_t1 is not None else None
    return AutoSchedule(eps_target=eps_target, per_step=per_step, epochs=epochs, patience=cfg.patience,
                        tolerance=cfg.tolerance,
                        relative=cfg.tolerance_mode == "relative", ramp_end=ramp_end, latest=latest)


AUTO_KEYS = ("patience", "tolerance", "tolerance_mode", "latest_t1", "t2", "granularity")
SCHEDULES.register("fix", _fix, baseline=True, color="#d62728", summary="RFT-fix: ε_g from the first step")
SCHEDULES.register("hinge", _hinged, keys=("t1", "t2", "granularity"), defaults={"t1": 0.25, "t2": 0.75},
                   check=_ramp_problems, color="#1f77b4",
                   summary="Epsilon-Scheduling: ε = 0 until t1, linear to ε_g at t2 (default 0.25 / 0.75)")
SCHEDULES.register("warmup", _hinged, keys=("t2", "granularity"), defaults={"t2": 0.75}, check=_warmup_problems,
                   color="#2ca02c", summary="linear warm-up: from 0 at the start to ε_g at t2")
SCHEDULES.register("switch", _hinged, keys=("t1", "granularity"), defaults={"t1": 0.5}, color="#9467bd",
                   summary="hard switch from 0 to ε_g at t1")
SCHEDULES.register("linear", _linear, keys=("granularity",), color="#17becf",
                   summary="linear from 0 to ε_g over all of training")
SCHEDULES.register("uniform", _uniform, keys=("granularity",), color="#bcbd22",
                   summary="ε ~ U[0, ε_g], drawn every epoch (or step)")
SCHEDULES.register("piecewise", _piecewise, keys=("points", "granularity"), color="#8c564b",
                   check=lambda s, config: ["schedule.points: piecewise needs points: [[progress, α], ...]"]
                   if s.points is None else points_problems(s.points),
                   summary="linear through [[progress, α], ...] points")
SCHEDULES.register("auto", _auto, keys=AUTO_KEYS, adaptive=True, color="#ff7f0e",
                   check=lambda s, config: [] if config.data.n_val > 0 else
                   ["schedule.kind: auto watches validation accuracy and needs data.n_val > 0"],
                   summary="ε = 0 until validation accuracy plateaus, then linear to ε_g at t2")


def cosine_lr_multiplier(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_schedule(cfg: OptimConfig, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """LR multiplier as a function of the global optimiser step."""
    total = epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return lambda step: cosine_lr_multiplier(step, total, warmup, cfg.min_lr_ratio)
