"""Projected gradient descent (Madry et al.) with random start and restarts; step size relative to ε."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad
from robustft.attacks.threat import Linf, ThreatModel


@dataclass
class PGD:
    """PGD on the cross-entropy loss.

    Args:
        num_steps: gradient steps per restart.
        rel_step_size: step size as a fraction of ε, so one config serves a whole ε grid or schedule.
        random_start: start from a uniform point of the ball instead of ``x``.
        restarts: independent runs; per example the one with the highest final loss is kept.
        threat: the norm ball.
    """

    num_steps: int = 10
    rel_step_size: float = 0.25
    random_start: bool = True
    restarts: int = 1
    threat: ThreatModel = field(default_factory=Linf)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0:
            return x
        with crafting(model):
            best, best_loss = x, None
            for _ in range(self.restarts):
                x_adv = self._run(model, x, y, eps)
                if self.restarts == 1:
                    return x_adv
                loss, _, _ = loss_and_grad(model, x_adv, y, need_grad=False)
                if best_loss is None:
                    best, best_loss = x_adv, loss
                    continue
                better = loss > best_loss
                best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
                best_loss = torch.where(better, loss, best_loss)
            return best

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        x_adv = self.threat.random_init(x, eps) if self.random_start else x.clone()
        step = self.rel_step_size * eps
        for _ in range(self.num_steps):
            _, grad, _ = loss_and_grad(model, x_adv, y)
            x_adv = self.threat.project(x_adv + step * self.threat.ascent(grad), x, eps)
        return x_adv.detach()
