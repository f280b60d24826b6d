"""Threat-model algebra: random start, ascent direction and projection for each norm ball.

Every attack is written against this small interface, so adding a norm means adding a class here.
All points returned by ``project`` lie in the ε-ball around ``x`` intersected with the [0, 1] box.
"""

from __future__ import annotations

from typing import Protocol

import torch

from robustft.attacks.base import per_example
from robustft.errors import ConfigError


class ThreatModel(Protocol):
    """The operations an iterative attack needs from a norm ball."""

    name: str

    def random_init(self, x: torch.Tensor, eps: float) -> torch.Tensor: ...

    def ascent(self, grad: torch.Tensor) -> torch.Tensor: ...

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor: ...


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return per_example(t.flatten(1).norm(dim=1), t)


class Linf:
    """ℓ∞ ball: steps along sign(∇), projection by clipping each pixel."""

    name = "linf"

    def random_init(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """A point drawn uniformly from the ε-box around ``x``, clipped to [0, 1]."""
        return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0.0, 1.0)

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        """Steepest-ascent direction of unit ℓ∞ norm."""
        return grad.sign()

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Closest point of the ε-box ∩ [0, 1] (exact for ℓ∞)."""
        return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


class L2:
    """ℓ2 ball: steps along ∇/‖∇‖, projection by rescaling δ, then clipping to [0, 1]."""

    name = "l2"

    def random_init(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """A point drawn uniformly from the ε-ball around ``x``, clipped to [0, 1]."""
        direction = torch.randn_like(x)
        direction = direction / _flat_norm(direction).clamp_min(1e-12)
        radius = eps * torch.rand(x.shape[0], device=x.device).pow(1.0 / x[0].numel())
        return (x + direction * per_example(radius, x)).clamp_(0.0, 1.0)

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        """Steepest-ascent direction of unit ℓ2 norm."""
        return grad / _flat_norm(grad).clamp_min(1e-12)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Rescale δ into the ε-ball, then clip to [0, 1] (clipping never increases ‖δ‖₂)."""
        delta = x_adv - x
        scale = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta * scale).clamp_(0.0, 1.0)


THREAT_MODELS: dict[str, type] = {"linf": Linf, "l2": L2}


def build_threat_model(norm: str) -> ThreatModel:
    """The threat model for ``linf`` or ``l2``."""
    if norm not in THREAT_MODELS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of {sorted(THREAT_MODELS)}")
    return THREAT_MODELS[norm]()
