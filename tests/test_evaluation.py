"""The evaluator's evidence: worst case over attacks, resume, weighted expected robustness and intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustft.attacks import APGD, PGD
from robustft.eval import RobustnessResult, bootstrap_intervals, evaluate, expected_robustness

from helpers import toy_image_mlp, toy_images

CPU = torch.device("cpu")
GRID = [1 / 255, 2 / 255, 4 / 255, 6 / 255]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return toy_image_mlp()


@pytest.fixture(scope="module")
def data():
    return toy_images(40, seed=5, classes=4)


def _run(model, data, attacks, **kw):
    return evaluate(model, data, GRID, attacks, device=CPU, image_size=8, batch_size=16, **kw)


def test_worst_case_over_two_attacks_is_below_each(model, data):
    # deterministic attacks, so each attack's verdict on an example does not depend on what ran before it
    a = APGD(num_steps=5, random_start=False, select="misclassified")
    b = PGD(num_steps=5, random_start=False, rel_step_size=0.1, select="misclassified")
    only_a, only_b = _run(model, data, {"a": a}), _run(model, data, {"b": b})
    both = _run(model, data, {"a": a, "b": b})
    assert both.correct.shape == (5, len(data))
    assert np.array_equal(both.correct, only_a.correct & only_b.correct)
    assert all(w <= min(x, y) for w, x, y in zip(both.accuracy, only_a.accuracy, only_b.accuracy))
    assert 0 < both.adv < both.clean, "the test needs a model the attacks partly break"
    # every incorrect example is attributed to clean or to one attack; counts add up
    broken = both.broken_by()
    assert sum(broken[0].values()) == len(data) - both.correct[0].sum() and set(broken[0]) == {"clean"}
    for e in range(1, 5):
        assert sum(broken[e].values()) == both.correct[e - 1].sum() - both.correct[e].sum()
    assert set(np.unique(both.breaker)) <= {-1, 0, 1, 2}
    assert ((both.breaker == -1) == both.correct).all()


def test_incremental_curve_monotone_and_not_above_independent(model, data):
    attacks = {"apgd-ce": APGD(num_steps=5, select="misclassified")}
    inc = _run(model, data, attacks, mode="incremental")
    ind = _run(model, data, attacks, mode="independent")
    assert all(np.diff(inc.accuracy) <= 0)
    assert not (inc.correct[1:] & ~inc.correct[:-1]).any()
    assert np.array_equal(inc.correct[:2], ind.correct[:2])  # same examples and seed up to the first ε > 0
    assert not (ind.correct[1:] & ~ind.correct[0]).any(), "clean mistakes stay wrong in independent mode too"
    assert inc.correct.sum() <= ind.correct.sum()
    broken = ind.broken_by()
    for e in range(1, 5):
        assert sum(broken[e].values()) == ind.correct[0].sum() - ind.correct[e].sum()


class Interrupting:
    """An attack that raises KeyboardInterrupt at the ``stop_at``-th ε it sees (counting from 1)."""

    def __init__(self, inner, stop_at: int | None):
        self.inner, self.stop_at, self.eps_seen = inner, stop_at, []

    def __call__(self, model, x, y, eps):
        if eps not in self.eps_seen:
            self.eps_seen.append(eps)
        if self.stop_at is not None and len(self.eps_seen) == self.stop_at:
            raise KeyboardInterrupt
        return self.inner(model, x, y, eps)


def test_interrupted_then_resumed_equals_uninterrupted(model, data, tmp_path):
    apgd = APGD(num_steps=4, select="misclassified")
    state = tmp_path / "partial.npz"
    whole = _run(model, data, {"apgd-ce": Interrupting(apgd, None)}, seed=3)
    with pytest.raises(KeyboardInterrupt):
        _run(model, data, {"apgd-ce": Interrupting(apgd, 3)}, seed=3, state_path=state)
    with np.load(state) as z:
        assert int(z["done"]) == 3  # ε = 0, 2/255, 4/255 saved; 8/255 was interrupted
    again = Interrupting(apgd, None)
    resumed = _run(model, data, {"apgd-ce": again}, seed=3, state_path=state)
    assert again.eps_seen == GRID[2:], "the resumed evaluation starts at the interrupted ε"
    assert np.array_equal(resumed.correct, whole.correct) and np.array_equal(resumed.breaker, whole.breaker)


def test_a_partial_state_of_another_protocol_is_not_resumed(model, data, tmp_path):
    apgd = APGD(num_steps=4, select="misclassified")
    state = tmp_path / "partial.npz"
    with pytest.raises(KeyboardInterrupt):
        _run(model, data, {"apgd-ce": Interrupting(apgd, 2)}, seed=3, state_path=state)
    counted = Interrupting(apgd, None)
    _run(model, data, {"apgd-ce": counted}, seed=4, state_path=state)  # another seed: start over
    assert counted.eps_seen == GRID


@pytest.mark.parametrize("write, reason", [
    (lambda p: np.savez(p, weights=np.zeros(3)), "key is not a file in the archive"),
    (lambda p: np.savez(p, key=np.array([{}], dtype=object), done=0, correct=np.zeros((1, 2), bool),
                        breaker=np.zeros((1, 2), np.int8)), "it holds pickled data, which is never loaded"),
    (lambda p: p.write_bytes(b"\x80\x04K\x01."), "it holds pickled data, which is never loaded"),
    (lambda p: p.write_bytes(b"PK\x03\x04 cut short"), "BadZipFile: File is not a zip file"),
    (lambda p: np.savez(p, key="k", done=9, correct=np.zeros((2, 3), bool), breaker=np.zeros((2, 3), np.int8)),
     "arrays of other shapes or counts"),
])
def test_a_partial_state_that_is_not_ours_is_named_and_not_overwritten(write, reason, model, data, tmp_path):
    from robustft.errors import ForeignFileError

    state = tmp_path / "partial.npz"
    write(state)
    before = state.read_bytes()
    with pytest.raises(ForeignFileError) as info:
        _run(model, data, {"apgd-ce": APGD(num_steps=2)}, seed=3, state_path=state)
    assert str(info.value) == (f"{state} is not the partial results of a robustft evaluation ({reason}); delete it "
                               "to restart this evaluation")
    assert state.read_bytes() == before


def test_result_round_trip_keeps_evidence_flags_and_weights(model, data, tmp_path):
    weights = [0, 1, 2, 3, 4]
    res = _run(model, data, {"apgd-ce": APGD(num_steps=3, select="misclassified")}, weights=weights, bootstrap=200)
    res.save(tmp_path)
    loaded = RobustnessResult.load(tmp_path)
    assert np.array_equal(loaded.breaker, res.breaker) and loaded.weights == weights and loaded.bootstrap == 200
    assert loaded.expected == pytest.approx(res.expected) and loaded.intervals() == res.intervals()
    on_disk = json.loads((tmp_path / "robustness.json").read_text())
    assert on_disk["eps_weights"] == weights and set(on_disk["ci95"]) == {"clean", "adv", "expected_robustness"}
    assert sum(on_disk["curve"][1]["broken_by"].values()) == int(res.correct[0].sum() - res.correct[1].sum())


def test_weights_must_match_the_grid(model, data):
    with pytest.raises(ValueError, match="weight"):
        _run(model, data, {"apgd-ce": APGD(num_steps=1)}, weights=[1, 1])


# ------------------------------------------------------------------ constructed evidence matrices
def _matrix(acc_per_eps: list[float], n: int) -> np.ndarray:
    """correct[E, N] with the first round(acc·n) examples correct at each ε (nested, so monotone)."""
    return np.stack([np.arange(n) < round(a * n) for a in acc_per_eps])


def test_numbers_from_a_constructed_matrix():
    eps = [0, 1 / 255, 2 / 255, 3 / 255, 4 / 255]
    correct = _matrix([0.9, 0.7, 0.5, 0.4, 0.2], 100)
    res = RobustnessResult(eps, correct, np.zeros(100, dtype=int), bootstrap=0)
    assert res.clean == pytest.approx(0.9) and res.adv == pytest.approx(0.2)
    assert res.expected == pytest.approx((0.45 + 0.7 + 0.5 + 0.4 + 0.1) / 4)
    assert res.intervals() == {}


def test_weighted_expected_robustness():
    eps = [0.0, 1.0, 2.0]
    acc = [1.0, 0.5, 0.0]
    assert expected_robustness(eps, acc, [1, 1, 1]) == pytest.approx(expected_robustness(eps, acc))
    # w(ε) = ε: trapezoid of w·acc = (0, 0.5, 0) → 0.5, over the trapezoid of w = (0, 1, 2) → 2
    assert expected_robustness(eps, acc, [0, 1, 2]) == pytest.approx(0.5 / 2)
    # all the weight at ε = 0: clean accuracy
    assert expected_robustness(eps, acc, [1, 0, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weight"):
        expected_robustness(eps, acc, [1, -1, 1])
    with pytest.raises(ValueError, match="integrate"):
        expected_robustness(eps, acc, [0, 0, 0])


def test_bootstrap_intervals_on_constructed_matrices():
    eps = [0, 1 / 255, 2 / 255]
    perfect = np.ones((3, 50), dtype=bool)
    assert bootstrap_intervals(eps, perfect) == {k: [1.0, 1.0] for k in ("clean", "adv", "expected_robustness")}
    small, large = _matrix([0.8, 0.6, 0.4], 100), _matrix([0.8, 0.6, 0.4], 2000)
    ci_small, ci_large = bootstrap_intervals(eps, small, seed=1), bootstrap_intervals(eps, large, seed=1)
    point = {"clean": 0.8, "adv": 0.4, "expected_robustness": expected_robustness(eps, [0.8, 0.6, 0.4])}
    for key, value in point.items():
        lo, hi = ci_small[key]
        assert lo < value < hi
        width_small, width_large = hi - lo, ci_large[key][1] - ci_large[key][0]
        assert width_large < 0.4 * width_small  # ~1/√20 ≈ 0.22 of the width
    # the binomial standard error of 0.8 on 100 examples is 0.04: a 95 % interval is about ±0.078
    assert ci_small["clean"][1] - ci_small["clean"][0] == pytest.approx(2 * 1.96 * 0.04, rel=0.2)
    assert bootstrap_intervals(eps, small, seed=1) == ci_small  # seeded


def test_wilson_intervals_for_clean_and_adv():
    from robustft.eval import wilson_interval

    lo, hi = wilson_interval(0, 200)
    assert lo == 0.0 and hi == pytest.approx(0.0188, abs=1e-3)  # 0/200 is not "exactly 0 %"
    lo, hi = wilson_interval(80, 100)
    assert lo == pytest.approx(0.711, abs=2e-3) and hi == pytest.approx(0.867, abs=2e-3)
    assert wilson_interval(0, 0) == [0.0, 1.0]
    eps = [0, 1 / 255, 2 / 255]
    res = RobustnessResult(eps, _matrix([0.8, 0.3, 0.0], 200), np.zeros(200, dtype=int), bootstrap=200)
    ci = res.intervals()
    assert ci["adv"][0] == 0.0 < ci["adv"][1] and ci["clean"][0] < 0.8 < ci["clean"][1]
    assert ci["expected_robustness"][0] < res.expected < ci["expected_robustness"][1]
