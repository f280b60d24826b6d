"""FMN, the Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021, arXiv 2102.12827), for ℓ∞ and ℓ2.

A fixed-ε attack asks "is there a misclassified point within ε?"; FMN asks "how close is the nearest
misclassified point?" and answers it for every ε at once. Per example it minimises ‖δ‖ subject to
misclassification by alternating two moves:

- **radius**: a per-example bound ε_k on ‖δ‖. Once the current point is misclassified the bound shrinks,
  ε_k = min(ε_{k−1}(1 − γ_k), ‖δ*‖) with δ* the smallest misclassified perturbation so far; while it is
  not, the bound grows, ε_k = ε_{k−1}(1 + γ_k). Until a first misclassified point is found the bound is the
  first-order estimate of the distance to the decision boundary, ‖δ‖ + |L| / ‖∇L‖_dual (the dual norm of
  ℓ∞ is ℓ1, that of ℓ2 is ℓ2), but at least (1 + γ_k)‖δ‖. That floor is not in the paper: on a (locally)
  linear model the estimate puts the iterate exactly on the boundary, where float rounding of x + δ can
  leave it a hair short, L a hair above 0 and the estimate unchanged, a fixed point that never finds an
  adversarial point. The bound never exceeds the largest distance possible inside [0, 1].
- **step**: a gradient step of length α_k down the logit margin L = z_y − max_{j≠y} z_j (negative once
  the example is misclassified), along the ℓ2-normalised gradient, then projection onto the ε_k-ball and
  clipping to [0, 1].

Step length α and radius factor γ follow cosine annealing from their initial to their final values. There
is no early exit: after finding a misclassified point FMN keeps shrinking the bound towards the boundary.
The search is local: the margin's gradient leads to the boundary of the runner-up class, which need not be
the nearest one, so a radius is an upper bound on the true minimal distance.
The result (:meth:`FMN.min_norm`) is per example the smallest-norm misclassified point seen and its
distance; :meth:`FMN.__call__` projects it into an ε-ball to keep the fixed-ε attack contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from robustft.attacks.base import crafting, loss_and_grad, per_example
from robustft.attacks.threat import Linf, ThreatModel
from robustft.errors import ConfigError

_DUAL = {"linf": "l1", "l2": "l2"}
"""The dual norm of each supported threat model's norm."""
_ALPHA_INIT = {"linf": 10.0, "l2": 1.0}
"""The paper's initial step length per norm (the step is along the ℓ2-normalised gradient)."""


def margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """z_y − max_{j≠y} z_j: the logit margin of the true class, negative once the example is misclassified."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - others.max(1).values


def norm(t: torch.Tensor, p: str) -> torch.Tensor:
    """Per-example ``p``-norm (``linf``, ``l2`` or ``l1``) of ``t`` [B, ...], flattened, in float: [B]."""
    flat = t.flatten(1).float()
    if p == "linf":
        return flat.abs().amax(1)
    if p == "l2":
        return flat.norm(dim=1)
    if p == "l1":
        return flat.abs().sum(1)
    raise ValueError(f"unknown norm {p!r}")


@dataclass
class FMN:
    """The Fast Minimum-Norm attack, untargeted, on the logit margin (see the module docstring).

    Args:
        steps: iterations (one forward and backward pass each, plus one forward at the end).
        alpha_init: initial step length along the ℓ2-normalised gradient; None: 10 for ℓ∞, 1 for ℓ2.
        alpha_final: final step length; None: ``alpha_init`` / 100.
        gamma_init: initial relative change of the radius per step.
        gamma_final: final relative change of the radius per step.
        threat: the norm (``Linf`` or ``L2``).
    """

    steps: int = 100
    alpha_init: float | None = None
    alpha_final: float | None = None
    gamma_init: float = 0.05
    gamma_final: float = 0.001
    threat: ThreatModel = field(default_factory=Linf)

    def __post_init__(self) -> None:
        if self.threat.name not in _DUAL:
            raise ConfigError(f"FMN supports the norms {sorted(_DUAL)}, got {self.threat.name!r}")
        if self.steps < 0:
            raise ConfigError(f"FMN steps must be >= 0, got {self.steps}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """The attack contract (:class:`robustft.attacks.base.Attack`): :meth:`min_norm`'s point projected
        into the ε-ball ∩ [0, 1] (unchanged where its radius is at most ε); ``eps == 0`` or an empty ``x``
        returns ``x`` without running the model."""
        if eps == 0 or len(x) == 0:
            return x
        x_adv, radius = self.min_norm(model, x, y)
        inside = per_example(radius <= eps, x)
        return torch.where(inside, x_adv, self.threat.project(x_adv, x, eps))

    def min_norm(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv, radius): per example the smallest-norm misclassified point found and its distance to ``x``
        in the threat model's norm; where none was found, ``x`` itself and +inf. Examples misclassified at
        ``x`` itself get radius 0.

        The radius is recomputed from the returned point, and a final forward pass confirms that every
        returned point with a finite radius is misclassified (a row where it is not is reported as not found).
        """
        x = x.detach()
        if len(x) == 0:
            return x, torch.empty(0, device=x.device)
        with crafting(model):
            x_best, found = self._search(model, x, y)
            with torch.no_grad():
                wrong = model(x_best).argmax(1) != y
        ok = found & wrong
        x_adv = torch.where(per_example(ok, x), x_best, x)
        radius = torch.where(ok, norm(x_adv - x, self.threat.name), float("inf"))
        return x_adv, radius

    def _alphas(self) -> tuple[float, float]:
        """(initial, final) step length, with the defaults resolved for the norm."""
        start = self.alpha_init if self.alpha_init is not None else _ALPHA_INIT[self.threat.name]
        end = self.alpha_final if self.alpha_final is not None else start / 100
        return start, end

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The FMN iterations: (smallest misclassified point seen, else x; whether one was seen) per example."""
        p = self.threat.name
        alpha_init, alpha_final = self._alphas()
        n, device = len(x), x.device
        inf = torch.full((n,), float("inf"), device=device)
        radius, best = inf.clone(), inf.clone()
        found = torch.zeros(n, dtype=torch.bool, device=device)
        box = norm(torch.maximum(x, 1 - x), p)  # the largest distance from x inside [0, 1]
        x_adv, x_best = x.clone(), x.clone()
        for k in range(self.steps + 1):
            last = k == self.steps  # the final iterate is evaluated, not stepped from
            loss, grad, logits = loss_and_grad(model, x_adv, y, need_grad=not last, loss_fn=margin)
            adv = logits.argmax(1) != y
            dist = norm(x_adv - x, p)
            better = adv & (dist < best)
            best = torch.where(better, dist, best)
            x_best = torch.where(per_example(better, x), x_adv, x_best)
            found |= adv
            if grad is None:
                break
            cos = (1 + math.cos(math.pi * k / self.steps)) / 2
            alpha = alpha_final + (alpha_init - alpha_final) * cos
            gamma = self.gamma_final + (self.gamma_init - self.gamma_final) * cos
            estimate = dist + loss.float().abs() / norm(grad, _DUAL[p]).clamp_min(1e-12)
            estimate = torch.maximum(estimate, dist * (1 + gamma))  # no fixed point on the boundary
            radius = torch.where(adv, torch.minimum(radius * (1 - gamma), best),
                                 torch.where(found, radius * (1 + gamma), estimate))
            radius = torch.minimum(radius, box)
            x_adv = self._step(x, x_adv, grad, alpha, radius)
        return x_best, found

    def _step(self, x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor, alpha: float,
              radius: torch.Tensor) -> torch.Tensor:
        """δ − α ∇/‖∇‖₂, projected onto the per-example ``radius``-ball and clipped to [0, 1]; rows whose
        gradient is zero everywhere stay where they are."""
        g_norm = norm(grad, "l2")
        scale = per_example(alpha / g_norm.clamp_min(1e-12), x).to(x.dtype)
        delta = self._project(x_adv - x - scale * grad, radius)
        moved = (x + delta).clamp_(0.0, 1.0)
        return torch.where(per_example(g_norm > 0, x), moved, x_adv)

    def _project(self, delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """``delta`` projected onto the ball of per-example ``radius`` [B] (ℓ∞: clamp; ℓ2: rescale)."""
        if self.threat.name == "linf":
            r = per_example(radius, delta).to(delta.dtype)
            return torch.maximum(torch.minimum(delta, r), -r)
        shrink = (radius / norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        return delta * per_example(shrink, delta).to(delta.dtype)
