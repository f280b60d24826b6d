"""Sanity checks against false robustness, run on every evaluation and written into its result.

Each check returns a :class:`Flag`; ``raised`` is True when the check found a problem, False when it
passed and None when it does not apply. What each one catches:

- ``eval_mode``: modules still in training mode after ``model.eval()`` (BatchNorm statistics moving,
  dropout active).
- ``deterministic``: two forward passes on the same batch differ (dropout left on, a randomised defence):
  attacks then chase noise.
- ``eps0_is_clean``: the ε = 0 row of the evidence differs from predictions recomputed in other batches
  and another order (batch-dependent outputs, BatchNorm in training mode, randomness).
- ``logits``: outputs look like probabilities or log-probabilities; cross-entropy attacks on them get
  vanishing gradients.
- ``constant_predictions``: (nearly) all clean predictions on the evaluated set are one class although the
  labels are not: the model collapsed (e.g. diverged training), and its robustness numbers are meaningless.
- ``input_gradients``: examples whose input gradient of the cross-entropy is exactly zero (saturated
  softmax, non-differentiable layers, a forward that detaches its input): gradient attacks cannot move them.
- ``monotone``: an independent-mode curve rises with ε (the attack got weaker as the ball grew).
- ``black_box``: the black-box Square attack alone beats the white-box evaluation at ε_g on a subset by
  more than ``tol`` (gradient masking).
- ``converged``: APGD-CE with ``long_steps`` iterations (AutoAttack's budget) at ε_g breaks more than
  ``tol`` of a subset the evaluation left standing: its attacks had not converged, and its
  numbers overstate robustness.
- ``autoattack`` (only with ``autoattack_n`` > 0, e.g. the ``curve`` preset): the reference AutoAttack at
  ε_g on a subset breaks more than ``autoattack_tol`` of what the evaluation left standing there: the
  evaluation's curve is not AutoAttack-grade.
- ``large_eps``: accuracy under APGD-CE at a very large ε (0.5 in ℓ∞: enough to turn any image into
  grey) stays above ``large_eps_max_accuracy``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import APGD, Attack, AutoAttack, build_threat_model, crafting
from robustft.attacks.base import input_gradient
from robustft.config import EvalConfig, format_eps
from robustft.data import ImageSource, eval_batches
from robustft.eval.result import Flag, RobustnessResult
from robustft.models.modes import modes_kept

log = logging.getLogger(__name__)


@dataclass
class SanityChecks:
    """The checks of the module docstring, with their budgets and thresholds.

    Args:
        n: examples (an even spread over the evaluated set) for the black-box and large-ε checks.
        square_queries: queries of the Square attack in the black-box check.
        large_eps: radius of the large-ε check; None: 0.5 in ℓ∞, 0.5·√d in ℓ2 (d = input size).
        large_eps_max_accuracy: accuracy above which the large-ε check is raised.
        constant_share: fraction of the clean predictions in one class at or above which the
            constant-prediction check is raised.
        long_steps: iterations of the APGD-CE run of the convergence check.
        tol: accuracy gap (a fraction of the subset) above which the black-box and convergence checks are
            raised; smaller gaps on a 100-example subset are within noise.
        norm: the threat model of every check, ``linf`` or ``l2``; None: the evaluation's (its protocol's
            ``norm``, which :func:`robustft.eval.evaluate` records), so the checks attack in the evaluation's
            norm whatever its attacks are.
        autoattack_n: examples (an even spread) on which the standard AutoAttack runs at ε_g; 0: no check.
        autoattack_tol: accuracy gap to AutoAttack above which the ``autoattack`` check is raised.
    """

    n: int = 100
    square_queries: int = 1000
    large_eps: float | None = None
    large_eps_max_accuracy: float = 0.1
    constant_share: float = 0.99
    long_steps: int = 100
    tol: float = 0.03
    norm: str | None = None
    autoattack_n: int = 0
    autoattack_tol: float = 0.01

    def __call__(self, model: nn.Module, source: ImageSource, result: RobustnessResult, *,
                 device: torch.device, image_size: int, batch_size: int = 256) -> list[Flag]:
        """Run every check on ``model`` evaluated on ``source`` with evidence ``result``; the model runs in eval
        mode and is left in the modes it had."""
        if self.norm is None:
            return replace(self, norm=str(result.protocol.get("norm", "linf")))(
                model, source, result, device=device, image_size=image_size, batch_size=batch_size)
        with modes_kept(model):
            model.eval()
            return self._run(model, source, result, device, image_size, batch_size)

    @property
    def _norm(self) -> str:
        return self.norm or "linf"

    @classmethod
    def from_config(cls, e: EvalConfig, norm: str | None = None) -> "SanityChecks":
        """The checks an ``eval`` config section asks for (``check_n``, ``check_queries``, ``check_autoattack``
        or its preset's), in ``norm`` (None: the evaluation's); ``SanityChecks.from_config(EvalConfig())`` are
        the defaults of the config path and of :func:`robustft.eval.evaluate`."""
        return cls(n=e.check_n, square_queries=e.check_queries, norm=norm,
                   autoattack_n=e.settings.check_autoattack)

    def _run(self, model: nn.Module, source: ImageSource, result: RobustnessResult, device: torch.device,
             image_size: int, batch_size: int) -> list[Flag]:
        subset = np.unique(np.linspace(0, len(source) - 1, min(self.n, len(source))).round().astype(int))
        x, y = next(iter(eval_batches(source.subset(subset), image_size, len(subset))))
        x, y = x.to(device), y.to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(result.protocol.get("seed", 0)))
            preds = clean_predictions(model, source, device, image_size, batch_size)
            flags = [check_eval_mode(model), check_deterministic(model, x), check_logits(model, x),
                     check_eps0_is_clean(preds, result), check_constant_predictions(preds, result, self.constant_share),
                     check_input_gradients(model, x, y), check_monotone(result),
                     self.check_black_box(model, x, y, result, subset),
                     self.check_converged(model, x, y, result, subset), self.check_large_eps(model, x, y)]
            if self.autoattack_n > 0:
                flags.append(self.check_autoattack(model, source, result, device, image_size))
        for f in flags:
            (log.warning if f.raised else log.info)("check %s: %s", f.name, f.message)
        return flags

    def check_black_box(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, result: RobustnessResult,
                        subset: np.ndarray) -> Flag:
        """Square alone at ε_g on the subset versus the evaluation's worst case on the same examples."""
        eps = result.eps[-1]
        if eps == 0:
            return Flag("black_box", None, "ε_g = 0: nothing to attack")
        square = AutoAttack(components=("square",), square_queries=self.square_queries, norm=self._norm)
        black = _correct_after(model, square, x, y, eps)
        white = result.correct[-1, subset]
        beaten = int((white & ~black).sum())
        msg = (f"Square ({self.square_queries} queries) alone: {100 * black.mean():.1f} % vs the evaluation's "
               f"{100 * white.mean():.1f} % at ε={format_eps(eps)} on {len(subset)} examples; it broke {beaten} "
               "the evaluation's attacks did not")
        raised = more_than(int(white.sum()) - int(black.sum()), len(subset), self.tol)
        if raised:
            msg += ": the white-box attacks are weaker than a black-box one, a sign of gradient masking"
        return Flag("black_box", raised, msg, float(white.mean() - black.mean()))

    def check_converged(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, result: RobustnessResult,
                        subset: np.ndarray) -> Flag:
        """A much longer APGD-CE at ε_g on the subset must not break much of what the evaluation left standing."""
        eps = result.eps[-1]
        if eps == 0:
            return Flag("converged", None, "ε_g = 0: nothing to attack")
        attack = APGD(num_steps=self.long_steps, select="misclassified", threat=build_threat_model(self._norm))
        long = _correct_after(model, attack, x, y, eps)
        white = result.correct[-1, subset]
        drop = float(white.mean() - (white & long).mean())
        msg = (f"APGD-CE with {self.long_steps} steps at ε={format_eps(eps)} takes the accuracy on {len(subset)} "
               f"examples from {100 * white.mean():.1f} % to {100 * (white & long).mean():.1f} %")
        raised = more_than(int(white.sum()) - int((white & long).sum()), len(subset), self.tol)
        if raised:
            msg += (": the evaluation's attacks had not converged and its numbers overstate robustness; "
                    "evaluate with --attacks strong or more eval.num_steps")
        return Flag("converged", raised, msg, drop)

    def check_autoattack(self, model: nn.Module, source: ImageSource, result: RobustnessResult,
                         device: torch.device, image_size: int) -> Flag:
        """The standard AutoAttack at ε_g on ``autoattack_n`` examples versus the evaluation on the same ones."""
        eps = result.eps[-1]
        if eps == 0:
            return Flag("autoattack", None, "ε_g = 0: nothing to attack")
        subset = np.unique(np.linspace(0, len(source) - 1, min(self.autoattack_n, len(source))).round().astype(int))
        white = result.correct[-1, subset]
        standing = np.flatnonzero(white)  # AutoAttack only needs to try what the evaluation did not break
        reference = np.zeros(len(subset), dtype=bool)
        if len(standing):
            x, y = next(iter(eval_batches(source.subset(subset[standing]), image_size, len(standing))))
            reference[standing] = _correct_after(model, AutoAttack(norm=self._norm), x.to(device), y.to(device), eps)
        gap = float(white.mean() - reference.mean())
        msg = (f"AutoAttack (standard) at ε={format_eps(eps)} on {len(subset)} examples: {100 * reference.mean():.1f} % "
               f"vs the evaluation's {100 * white.mean():.1f} %")
        raised = more_than(int(white.sum()) - int(reference.sum()), len(subset), self.autoattack_tol)
        if raised:
            msg += (f", {100 * gap:.1f} points lower: the evaluation's curve overstates robustness; report "
                    "AutoAttack (--attacks strong) or strengthen the evaluation (eval.num_steps, eval.restarts)")
        return Flag("autoattack", raised, msg, gap)

    def check_large_eps(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Flag:
        """APGD-CE at a radius large enough to erase any image should leave almost nothing correct."""
        eps = self.large_eps or (0.5 if self._norm == "linf" else 0.5 * float(x[0].numel()) ** 0.5)
        attack = APGD(num_steps=10, select="misclassified", threat=build_threat_model(self._norm))
        acc = float(_correct_after(model, attack, x, y, eps).mean())
        raised = acc > self.large_eps_max_accuracy
        msg = f"accuracy {100 * acc:.1f} % under APGD-CE at ε={eps:.3g} ({self._norm})"
        if raised:
            msg += f", above {100 * self.large_eps_max_accuracy:.0f} %: the attack cannot find its way, or ε is " \
                   "in the wrong units (pixels in [0, 1] are expected)"
        return Flag("large_eps", raised, msg, acc)


def more_than(examples: int, n: int, tol: float) -> bool:
    """Whether ``examples`` of ``n`` are more than the fraction ``tol`` of them, decided on counts: an accuracy
    gap of exactly ``tol`` (1 example of 100 at 0.01) does not count as more, whatever the rounding of the
    difference of two means (0.26 − 0.25 is 0.010000000000000009 in floating point, 0.15 − 0.14 is
    0.009999999999999981)."""
    return examples > round(tol * n, 9)


def _correct_after(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, eps: float) -> np.ndarray:
    """Per example: still classified correctly after ``attack`` at ``eps``."""
    x_adv = attack(model, x, y, eps)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).cpu().numpy()


def check_eval_mode(model: nn.Module) -> Flag:
    training = [name or type(m).__name__ for name, m in model.named_modules() if m.training]
    if training:
        return Flag("eval_mode", True, f"{len(training)} module(s) still in training mode after model.eval(), "
                    f"e.g. {training[:3]}", float(len(training)))
    return Flag("eval_mode", False, "every module is in eval mode", 0.0)


def check_deterministic(model: nn.Module, x: torch.Tensor) -> Flag:
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item() + 1e-12
    if diff > 1e-5 * scale:
        return Flag("deterministic", True, f"two forward passes on the same inputs differ by up to {diff:.3g}: "
                    "dropout left on or a randomised model; attacks chase noise", diff)
    return Flag("deterministic", False, "repeated forward passes agree", diff)


def check_logits(model: nn.Module, x: torch.Tensor) -> Flag:
    with torch.no_grad():
        out = model(x).double()
    probs = out.min() >= -1e-5 and out.max() <= 1 + 1e-5 and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4)
    log_probs = out.max() <= 1e-5 and torch.allclose(out.logsumexp(1), torch.zeros_like(out[:, 0]), atol=1e-4)
    if probs or log_probs:
        kind = "probabilities" if probs else "log-probabilities"
        return Flag("logits", True, f"the model outputs look like {kind}, not logits: cross-entropy attacks "
                    "on them get vanishing gradients; remove the final softmax", 1.0)
    return Flag("logits", False, "the model outputs logits", 0.0)


def clean_predictions(model: nn.Module, source: ImageSource, device: torch.device, image_size: int,
                      batch_size: int) -> np.ndarray:
    """The predicted class of every example of ``source`` (in its order), computed in reverse order and in
    batches of another size than the evaluation's."""
    order = np.arange(len(source))[::-1].copy()
    size = max(1, batch_size // 2 - 1)
    preds = []
    with torch.no_grad():
        for xb, _ in eval_batches(source.subset(order), image_size, size):
            preds.append(model(xb.to(device)).argmax(1).cpu().numpy())
    out = np.empty(len(source), dtype=np.int64)
    out[order] = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    return out


def check_eps0_is_clean(preds: np.ndarray, result: RobustnessResult) -> Flag:
    """Clean predictions recomputed in reverse order and other batches (:func:`clean_predictions`) must match
    row 0 of the evidence exactly."""
    again = preds == result.labels
    differ = int((again != result.correct[0]).sum())
    if differ:
        return Flag("eps0_is_clean", True, f"{differ} example(s) change correctness when clean accuracy is "
                    "recomputed in other batches: outputs depend on the batch or on chance", float(differ))
    return Flag("eps0_is_clean", False, f"ε=0 row equals clean accuracy ({100 * again.mean():.1f} %) exactly", 0.0)


def check_constant_predictions(preds: np.ndarray, result: RobustnessResult, max_share: float = 0.99) -> Flag:
    """At least ``max_share`` of the clean predictions in one class, while the labels span several."""
    labels = np.unique(result.labels)
    if len(labels) < 2:
        return Flag("constant_predictions", None, "the evaluated examples all have one label: a constant "
                    "prediction cannot be told apart from a correct one")
    classes, counts = np.unique(preds, return_counts=True)
    top, share = int(classes[counts.argmax()]), float(counts.max() / len(preds))
    if share >= max_share:
        return Flag("constant_predictions", True, f"{100 * share:.1f} % of the {len(preds)} clean predictions are "
                    f"class {top} while the labels span {len(labels)} classes: the model collapsed to a constant "
                    "prediction, so its robustness numbers are meaningless (no attack can change its output); "
                    "check its training run for diverged weights (optim.lr too high)", share)
    return Flag("constant_predictions", False, f"clean predictions span {len(classes)} classes; the most frequent, "
                f"class {top}, takes {100 * share:.1f} %", share)


def check_input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Flag:
    with crafting(model):
        xg = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        grad = input_gradient(loss, xg)
    zero = int((grad.flatten(1).abs().sum(1) == 0).sum())
    if zero:
        why, fix = ("saturated softmax or a non-differentiable layer", "add apgd-t or square to the attacks")
        if not loss.requires_grad:
            why, fix = ("the model's output has no gradient path to its input: its forward detaches x or runs "
                        "without autograd", "only a black-box attack can test it: add square to the attacks")
        return Flag("input_gradients", True, f"{zero} of {len(y)} examples have an exactly zero input gradient: "
                    f"gradient attacks cannot move them ({why}); {fix}", zero / len(y))
    return Flag("input_gradients", False, f"input gradients are non-zero on all {len(y)} examples", 0.0)


def check_monotone(result: RobustnessResult) -> Flag:
    if result.protocol.get("mode") in ("incremental", "downward"):
        return Flag("monotone", None, f"{result.protocol['mode']} evaluation: monotone by construction")
    acc = np.asarray(result.accuracy)
    rise = np.diff(acc)
    if (rise > 0).any():
        e = int(rise.argmax())
        return Flag("monotone", True, f"accuracy rises with ε, by up to {100 * rise.max():.1f} points from "
                    f"ε={format_eps(result.eps[e])} to {format_eps(result.eps[e + 1])}: the attack is weak or the "
                    "model masks gradients", float(rise.max()))
    return Flag("monotone", False, "accuracy does not rise with ε", 0.0)
