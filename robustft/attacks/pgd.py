"""Projected gradient descent (Madry et al.) with random start and restarts; step size relative to ε."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad, per_example
from robustft.attacks.threat import Linf, ThreatModel


@dataclass
class PGD:
    """PGD on the cross-entropy loss.

    Args:
        num_steps: gradient steps per restart.
        rel_step_size: step size as a fraction of ε, so one config serves a whole ε grid or schedule.
        random_start: start from a uniform point of the ball instead of ``x``.
        restarts: independent runs; per example a fooling run is kept, else the highest final loss.
        select: ``max_loss`` (the last iterate, for training) or ``misclassified`` (for evaluation: any
            misclassified iterate counts).
        threat: the norm ball.
    """

    num_steps: int = 10
    rel_step_size: float = 0.25
    random_start: bool = True
    restarts: int = 1
    select: str = "max_loss"
    threat: ThreatModel = field(default_factory=Linf)

    def __post_init__(self) -> None:
        if self.select not in ("max_loss", "misclassified"):
            raise ValueError(f"PGD select must be max_loss or misclassified, got {self.select!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        with crafting(model):
            if self.restarts == 1 and self.select == "max_loss":
                return self._run(model, x, y, eps)[0]
            best, best_loss, fooled = None, None, None
            for _ in range(self.restarts):
                x_adv, loss, wrong = self._run(model, x, y, eps)
                if best is None:
                    best, best_loss, fooled = x_adv, loss, wrong
                    continue
                take = (wrong & ~fooled) | ((wrong == fooled) & (loss > best_loss))
                best = torch.where(per_example(take, x), x_adv, best)
                best_loss, fooled = torch.where(take, loss, best_loss), fooled | wrong
            return best

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One run: (point, its loss, misclassified); with ``select="misclassified"`` the point is the
        first misclassified iterate where there is one. Loss and flag are None for a lone max-loss run."""
        x_adv = self.threat.random_init(x, eps) if self.random_start else x.clone()
        step = self.rel_step_size * eps
        keep = self.select == "misclassified"
        fooled = torch.zeros_like(y, dtype=torch.bool)
        x_fooled = x_adv
        for _ in range(self.num_steps):
            _, grad, logits = loss_and_grad(model, x_adv, y)
            if keep:
                new = (logits.argmax(1) != y) & ~fooled
                x_fooled, fooled = torch.where(per_example(new, x), x_adv, x_fooled), fooled | new
            x_adv = self.threat.project(x_adv + step * self.threat.ascent(grad), x, eps).detach()
        if self.restarts == 1 and not keep:
            return x_adv, None, None
        loss, _, logits = loss_and_grad(model, x_adv, y, need_grad=False)
        wrong = logits.argmax(1) != y
        if keep:
            x_adv = torch.where(per_example(fooled & ~wrong, x), x_fooled, x_adv)
            wrong = wrong | fooled
        return x_adv, loss, wrong
