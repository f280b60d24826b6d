"""The objective contract: ``objective(model, x, y, eps) -> ObjectiveOutput``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn


@dataclass
class ObjectiveOutput:
    """A training loss and the logits it came from.

    Attributes:
        loss: scalar to minimise.
        logits_clean: logits on clean inputs, when the objective computed them.
        logits_adv: logits on attacked inputs, when the objective attacked (None while ε = 0).
        parts: named scalar components, for logging.
        x_adv: the attacked inputs, when the objective attacked (carried to the next epoch by ``attack.carry``).
    """

    loss: torch.Tensor
    logits_clean: torch.Tensor | None = None
    logits_adv: torch.Tensor | None = None
    parts: dict[str, float] = field(default_factory=dict)
    x_adv: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        """The logits the loss was computed on (adversarial when present)."""
        out = self.logits_adv if self.logits_adv is not None else self.logits_clean
        assert out is not None, "an objective must return at least one set of logits"
        return out


class Objective(Protocol):
    """Computes a loss on a batch; owns its attack; never steps the optimiser or changes the model's mode."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> ObjectiveOutput: ...
