"""APGD-CE (Croce & Hein, 2020): step-size-free PGD with momentum and step halving at checkpoints.

The step starts at 2ε and is halved, per example, at checkpoints where the loss rose in fewer than
ρ = 75 % of the steps since the last checkpoint, or where the best loss did not improve and the step was
not already halved at the previous checkpoint; a halving restarts from the best point found. Momentum
is 0.75. Checkpoints fall at 22 % of the budget, then at intervals shrinking by 3 % to at least 6 %.
The highest-loss point is returned (``select="max_loss"``, the paper's training attack) or, for
evaluation, any point that was misclassified (``select="misclassified"``, AutoAttack's rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad
from robustft.attacks.threat import Linf, ThreatModel


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


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
               logits: torch.Tensor, y: torch.Tensor) -> None:
        """Keep the best-loss point (and its gradient) and the first misclassified point per example."""
        wrong = logits.argmax(1) != y
        self.x_fooled = torch.where(_bcast(wrong & ~self.fooled, x_adv), x_adv, self.x_fooled)
        self.fooled |= wrong
        better = loss > self.loss_best
        self.x_best = torch.where(_bcast(better, x_adv), x_adv, self.x_best)
        if grad is not None:
            self.grad_best = torch.where(_bcast(better, grad), grad, self.grad_best)
        self.loss_best = torch.where(better, loss, self.loss_best)


@dataclass
class APGD:
    """APGD with the cross-entropy loss.

    Args:
        num_steps: iterations (the paper trains with 7 and evaluates with 10).
        random_start: start from a uniform point of the ball (as the reference implementation does).
        restarts: independent runs; per example the best (fooling, else highest-loss) result is kept.
        select: ``max_loss`` or ``misclassified`` (see the module docstring).
        rho: fraction of loss increases below which the step is halved.
        momentum: weight of the new step against the previous displacement.
        threat: the norm ball.
    """

    num_steps: int = 10
    random_start: bool = True
    restarts: int = 1
    select: str = "max_loss"
    rho: float = 0.75
    momentum: float = 0.75
    threat: ThreatModel = field(default_factory=Linf)

    def __post_init__(self) -> None:
        if self.select not in ("max_loss", "misclassified"):
            raise ValueError(f"APGD select must be max_loss or misclassified, got {self.select!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0:
            return x
        with crafting(model):
            best: _State | None = None
            for _ in range(self.restarts):
                state = self._run(model, x, y, eps)
                best = state if best is None else _merge(best, state)
        return self.threat.project(self._pick(best), x, eps)

    def _pick(self, s: _State) -> torch.Tensor:
        if self.select == "misclassified":
            return torch.where(_bcast(s.fooled, s.x_best), s.x_fooled, s.x_best)
        return s.x_best

    def _checkpoints(self) -> set[int]:
        """Iterations after which the step-size conditions are checked."""
        n = self.num_steps
        k, k_min, decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
        marks, at = set(), k
        while at <= n:
            marks.add(at)
            k = max(k - decr, k_min)
            at += k
        return marks

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> _State:
        x0 = self.threat.random_init(x, eps) if self.random_start else x.clone()
        loss, grad, logits = loss_and_grad(model, x0, y)
        s = _State(x_adv=x0, grad=grad, x_best=x0, grad_best=grad, loss_best=loss.clone(), x_fooled=x0,
                   fooled=torch.zeros_like(y, dtype=torch.bool), step=torch.full_like(loss, 2.0 * eps))
        s.record(x0, loss, grad, logits, y)
        history, x_prev = [loss], x0
        last_check, best_at_check = 0, s.loss_best.clone()
        halved_at_check = torch.zeros_like(s.fooled)
        marks = self._checkpoints()
        for i in range(1, self.num_steps + 1):
            x_next = self._step(s, x, x_prev, eps, first=i == 1)
            x_prev = s.x_adv
            last = i == self.num_steps
            loss, grad, logits = loss_and_grad(model, x_next, y, need_grad=not last)
            s.x_adv, s.grad = x_next, grad
            s.record(x_next, loss, grad, logits, y)
            history.append(loss)
            if i in marks and not last:
                halve = self._should_halve(history, last_check, i, best_at_check, s.loss_best, halved_at_check)
                halved_at_check, best_at_check, last_check = halve, s.loss_best.clone(), i
                s.step = torch.where(halve, s.step / 2, s.step)
                s.x_adv = torch.where(_bcast(halve, x), s.x_best, s.x_adv)
                s.grad = torch.where(_bcast(halve, x), s.grad_best, s.grad)
        return s

    def _step(self, s: _State, x: torch.Tensor, x_prev: torch.Tensor, eps: float, first: bool) -> torch.Tensor:
        """z = P(x_k + η·dir(∇)); x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))."""
        z = self.threat.project(s.x_adv + _bcast(s.step, x) * self.threat.ascent(s.grad), x, eps)
        if first:
            return z
        a = self.momentum
        return self.threat.project(s.x_adv + a * (z - s.x_adv) + (1 - a) * (s.x_adv - x_prev), x, eps)

    def _should_halve(self, history: list[torch.Tensor], start: int, end: int, best_before: torch.Tensor,
                      best_now: torch.Tensor, halved_before: torch.Tensor) -> torch.Tensor:
        """Per-example: too few loss increases since the last checkpoint, or no progress without a halving."""
        window = torch.stack(history[start:end + 1])
        increases = (window[1:] > window[:-1]).sum(0)
        oscillating = increases <= self.rho * (end - start)
        stalled = ~halved_before & (best_before >= best_now)
        return oscillating | stalled


def _merge(a: _State, b: _State) -> _State:
    """Per example, keep a's result unless b fooled where a did not, or b reached a higher loss."""
    take_b = (b.fooled & ~a.fooled) | ((b.fooled == a.fooled) & (b.loss_best > a.loss_best))
    m = _bcast(take_b, a.x_best)
    return replace(a, x_best=torch.where(m, b.x_best, a.x_best), x_fooled=torch.where(m, b.x_fooled, a.x_fooled),
                   loss_best=torch.where(take_b, b.loss_best, a.loss_best), fooled=a.fooled | b.fooled)
