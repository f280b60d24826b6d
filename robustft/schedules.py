"""Schedules as pure functions of training progress: the ε multiplier α(t) and the learning rate.

Progress ``t`` is measured in epochs, 0-based. With per-epoch granularity ``t`` is the epoch index,
so ε is constant within an epoch (the paper's choice); with per-step granularity
``t = epoch + step / steps_per_epoch``. The trainer passes the counts explicitly; nothing here keeps state.

Epsilon-Scheduling (two hinges T1 ≤ T2, in epochs)::

    α(t) = 0                   t < T1     (plain fine-tuning: the model adapts to the task)
         = (t - T1)/(T2 - T1)  T1 ≤ t < T2 (linear ramp)
         = 1                   t ≥ T2     (full robust objective)

    ε(t) = α(t) · ε_g

Special cases: ``fix`` is T1 = T2 = 0; ``warmup`` is T1 = 0; ``switch`` is T1 = T2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from robustft.config import OptimConfig, ScheduleConfig

DEFAULT_HINGES = {"hinge": (0.25, 0.75), "warmup": (0, 0.75), "switch": (0.5, None), "fix": (0, 0)}


def hinge_multiplier(t: float, t1: float, t2: float) -> float:
    """α(t) of the two-hinge schedule; ``t``, ``t1``, ``t2`` in epochs with ``t1 <= t2``."""
    if t < t1:
        return 0.0
    if t >= t2:
        return 1.0
    return (t - t1) / (t2 - t1)


def to_epochs(value: int | float, epochs: int) -> float:
    """A hinge given as whole epochs (int) or as a fraction of training (float in [0, 1]), in epochs."""
    return float(value) if isinstance(value, int) else value * epochs


def resolve_hinges(cfg: ScheduleConfig, epochs: int) -> tuple[float, float]:
    """(T1, T2) in epochs for a schedule config, filling each kind's defaults."""
    d1, d2 = DEFAULT_HINGES[cfg.kind]
    t1 = to_epochs(cfg.t1 if cfg.t1 is not None else d1, epochs)
    if cfg.kind == "switch":
        return t1, t1
    t2 = to_epochs(cfg.t2 if cfg.t2 is not None else d2, epochs)
    if cfg.kind == "fix":
        return 0.0, 0.0
    if t2 < t1:
        raise ValueError(f"schedule: t2 ({t2} epochs) must not come before t1 ({t1} epochs)")
    return t1, t2


@dataclass(frozen=True)
class EpsSchedule:
    """ε(epoch, step) = α(t) · eps_target for the configured hinges; a value, not a stateful object."""

    eps_target: float
    t1: float
    t2: float
    per_step: bool = False

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """α at the given epoch (0-based) and step within it."""
        t = epoch + step / steps_per_epoch if self.per_step else float(epoch)
        return hinge_multiplier(t, self.t1, self.t2)

    def eps_at(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """ε in pixel units at the given epoch (0-based) and step within it."""
        return self.multiplier(epoch, step, steps_per_epoch) * self.eps_target


def build_eps_schedule(cfg: ScheduleConfig, eps_target: float, epochs: int) -> EpsSchedule:
    """The ε schedule of a config, with hinges resolved to epochs."""
    t1, t2 = resolve_hinges(cfg, epochs)
    return EpsSchedule(eps_target=eps_target, t1=t1, t2=t2, per_step=cfg.granularity == "step")


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
