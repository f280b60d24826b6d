"""Projected gradient descent (Madry et al.) with random start and restarts; step size relative to ε.

The loss is cross-entropy, or (``loss="kl"``) the KL divergence from the clean prediction, TRADES'
inner maximisation, which starts from ``x`` plus a little Gaussian noise (``start_noise``: at ``x``
itself the KL gradient is zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad, per_example
from robustft.attacks.losses import LOSSES
from robustft.attacks.threat import Linf, ThreatModel
from robustft.errors import ConfigError


@dataclass
class PGD:
    """PGD on the cross-entropy (or KL) loss.

    Args:
        num_steps: gradient steps per restart.
        rel_step_size: step size as a fraction of ε, so one config serves a whole ε grid or schedule.
        random_start: start from a uniform point of the ball instead of ``x``.
        restarts: independent runs; per example a fooling run is kept, else the highest final loss.
        select: ``max_loss`` (the last iterate, for training) or ``misclassified`` (for evaluation: any
            misclassified iterate counts).
        threat: the norm ball.
        loss: ``ce``, or ``kl`` (divergence from the model's clean prediction; TRADES).
        start_noise: without ``random_start``, the standard deviation (pixel units) of Gaussian noise
            added to ``x`` at the start (TRADES uses 0.001).
    """

    accepts_start: ClassVar[bool] = True
    """Takes ``x_init`` (a warm start): the first run starts there, further restarts as configured."""

    num_steps: int = 10
    rel_step_size: float = 0.25
    random_start: bool = True
    restarts: int = 1
    select: str = "max_loss"
    threat: ThreatModel = field(default_factory=Linf)
    loss: str = "ce"
    start_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.select not in ("max_loss", "misclassified"):
            raise ConfigError(f"PGD select must be max_loss or misclassified, got {self.select!r}")
        if self.loss not in ("ce", "kl"):
            raise ConfigError(f"PGD loss must be ce or kl, got {self.loss!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 x_init: torch.Tensor | None = None) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        if x_init is not None and x_init.shape != x.shape:
            raise ValueError(f"x_init must have the shape of x, {tuple(x.shape)}; got {tuple(x_init.shape)}")
        with crafting(model):
            ref = self._reference(model, x)
            if self.restarts == 1 and self.select == "max_loss":
                return self._ascend(model, x, y, eps, ref, x_init)[0]
            best, best_loss, fooled = self._run(model, x, y, eps, ref, x_init)
            for _ in range(self.restarts - 1):
                x_adv, loss, wrong = self._run(model, x, y, eps, ref)
                take = (wrong & ~fooled) | ((wrong == fooled) & (loss > best_loss))
                best = torch.where(per_example(take, x), x_adv, best)
                best_loss, fooled = torch.where(take, loss, best_loss), fooled | wrong
            return best

    def _reference(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The clean logits the KL loss compares against (None for cross-entropy)."""
        if self.loss != "kl":
            return None
        with torch.no_grad():
            return model(x)

    def _start(self, x: torch.Tensor, eps: float, x_init: torch.Tensor | None = None) -> torch.Tensor:
        if x_init is not None:
            return self.threat.project(x_init.detach().to(x), x, eps)
        if self.random_start:
            return self.threat.random_init(x, eps)
        if self.start_noise > 0:
            return self.threat.project(x + self.start_noise * torch.randn_like(x), x, eps)
        return x.clone()

    def _ascend(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, ref: torch.Tensor | None,
                x_init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gradient steps of one run: (last iterate, first misclassified iterate, ever misclassified); the
        last two are tracked with ``select="misclassified"`` only (otherwise they stay the start and all False)."""
        x_adv = self._start(x, eps, x_init)
        step = self.rel_step_size * eps
        keep = self.select == "misclassified"
        fooled = torch.zeros_like(y, dtype=torch.bool)
        x_fooled = x_adv
        loss_fn = LOSSES[self.loss]
        for _ in range(self.num_steps):
            _, grad, logits = loss_and_grad(model, x_adv, y, loss_fn=loss_fn, target=ref)
            if keep:
                new = (logits.argmax(1) != y) & ~fooled
                x_fooled, fooled = torch.where(per_example(new, x), x_adv, x_fooled), fooled | new
            x_adv = self.threat.project(x_adv + step * self.threat.ascent(grad), x, eps).detach()
        return x_adv, x_fooled, fooled

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, ref: torch.Tensor | None,
             x_init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run (from ``x_init`` if given): (point, its loss, misclassified); with
        ``select="misclassified"`` the point is the first misclassified iterate where there is one."""
        x_adv, x_fooled, fooled = self._ascend(model, x, y, eps, ref, x_init)
        loss_fn = LOSSES[self.loss]
        loss, _, logits = loss_and_grad(model, x_adv, y, need_grad=False, loss_fn=loss_fn, target=ref)
        wrong = logits.argmax(1) != y
        if self.select == "misclassified":
            x_adv = torch.where(per_example(fooled & ~wrong, x), x_fooled, x_adv)
            wrong = wrong | fooled
        return x_adv, loss, wrong
