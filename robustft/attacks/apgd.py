"""APGD (Croce & Hein, 2020): step-size-free PGD with momentum and step halving at checkpoints.

The step starts at 2ε and is halved, per example, at checkpoints where the loss rose in fewer than
ρ = 75 % of the steps since the last checkpoint, or where the best loss did not improve and the step was
not already halved at the previous checkpoint; a halving restarts from the best point found. At the
first checkpoint, as in the reference implementation (pyautoattack), the first move away from the
starting point counts as a rise and the second rule is off. Momentum is 0.75.
Checkpoints fall at 22 % of the budget, then at intervals shrinking by 3 % to at least 6 %.

The loss is cross-entropy (APGD-CE), DLR (APGD-DLR) or targeted DLR (APGD-T: one run per target class,
the ``targets`` most likely wrong classes in turn). The highest-loss point is returned
(``select="max_loss"``, the paper's training attack) or, for evaluation, any point that was
misclassified (``select="misclassified"``, AutoAttack's rule); in that mode an example stops costing
forward and backward passes as soon as it is misclassified, and restarts and further targets attack only
the examples not yet broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, overload

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad, per_example
from robustft.attacks.losses import LOSSES, MIN_CLASSES
from robustft.attacks.threat import Linf, ThreatModel
from robustft.errors import ConfigError


@dataclass
class _State:
    """Per-example bookkeeping of one APGD run."""

    x_adv: torch.Tensor
    grad: torch.Tensor
    x_best: torch.Tensor
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    x_fooled: torch.Tensor
    fooled: torch.Tensor
    step: torch.Tensor

    def record(self, x_adv: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor | None,
               wrong: torch.Tensor) -> None:
        """Keep the best-loss point (and its gradient) and the first misclassified point per example."""
        self.x_fooled = torch.where(per_example(wrong & ~self.fooled, x_adv), x_adv, self.x_fooled)
        self.fooled |= wrong
        better = loss > self.loss_best
        self.x_best = torch.where(per_example(better, x_adv), x_adv, self.x_best)
        if grad is not None:
            self.grad_best = torch.where(per_example(better, grad), grad, self.grad_best)
        self.loss_best = torch.where(better, loss, self.loss_best)


@dataclass
class APGD:
    """APGD with the cross-entropy, DLR or targeted DLR loss.

    Args:
        num_steps: iterations per run (the paper trains with 7 and evaluates with 10; AutoAttack uses 100).
        random_start: start from a uniform point of the ball (as the reference implementation does).
        restarts: runs per target; per example the best (fooling, else highest-loss) result is kept.
        select: ``max_loss`` or ``misclassified`` (see the module docstring).
        loss: ``ce``, ``dlr`` or ``dlr-targeted``.
        targets: with ``dlr-targeted``, how many of the most likely wrong classes are tried (at most
            classes − 1; AutoAttack uses 9).
        rho: fraction of loss increases below which the step is halved.
        momentum: weight of the new step against the previous displacement.
        threat: the norm ball.
        warm_steps: iterations of a run started from a given point (``x_init``, a warm start; None:
            ``num_steps``). A warm start already sits at a high loss, so fewer iterations reach what a cold
            run reaches.
        warm_rel_step: first step of a warm-started run as a fraction of ε (a cold run's is 2ε, as in the
            reference). A step of 2ε throws the warm start away: on the demo model, 3 or 5 warm iterations
            from 2ε ended 8 and 5 points above a cold 10-step run, from ε/4 at or below it (BENCHMARKS.md).
    """

    accepts_start: ClassVar[bool] = True
    """Takes ``x_init`` (a warm start): the first run per target starts there, further restarts at random."""

    num_steps: int = 10
    random_start: bool = True
    restarts: int = 1
    select: str = "max_loss"
    loss: str = "ce"
    targets: int = 9
    rho: float = 0.75
    momentum: float = 0.75
    threat: ThreatModel = field(default_factory=Linf)
    warm_steps: int | None = None
    warm_rel_step: float = 0.25

    def __post_init__(self) -> None:
        if self.select not in ("max_loss", "misclassified"):
            raise ConfigError(f"APGD select must be max_loss or misclassified, got {self.select!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"APGD loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.warm_steps is not None and self.warm_steps < 1:
            raise ConfigError(f"APGD warm_steps must be >= 1 or None, got {self.warm_steps}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 x_init: torch.Tensor | None = None) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        if x_init is not None and x_init.shape != x.shape:
            raise ValueError(f"x_init must have the shape of x, {tuple(x.shape)}; got {tuple(x_init.shape)}")
        with crafting(model):
            best: _State | None = None
            for target in self._target_classes(model, x):
                for r in range(self.restarts):
                    rows = self._rows_to_attack(best, len(x), x.device)
                    if len(rows) == 0:
                        break
                    t = None if target is None else target[rows]
                    start = x_init[rows].to(x) if x_init is not None and r == 0 else None
                    state = self._run(model, x[rows], y[rows], eps, t, start)
                    best = state if best is None else _merge(best, state, rows)
        if best is None:
            raise ConfigError(f"APGD ran no attack: restarts={self.restarts}, targets={self.targets}; set both to at "
                              "least 1")
        return self.threat.project(self._pick(best), x, eps)

    def _target_classes(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor | None]:
        """[None] for untargeted losses; else the k-th most likely class on clean inputs, k = 2, 3, …"""
        with torch.no_grad():
            logits = model(x[:1]) if self.loss != "dlr-targeted" else model(x)
        classes = logits.shape[1]
        if classes < MIN_CLASSES[self.loss]:
            raise ConfigError(f"APGD with the {self.loss} loss needs at least {MIN_CLASSES[self.loss]} classes; "
                              f"the model has {classes}. Use the ce loss (apgd-ce) instead")
        if self.loss != "dlr-targeted":
            return [None]
        order = logits.argsort(dim=1, descending=True)
        return [order[:, k] for k in range(1, min(self.targets, classes - 1) + 1)]

    def _rows_to_attack(self, best: "_State | None", n: int, device: torch.device) -> torch.Tensor:
        """Every row at first; afterwards, in ``misclassified`` mode, only rows not yet broken."""
        if best is None or self.select == "max_loss":
            return torch.arange(n, device=device)
        return (~best.fooled).nonzero()[:, 0]

    def _pick(self, s: _State) -> torch.Tensor:
        if self.select == "misclassified":
            return torch.where(per_example(s.fooled, s.x_best), s.x_fooled, s.x_best)
        return s.x_best

    def _checkpoints(self, n: int) -> set[int]:
        """Iterations after which the step-size conditions are checked in a run of ``n`` iterations."""
        k, k_min, decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
        marks, at = set(), k
        while at <= n:
            marks.add(at)
            k = max(k - decr, k_min)
            at += k
        return marks

    @overload
    def _probe(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               need_grad: Literal[True], fooled: torch.Tensor | None = ...
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
    @overload
    def _probe(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               need_grad: bool, fooled: torch.Tensor | None = ...
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]: ...
    def _probe(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               need_grad: bool, fooled: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(loss, input gradient, misclassified) at ``x_adv``; rows already ``fooled`` are skipped in
        ``misclassified`` mode (their loss is −∞, their gradient 0)."""
        loss_fn = LOSSES[self.loss]
        if fooled is None or self.select == "max_loss" or not fooled.any():
            loss, grad, logits = loss_and_grad(model, x_adv, y, need_grad, loss_fn, target)
            return loss, grad, logits.argmax(1) != y
        live = (~fooled).nonzero()[:, 0]
        loss = torch.full(fooled.shape, float("-inf"), device=x_adv.device)
        wrong = torch.zeros_like(fooled)
        grad = torch.zeros_like(x_adv) if need_grad else None
        if len(live):
            t = None if target is None else target[live]
            loss[live], g, logits = loss_and_grad(model, x_adv[live], y[live], need_grad, loss_fn, t)
            wrong[live] = logits.argmax(1) != y[live]
            if grad is not None and g is not None:  # both are, with need_grad
                grad[live] = g
        return loss, grad, wrong

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             target: torch.Tensor | None, start: torch.Tensor | None = None) -> _State:
        """One run from ``start`` (projected into the ball; ``warm_steps`` iterations) or, without one, from
        a random point of the ball or ``x`` (``num_steps`` iterations)."""
        if start is not None:
            x0, num_steps = self.threat.project(start.detach(), x, eps), self.warm_steps or self.num_steps
        else:
            x0, num_steps = self.threat.random_init(x, eps) if self.random_start else x.clone(), self.num_steps
        loss, grad, wrong = self._probe(model, x0, y, target, need_grad=True)
        rel = self.warm_rel_step if start is not None else 2.0
        s = _State(x_adv=x0, grad=grad, x_best=x0, grad_best=grad, loss_best=loss.clone(), x_fooled=x0,
                   fooled=torch.zeros_like(y, dtype=torch.bool), step=torch.full_like(loss, rel * eps))
        s.record(x0, loss, grad, wrong)
        history, x_prev = [loss], x0
        last_check, best_at_check = 0, s.loss_best.clone()
        halved_at_check = torch.ones_like(s.fooled)
        marks = self._checkpoints(num_steps)
        for i in range(1, num_steps + 1):
            if self.select == "misclassified" and bool(s.fooled.all()):
                break
            x_next = self._step(s, x, x_prev, eps, first=i == 1)
            x_prev = s.x_adv
            last = i == num_steps
            loss, grad_next, wrong = self._probe(model, x_next, y, target, need_grad=not last, fooled=s.fooled)
            s.x_adv = x_next
            if grad_next is not None:  # the last iteration takes none: no step follows it
                s.grad = grad_next
            s.record(x_next, loss, grad_next, wrong)
            history.append(loss)
            if i in marks and not last:
                halve = self._should_halve(history, last_check, i, best_at_check, s.loss_best, halved_at_check)
                halved_at_check, best_at_check, last_check = halve, s.loss_best.clone(), i
                s.step = torch.where(halve, s.step / 2, s.step)
                s.x_adv = torch.where(per_example(halve, x), s.x_best, s.x_adv)
                s.grad = torch.where(per_example(halve, x), s.grad_best, s.grad)
        return s

    def _step(self, s: _State, x: torch.Tensor, x_prev: torch.Tensor, eps: float, first: bool) -> torch.Tensor:
        """z = P(x_k + η·dir(∇)); x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))."""
        z = self.threat.project(s.x_adv + per_example(s.step, x) * self.threat.ascent(s.grad), x, eps)
        if first:
            return z
        a = self.momentum
        return self.threat.project(s.x_adv + a * (z - s.x_adv) + (1 - a) * (s.x_adv - x_prev), x, eps)

    def _should_halve(self, history: list[torch.Tensor], start: int, end: int, best_before: torch.Tensor,
                      best_now: torch.Tensor, halved_before: torch.Tensor) -> torch.Tensor:
        """Per-example: too few loss increases since the last checkpoint, or no progress without a halving."""
        window = torch.stack(history[start:end + 1])
        rises = window[1:] > window[:-1]
        if start == 0:  # as in the reference implementation, the first move from the start counts as a rise
            rises[0] = True
        increases = rises.sum(0)
        oscillating = increases <= self.rho * (end - start)
        stalled = ~halved_before & (best_before >= best_now)
        return oscillating | stalled


def _merge(a: _State, b: _State, rows: torch.Tensor) -> _State:
    """Fold run ``b`` (on ``a``'s rows ``rows``) into ``a``: per row, keep a's result unless b fooled where
    a did not, or neither or both fooled and b reached a higher loss."""
    a_fooled, a_loss = a.fooled[rows], a.loss_best[rows]
    take_b = (b.fooled & ~a_fooled) | ((b.fooled == a_fooled) & (b.loss_best > a_loss))
    m = per_example(take_b, b.x_best)
    x_best, x_fooled, loss_best, fooled = a.x_best.clone(), a.x_fooled.clone(), a.loss_best.clone(), a.fooled.clone()
    x_best[rows] = torch.where(m, b.x_best, a.x_best[rows])
    x_fooled[rows] = torch.where(m, b.x_fooled, a.x_fooled[rows])
    loss_best[rows] = torch.where(take_b, b.loss_best, a_loss)
    fooled[rows] = a_fooled | b.fooled
    return _State(x_adv=a.x_adv, grad=a.grad, x_best=x_best, grad_best=a.grad_best, loss_best=loss_best,
                  x_fooled=x_fooled, fooled=fooled, step=a.step)
