"""Single-step training attacks: FGSM with a random start and N-FGSM.

Both cost one forward and one backward pass per example (a 7-step APGD costs eight), so a training budget
buys several times more robust optimiser steps. Plain FGSM training is known to overfit catastrophically
(the model learns to defeat the one-step attack and stays breakable by a multi-step one); the trainer's
overfitting monitor (``robustft.train.monitor``) watches for that.

- **FGSM-RS** (Wong et al., 2020, "Fast is better than free"): start from a uniform point of the ε-ball,
  take one signed step of ``rel_step_size`` × ε (1.25 in the paper), project back to the ε-ball ∩ [0, 1].
  It keeps the attack contract: the result lies in the ε-ball.
- **N-FGSM** (de Jorge et al., 2022, "Make some noise"): add uniform noise in [−kε, kε] (k =
  ``noise_mult``, 2 by default), take one signed step of ``rel_step_size`` × ε (1 by default) and **do
  not** project back to the ε-ball, only clip to [0, 1]. By design its points reach up to (k + 1)·ε in
  ℓ∞: the larger noise is what prevents catastrophic overfitting without a multi-step attack. It is a
  training attack only; it breaks the ε-ball guarantee of the attack contract and is never used to report
  robustness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad
from robustft.attacks.threat import Linf, ThreatModel
from robustft.errors import ConfigError


@dataclass
class FGSM:
    """FGSM with a random start (FGSM-RS): one signed gradient step from a uniform point of the ε-ball.

    Args:
        rel_step_size: the step as a fraction of ε (Wong et al. use 1.25).
        random_start: start from a uniform point of the ball (False: plain FGSM from ``x``).
        threat: the norm ball.
    """

    rel_step_size: float = 1.25
    random_start: bool = True
    threat: ThreatModel = field(default_factory=Linf)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        with crafting(model):
            x0 = self.threat.random_init(x, eps) if self.random_start else x.clone()
            _, grad, _ = loss_and_grad(model, x0, y)
            return self.threat.project(x0 + self.rel_step_size * eps * self.threat.ascent(grad), x, eps).detach()


@dataclass
class NFGSM:
    """N-FGSM: a signed gradient step of ``rel_step_size`` × ε from ``x`` plus uniform noise in [−kε, kε],
    clipped to [0, 1] but **not** projected to the ε-ball (ℓ∞ only; see the module docstring).

    Args:
        noise_mult: k, the noise's half-width as a multiple of ε (de Jorge et al. use 2).
        rel_step_size: the step as a fraction of ε (de Jorge et al. use 1).
    """

    noise_mult: float = 2.0
    rel_step_size: float = 1.0

    def __post_init__(self) -> None:
        if self.noise_mult < 0:
            raise ConfigError(f"N-FGSM noise_mult must be >= 0, got {self.noise_mult}")

    @property
    def max_radius(self) -> float:
        """The largest ℓ∞ distance from ``x`` of a returned point, as a multiple of ε."""
        return self.noise_mult + self.rel_step_size

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        with crafting(model):
            x0 = (x + torch.empty_like(x).uniform_(-self.noise_mult * eps, self.noise_mult * eps)).clamp_(0.0, 1.0)
            _, grad, _ = loss_and_grad(model, x0, y)
            return (x0 + self.rel_step_size * eps * grad.sign()).clamp_(0.0, 1.0).detach()
