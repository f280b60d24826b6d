"""AutoAttack (Croce & Hein, 2020) through its reference implementation, ``pyautoattack``.

Wrapped in robustft's attack contract: pixel-space ``attack(model, x, y, eps) -> x_adv`` inside the ball,
eval mode and frozen parameters while it runs, ``eps == 0`` is the identity. Its seed is drawn from the
caller's torch generator, so a seeded evaluation is reproducible, and the caller's random state is
left as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from robustft.attacks.base import crafting
from robustft.attacks.threat import build_threat_model
from robustft.errors import ConfigError, MissingDependencyError

# the reference logs its set-up at INFO on every call; keep its warnings, drop the chatter
if logging.getLogger("auto-attack").level == logging.NOTSET:
    logging.getLogger("auto-attack").setLevel(logging.WARNING)

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
_NORMS = {"linf": "Linf", "l2": "L2"}


@dataclass
class AutoAttack:
    """The reference AutoAttack, or some of its attacks.

    Args:
        components: empty for the standard version (APGD-CE, APGD-T, FAB-T with 100 iterations and 9
            target classes, then Square with 5000 queries); otherwise the reference attacks to run, in
            order, each only on the examples still robust (a subset of ``COMPONENTS``).
        num_steps: iterations of APGD-CE / APGD-DLR / APGD-T when ``components`` is given (None: 100).
        restarts: restarts of APGD-CE / APGD-DLR when ``components`` is given (the standard version uses 1).
        square_queries: queries of Square when ``components`` is given (None: 5000).
        norm: ``linf`` or ``l2``.
    """

    components: tuple[str, ...] = ()
    num_steps: int | None = None
    restarts: int = 1
    square_queries: int | None = None
    norm: str = "linf"

    def __post_init__(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown:
            raise ConfigError(f"unknown AutoAttack component(s) {unknown}; choose from {COMPONENTS}")
        if self.norm not in _NORMS:
            raise ConfigError(f"AutoAttack norm must be linf or l2, got {self.norm!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        devices = [x.device] if x.device.type == "cuda" else []
        with crafting(model), torch.random.fork_rng(devices=devices):
            reference = self._reference(_ZeroGradientPath(model).eval(), x, eps, seed)
            x_adv, _ = reference.run_standard_evaluation(x, y, batch_size=len(x))
        return build_threat_model(self.norm).project(x_adv.to(x.device), x, eps)

    def _reference(self, model: nn.Module, x: torch.Tensor, eps: float, seed: int):
        """A configured ``pyautoattack.AutoAttack``."""
        try:
            from pyautoattack import AutoAttack as Reference
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise MissingDependencyError("AutoAttack needs the pyautoattack package: pip install pyautoattack") from err
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        if self.components:
            aa = Reference(model, norm=_NORMS[self.norm], eps=eps, version="custom", attacks=list(self.components),
                           seed=seed, device=x.device)
            for apgd in (aa.apgd, aa.apgd_targeted):
                _set_iterations(apgd, self.num_steps or 100)
            aa.apgd.n_restarts = self.restarts  # the custom version would otherwise keep 5
            aa.square.n_queries = self.square_queries or 5000
        else:
            aa = Reference(model, norm=_NORMS[self.norm], eps=eps, version="standard", seed=seed, device=x.device)
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = min(9, classes - 1)
        return aa


class _ZeroGradientPath(nn.Module):
    """``model`` as the reference sees it: where the output has no gradient path to the input (a forward that
    detaches x), a zero term joins them, so the reference's gradient attacks get a zero input gradient rather
    than an autograd error, as robustft's own attacks do (robustft.attacks.base.input_gradient)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if x.requires_grad and not out.requires_grad:
            out = out + 0.0 * x.flatten(1).sum(1, keepdim=True)
        return out


def _set_iterations(apgd, n: int) -> None:
    """Set a reference APGD's iterations and the checkpoint lengths it derives from them."""
    apgd.n_iter = apgd.n_iter_orig = n
    apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
