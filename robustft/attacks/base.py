"""What every attack shares: the calling contract and a crafting context that leaves the model as it was."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Literal, Protocol, overload

import torch
from torch import nn

from robustft.attacks.losses import Loss, ce
from robustft.models.fold import FoldedCopy, NotFoldableError, conv_bn_pairs
from robustft.models.modes import modes_kept

log = logging.getLogger(__name__)


class Attack(Protocol):
    """``attack(model, x, y, eps) -> x_adv`` in pixel space.

    ``x_adv`` lies in the ε-ball around ``x`` intersected with [0, 1]; gradients are taken w.r.t. the
    input only; ``model.training`` and every parameter's ``.grad`` are left as they were; ``eps == 0``
    returns ``x`` without running the model.

    An attack whose class sets ``accepts_start = True`` (:class:`WarmStartable`) also takes
    ``x_init=``: a starting point, projected into the ball when it lies outside (the evaluator's warm
    starts across an ε grid use it).
    """

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor: ...


class WarmStartable(Protocol):
    """An attack that can start from a given point: ``attack(model, x, y, eps, x_init=None)``."""

    accepts_start: bool

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 x_init: torch.Tensor | None = None) -> torch.Tensor: ...


def accepts_start(attack: object) -> bool:
    """Whether ``attack`` takes a starting point (``x_init``)."""
    return bool(getattr(attack, "accepts_start", False))


class MinNormAttack(Protocol):
    """A minimum-norm attack: ``attack.min_norm(model, x, y) -> (x_adv, radius)``, per example the
    smallest-norm misclassified point found and its distance to ``x`` (+inf where none was found, 0 where
    ``x`` itself is misclassified). It also keeps the :class:`Attack` contract at a fixed ε."""

    def min_norm(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor: ...


def is_min_norm(attack: object) -> bool:
    """Whether ``attack`` is a minimum-norm attack (has ``min_norm``): the evaluator runs it once per
    example instead of once per ε."""
    return callable(getattr(attack, "min_norm", None))


@contextlib.contextmanager
def crafting(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters while crafting; both restored on exit, even on error.

    Freezing the parameters means autograd neither computes nor stores anything for weight gradients,
    so an attack step costs about half a training step, and ``.grad`` is never touched.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    with modes_kept(model):
        model.eval()
        for p in frozen:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                yield
        finally:
            for p in frozen:
                p.requires_grad_(True)


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` of shape [B] viewed as [B, 1, 1, ...] to broadcast against ``like`` [B, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss.sum()`` w.r.t. ``x``: zero where the loss has no gradient path to ``x`` (a forward
    that detaches its input or runs without autograd), so a gradient attack stays where it is instead of
    autograd raising; the ``input_gradients`` check reports such a model."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    grad = torch.autograd.grad(loss.sum(), x, allow_unused=True)[0]
    return torch.zeros_like(x) if grad is None else grad


@overload
def loss_and_grad(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, need_grad: Literal[True] = ..., loss_fn: Loss = ...,
    target: torch.Tensor | None = ...,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
@overload
def loss_and_grad(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, need_grad: bool, loss_fn: Loss = ...,
    target: torch.Tensor | None = ...,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]: ...
def loss_and_grad(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, need_grad: bool = True, loss_fn: Loss = ce,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-example loss at ``x_adv`` (cross-entropy unless ``loss_fn``), its gradient w.r.t. ``x_adv``
    (or None; zero without a gradient path, see :func:`input_gradient`), and the logits."""
    x_adv = x_adv.detach().requires_grad_(need_grad)
    logits = model(x_adv)
    loss = loss_fn(logits, y, target)
    grad = input_gradient(loss, x_adv) if need_grad else None
    return loss.detach(), grad, logits.detach()


class FullPrecision:
    """Runs an attack with autocast off, so the input gradients of a mixed-precision (bf16) training run are
    computed in fp32 and the attack is not weakened by rounding; without autocast it changes nothing."""

    def __init__(self, attack: Attack):
        self.attack = attack
        self.accepts_start = accepts_start(attack)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            if kwargs.get("x_init") is not None:
                kwargs["x_init"] = kwargs["x_init"].float()
            return self.attack(model, x.float(), y, eps, **kwargs)


class FoldedBatchNorm:
    """Runs an attack on a copy of the model with BatchNorm folded into the convolutions
    (:class:`robustft.models.fold.FoldedCopy`, refreshed from the model's current weights at every call). An
    attack runs in eval mode, where the copy computes the model's function up to float rounding, at about
    0.85–0.9× the cost of a pass through the unfolded model (BENCHMARKS.md). A model that does not fold is attacked as
    it is (logged once), and so is one without BatchNorm after a convolution."""

    def __init__(self, attack: Attack):
        self.attack = attack
        self.accepts_start = accepts_start(attack)
        if is_min_norm(attack):
            self.min_norm = self._min_norm
        self._copy: FoldedCopy | None = None
        self._source: nn.Module | None = None
        self._unfoldable: set[int] = set()

    def folded(self, model: nn.Module, x: torch.Tensor) -> nn.Module:
        """The folded copy of ``model`` with its current weights, or ``model`` when it does not fold."""
        if id(model) in self._unfoldable:
            return model
        if self._source is not model:
            if not conv_bn_pairs(model):  # nothing to fold: attack the model itself
                self._unfoldable.add(id(model))
                return model
            try:
                self._copy, self._source = FoldedCopy(model, x), model
            except NotFoldableError as err:
                log.warning("%s; its attack runs on the unfolded model", err)
                self._unfoldable.add(id(model))
                return model
        assert self._copy is not None
        return self._copy()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> torch.Tensor:
        if eps == 0 or len(x) == 0:
            return x
        return self.attack(self.folded(model, x), x, y, eps, **kwargs)

    def _min_norm(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The minimum-norm attack's points and radii on the folded copy, each radius kept only where ``model``
        itself misclassifies the point (+inf elsewhere, as for a point not found)."""
        x_adv, radius = self.attack.min_norm(self.folded(model, x), x, y)  # type: ignore[attr-defined]
        with modes_kept(model), torch.no_grad():
            model.eval()
            wrong = model(x_adv).argmax(1) != y
        return x_adv, torch.where(wrong, radius, torch.full_like(radius, float("inf")))
