"""Sanity checks against false robustness: a normal model raises none; each broken model raises its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import APGD
from robustft.data import to_float
from robustft.eval import Flag, RobustnessResult, SanityChecks, evaluate
from robustft.eval.checks import check_constant_predictions

from helpers import fit_briefly, toy_cnn, toy_images

CPU = torch.device("cpu")
EPS = 8 / 255


@pytest.fixture(scope="module")
def normal() -> nn.Module:
    train = toy_images(256, seed=1)
    return fit_briefly(toy_cnn(), to_float(train.images, 8), train.labels, steps=150)


@pytest.fixture(scope="module")
def data():
    return toy_images(48, seed=5)


class DropoutLeftOn(nn.Module):
    """Dropout applied whatever the mode (F.dropout with training=True)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return F.dropout(self.inner(x), 0.5, training=True)


class StuckInTraining(nn.Module):
    """A model whose ``train(False)`` leaves its BatchNorm layers in training mode."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train(True)
        return self

    def forward(self, x):
        return self.inner(x)


class Quantized(nn.Module):
    """Inputs rounded to 8 levels first: zero input gradient everywhere (gradient masking)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 7) / 7)


class Constant(nn.Module):
    """Ignores its input: always the same logits."""

    def forward(self, x):
        return torch.tensor([2.0, 0.0, 0.0]).expand(len(x), 3) + 0 * x.flatten(1)[:, :1]


class Detached(nn.Module):
    """A forward that detaches its input: no gradient path from the output to x at all."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.detach())


def _flags(model: nn.Module, data, mode: str = "incremental") -> dict[str, Flag]:
    import copy

    model = copy.deepcopy(model)
    result = evaluate(model, data, [2 / 255, 4 / 255, EPS], {"apgd-ce": APGD(num_steps=10, select="misclassified")},
                      device=CPU, image_size=8, batch_size=16, mode=mode, seed=1,
                      checks=SanityChecks(n=48, square_queries=100))
    return {f.name: f for f in result.checks}


def _check(model: nn.Module, data, mode: str = "incremental") -> dict[str, object]:
    return {name: f.raised for name, f in _flags(model, data, mode).items()}


ALL = {"eval_mode", "deterministic", "logits", "eps0_is_clean", "constant_predictions", "input_gradients", "monotone",
       "black_box", "converged", "large_eps"}


def test_a_normal_model_raises_no_flag(normal, data):
    flags = _check(normal, data)
    assert set(flags) == ALL
    assert [name for name, raised in flags.items() if raised] == []
    assert flags["monotone"] is None  # incremental: monotone by construction, not checked
    flags = _check(normal, data, mode="independent")
    assert [name for name, raised in flags.items() if raised] == []
    assert flags["monotone"] is False


def test_dropout_left_on_is_flagged(normal, data):
    flags = _check(DropoutLeftOn(normal), data)
    assert flags["deterministic"] and flags["eps0_is_clean"]


def test_a_model_stuck_in_training_mode_is_flagged(normal, data):
    flags = _check(StuckInTraining(normal), data)
    assert flags["eval_mode"] and flags["eps0_is_clean"]  # BatchNorm on batch statistics: batch-dependent


def test_softmax_outputs_are_flagged(normal, data):
    flags = _check(nn.Sequential(normal, nn.Softmax(dim=1)), data)
    assert flags["logits"]
    assert _check(nn.Sequential(normal, nn.LogSoftmax(dim=1)), data)["logits"]


def test_gradient_masking_is_flagged(normal, data):
    flags = _check(Quantized(normal), data)
    assert flags["input_gradients"] and flags["black_box"]


def test_a_model_that_ignores_its_input_fails_the_large_eps_check(data):
    assert _check(Constant(), data)["large_eps"]


def test_rising_independent_curve_is_flagged():
    correct = np.stack([np.arange(10) < k for k in (8, 4, 6)])
    result = RobustnessResult([0, 1 / 255, 2 / 255], correct, np.zeros(10, dtype=int), {"mode": "independent"})
    from robustft.eval.checks import check_monotone

    flag = check_monotone(result)
    assert flag.raised and flag.value == pytest.approx(0.2) and "1/255" in flag.message


def test_an_unconverged_attack_is_flagged(normal, data):
    from robustft.attacks import PGD

    weak = PGD(num_steps=1, rel_step_size=0.1, random_start=False, select="misclassified")
    result = evaluate(normal, data, [EPS], {"weak": weak}, device=CPU, image_size=8, batch_size=16,
                      checks=SanityChecks(n=48, square_queries=20))
    flag = next(f for f in result.checks if f.name == "converged")
    assert flag.raised and flag.value > 0.03 and "--attacks strong" in flag.message


COLLAPSED = ("the model collapsed to a constant prediction, so its robustness numbers are meaningless (no attack can "
             "change its output); check its training run for diverged weights (optim.lr too high)")


def test_a_model_that_predicts_one_class_is_flagged_as_collapsed(data, tmp_path):
    """Raised with its message, recorded in robustness.json and shown in the printed report."""
    import json

    from robustft.report.table import evaluation_report

    result = evaluate(Constant(), data, [EPS], {"apgd-ce": APGD(num_steps=5, select="misclassified")}, device=CPU,
                      image_size=8, batch_size=16, checks=SanityChecks(n=48, square_queries=20))
    message = f"100.0 % of the 48 clean predictions are class 0 while the labels span 3 classes: {COLLAPSED}"
    flag = next(f for f in result.checks if f.name == "constant_predictions")
    assert flag.raised and flag.value == 1.0 and flag.message == message
    result.save(tmp_path)
    saved = json.loads((tmp_path / "robustness.json").read_text())["flags"]
    assert {"name": "constant_predictions", "raised": True, "message": message, "value": 1.0} in saved
    assert f"- [RAISED] constant_predictions: {message}" in evaluation_report(RobustnessResult.load(tmp_path))


def test_infinite_batchnorm_variances_are_flagged_as_collapsed(normal, data):
    """The diverged run of issue 15: BatchNorm running variances at ∞ make every output the same."""
    import copy

    broken = copy.deepcopy(normal)
    with torch.no_grad():
        next(m for m in broken.modules() if isinstance(m, nn.BatchNorm2d)).running_var.fill_(float("inf"))
    flag = _flags(broken, data)["constant_predictions"]
    assert flag.raised and flag.value == 1.0 and flag.message.endswith(COLLAPSED)


def test_constant_predictions_thresholds():
    labels = np.array([0, 1, 2] * 40)
    result = RobustnessResult([0.0], np.ones((1, 120), dtype=bool), labels, {})
    nearly = np.r_[np.zeros(119, dtype=int), 1]  # 99.2 % in class 0
    assert check_constant_predictions(nearly, result).raised
    flag = check_constant_predictions(labels, result)
    assert flag.raised is False
    assert flag.message == "clean predictions span 3 classes; the most frequent, class 0, takes 33.3 %"
    assert check_constant_predictions(nearly, result, max_share=1.0).raised is False
    one_label = RobustnessResult([0.0], np.ones((1, 4), dtype=bool), np.zeros(4, dtype=int), {})
    assert check_constant_predictions(np.zeros(4, dtype=int), one_label).raised is None


def test_a_forward_that_detaches_its_input_raises_input_gradients_not_an_error(normal, data):
    flags = _flags(Detached(normal), data)
    flag = flags["input_gradients"]
    assert flag.raised and flag.value == 1.0
    assert flag.message == ("48 of 48 examples have an exactly zero input gradient: gradient attacks cannot move them "
                            "(the model's output has no gradient path to its input: its forward detaches x or runs "
                            "without autograd); only a black-box attack can test it: add square to the attacks")
    assert set(flags) == ALL and not flags["constant_predictions"].raised


# ---------------------------------------------------------------------------- thresholds decided on counts
def test_a_gap_of_exactly_the_tolerance_is_not_more_than_it():
    """1 example of 100 is 1 point, not more than a 0.01 tolerance, although 0.26 − 0.25 > 0.01 in floating
    point; the decision is the exact one, k > tol·n, for every count."""
    from fractions import Fraction

    from robustft.eval.checks import more_than

    assert 0.26 - 0.25 > 0.01 and not more_than(1, 100, 0.01) and more_than(2, 100, 0.01)
    assert 0.28 - 0.25 > 0.03 and not more_than(3, 100, 0.03) and more_than(4, 100, 0.03)
    for tol in (0.01, 0.03, 0.05):
        for n in (20, 48, 100, 200, 500):
            assert [more_than(k, n, tol) for k in range(n + 1)] == [k > Fraction(str(tol)) * n for k in range(n + 1)]


def _gap_flag(check: str, broken: int, monkeypatch) -> Flag:
    """The ``check`` on 100 examples, 26 standing in the evaluation, when the check's own attack breaks
    ``broken`` of those 26."""
    import robustft.eval.checks as checks

    white = np.arange(100) < 26
    result = RobustnessResult([0.0, EPS], np.stack([np.ones(100, bool), white]), np.zeros(100, dtype=int))
    other = white & (np.arange(100) >= broken)  # the other attack breaks the first `broken` still standing
    sc = SanityChecks(n=100, autoattack_n=100, norm="linf")
    x, y, subset = torch.zeros(100, 3, 4, 4), torch.zeros(100, dtype=torch.long), np.arange(100)
    if check == "autoattack":  # AutoAttack runs only on what the evaluation left standing
        monkeypatch.setattr(checks, "_correct_after", lambda model, attack, x, y, eps: other[white].copy())
        return sc.check_autoattack(nn.Identity(), toy_images(100, seed=0), result, CPU, 4)
    monkeypatch.setattr(checks, "_correct_after", lambda model, attack, x, y, eps: other.copy())
    run = sc.check_black_box if check == "black_box" else sc.check_converged
    return run(nn.Identity(), x, y, result, subset)


@pytest.mark.parametrize("check, tol", [("black_box", 3), ("converged", 3), ("autoattack", 1)])
def test_each_gap_check_raises_above_its_tolerance_and_not_at_it(check, tol, monkeypatch):
    """Black-box, convergence and AutoAttack checks on 100 examples: the flag is raised when the check's attack
    breaks more than the tolerance (3, 3 and 1 examples) of what the evaluation left standing, not at it."""
    for broken in (0, tol, tol + 1):
        flag = _gap_flag(check, broken, monkeypatch)
        assert flag.raised is (broken > tol), (check, broken, flag.message)
