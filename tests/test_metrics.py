"""Tests of robustft.eval: expected robustness, delay time, RobustnessResult and the ε-grid evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustft.attacks import APGD, PGD
from robustft.data import ImageArray, eval_batches, to_float
from robustft.eval import RobustnessResult, accuracy, default_eps_grid, delay_time, evaluate, expected_robustness

from helpers import fit_briefly, toy_cnn, toy_images

CPU = torch.device("cpu")



# ------------------------------------------------------------------------------------ expected robustness
@pytest.mark.parametrize("c", [0.0, 0.37, 1.0])
def test_expected_robustness_constant_curve(c):
    grid = [i / 255 for i in range(9)]
    assert expected_robustness(grid, [c] * 9) == pytest.approx(c)


def test_expected_robustness_linear_curve():
    grid = np.linspace(0, 8 / 255, 9)
    assert expected_robustness(grid, 1 - grid / grid[-1]) == pytest.approx(0.5)
    assert expected_robustness([0.0, 0.5], [1.0, 0.0]) == pytest.approx(0.5)


def test_expected_robustness_paper_grid_by_hand():
    grid = [0, 1 / 255, 2 / 255, 3 / 255, 4 / 255]
    acc = [0.9, 0.7, 0.5, 0.4, 0.2]
    # trapezoid with step h over total width 4h: (0.9/2 + 0.7 + 0.5 + 0.4 + 0.2/2) / 4
    assert expected_robustness(grid, acc) == pytest.approx(2.15 / 4)


def test_expected_robustness_non_uniform_grid():
    # (1 + 0.5)/2 · 1 + 0.5 · 2 over width 3
    assert expected_robustness([0.0, 1.0, 3.0], [1.0, 0.5, 0.5]) == pytest.approx(1.75 / 3)


def test_expected_robustness_single_point():
    assert expected_robustness([0.0], [0.83]) == pytest.approx(0.83)


@pytest.mark.parametrize("eps,acc", [
    ([1 / 255, 2 / 255], [0.5, 0.4]),  # does not start at 0
    ([0.0, 2 / 255, 1 / 255], [0.9, 0.5, 0.4]),  # not increasing
    ([0.0, 1 / 255, 1 / 255], [0.9, 0.5, 0.4]),  # repeated value
    ([0.0, 1 / 255], [0.9]),  # lengths differ
    ([], []),  # empty
    ([0.1], [0.5]),  # single point not at 0
])
def test_expected_robustness_rejects_bad_grids(eps, acc):
    with pytest.raises(ValueError):
        expected_robustness(eps, acc)


# ------------------------------------------------------------------------------------ delay time
def test_delay_time():
    assert delay_time([0.01, 0.03, 0.06, 0.5]) == 3
    assert delay_time([0.2, 0.5]) == 1
    assert delay_time([0.05, 0.1]) == 2  # strictly above the threshold
    assert delay_time([0.01, 0.02, 0.04]) is None
    assert delay_time([]) is None
    assert delay_time([0.1, 0.2, 0.3], threshold=0.15) == 2


# ------------------------------------------------------------------------------------ RobustnessResult
@pytest.fixture
def result() -> RobustnessResult:
    correct = np.array([
        [1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],
    ], dtype=bool)
    return RobustnessResult([0.0, 1 / 255, 2 / 255], correct, np.array([0, 1, 2, 0, 1]),
                            {"mode": "incremental", "attack": "apgd-ce", "steps": 10})


def test_result_numbers(result):
    assert result.accuracy == pytest.approx([0.8, 0.6, 0.4])
    assert result.clean == pytest.approx(0.8)
    assert result.adv == pytest.approx(0.4)
    assert result.expected == pytest.approx((0.8 / 2 + 0.6 + 0.4 / 2) / 2)
    s = result.summary()
    assert s["n"] == 5 and s["eps_target"] == "2/255"
    assert [c["eps"] for c in s["curve"]] == ["0/255", "1/255", "2/255"]
    assert s["expected_robustness"] == pytest.approx(result.expected)
    json.dumps(s)  # JSON-ready


def test_result_save_load_round_trip(tmp_path, result):
    folder = tmp_path / "eval"
    result.save(folder)
    assert (folder / "correct.npz").is_file() and (folder / "robustness.json").is_file()
    assert not list(folder.glob(".*tmp*"))
    on_disk = json.loads((folder / "robustness.json").read_text())
    assert on_disk["clean"] == pytest.approx(0.8) and on_disk["adv"] == pytest.approx(0.4)
    loaded = RobustnessResult.load(folder)
    assert loaded.eps == result.eps
    assert loaded.correct.dtype == bool and np.array_equal(loaded.correct, result.correct)
    assert np.array_equal(loaded.labels, result.labels)
    assert loaded.protocol == result.protocol
    assert loaded.expected == pytest.approx(result.expected)


# ------------------------------------------------------------------------------------ evaluator
@pytest.fixture(scope="module")
def toy_model() -> nn.Module:
    train = toy_images(128, seed=1)
    return fit_briefly(toy_cnn(), to_float(train.images, 8), train.labels, steps=80)


@pytest.fixture(scope="module")
def holdout() -> ImageArray:
    return toy_images(24, seed=5)


def _clean_correct(model: nn.Module, source: ImageArray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return (model(to_float(source.images, 8)).argmax(1) == source.labels).numpy()


@pytest.mark.parametrize("mode", ["incremental", "independent"])
def test_evaluate_matrix(toy_model, holdout, mode):
    grid = [2 / 255, 4 / 255, 8 / 255]  # 0 is added
    attack = APGD(num_steps=5, select="misclassified")
    toy_model.train()  # evaluate attacks the model in eval mode, then gives it back in the mode it had
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    res = evaluate(toy_model, holdout, grid, {"apgd-ce": attack}, device=CPU, image_size=8, batch_size=10, mode=mode,
                   seed=7, protocol={"attack": "apgd-ce"})
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's random state untouched
    assert toy_model.training
    toy_model.eval()  # the clean accuracy below, in eval mode, is what the evaluation measured
    assert res.eps == [0.0] + grid
    assert res.correct.shape == (4, len(holdout)) and res.correct.dtype == bool
    clean = _clean_correct(toy_model, holdout)
    assert 0.5 < clean.mean() < 1.0
    assert np.array_equal(res.correct[0], clean)
    assert res.clean == pytest.approx(clean.mean())
    assert res.adv < res.clean  # the attack does something
    assert np.array_equal(res.labels, holdout.labels.numpy())
    assert res.protocol["mode"] == mode and res.protocol["seed"] == 7 and res.protocol["attack"] == "apgd-ce"
    assert res.protocol["grid"] == ["0/255", "2/255", "4/255", "8/255"]
    if mode == "incremental":
        for e in range(1, len(res.eps)):
            assert not (res.correct[e] & ~res.correct[e - 1]).any(), f"row {e} not <= row {e - 1}"
    assert 0.0 <= res.expected <= res.clean


def test_evaluate_incremental_only_attacks_survivors(toy_model, holdout):
    """Examples wrong at ε_{e−1} are not attacked again (and stay wrong), so the curve is monotone."""
    seen: list[int] = []

    class Counting(PGD):
        def __call__(self, model, x, y, eps):
            seen.append(len(y))
            return super().__call__(model, x, y, eps)

    res = evaluate(toy_model, holdout, [4 / 255, 8 / 255], {"counting": Counting(num_steps=3)}, device=CPU, image_size=8,
                   batch_size=100, mode="incremental")
    assert seen == [int(res.correct[0].sum()), int(res.correct[1].sum())]  # ε = 0 needs no attack


def test_evaluate_is_reproducible_and_keeps_zero_once(toy_model, holdout):
    attack = APGD(num_steps=4, select="misclassified")
    kw = dict(device=CPU, image_size=8, batch_size=8, seed=3)
    a = evaluate(toy_model, holdout, [0.0, 4 / 255], {"apgd-ce": attack}, **kw)
    b = evaluate(toy_model, holdout, [4 / 255, 0.0], {"apgd-ce": attack}, **kw)
    assert a.eps == b.eps == [0.0, 4 / 255]
    assert np.array_equal(a.correct, b.correct)


def test_evaluate_with_no_survivors(holdout):
    """A model that gets everything wrong: nothing is left to attack after ε = 0, and nothing crashes."""

    class AlwaysWrong(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 4).index_fill_(1, torch.tensor([3]), 1.0) + 0 * x.sum((1, 2, 3))[:, None]

    class MustNotRun:
        def __call__(self, model, x, y, eps):
            assert len(y) == 0 or eps == 0, "attacked examples that were already wrong"
            return x

    res = evaluate(AlwaysWrong(), holdout, [1 / 255, 2 / 255], {"never": MustNotRun()}, device=CPU, image_size=8)
    assert res.correct.shape == (3, len(holdout)) and not res.correct.any()
    assert res.clean == 0.0 and res.expected == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_keeps_callers_cuda_rng_state(toy_model, holdout):
    """evaluate() promises not to disturb the caller's random state; on CUDA the attacks draw their random
    starts from the CUDA generator, which torch.manual_seed reseeds but fork_rng(devices=[]) does not restore."""
    import copy

    device = torch.device("cuda")
    model = copy.deepcopy(toy_model).to(device)
    torch.manual_seed(1234)
    cpu_before, cuda_before = torch.get_rng_state(), torch.cuda.get_rng_state(device)
    evaluate(model, holdout, [4 / 255], {"apgd-ce": APGD(num_steps=2, select="misclassified")}, device=device, image_size=8)
    assert torch.equal(torch.get_rng_state(), cpu_before)
    assert torch.equal(torch.cuda.get_rng_state(device), cuda_before)


def test_evaluate_rejects_unknown_mode(toy_model, holdout):
    with pytest.raises(ValueError, match="mode"):
        evaluate(toy_model, holdout, [1 / 255], {"pgd": PGD()}, device=CPU, image_size=8, mode="both")


def test_accuracy_helper(toy_model, holdout):
    batches = list(eval_batches(holdout, 8, 10))
    acc, loss = accuracy(toy_model, batches, CPU)
    assert acc == pytest.approx(_clean_correct(toy_model, holdout).mean())
    torch.manual_seed(0)
    adv_acc, adv_loss = accuracy(toy_model, batches, CPU, attack=PGD(num_steps=5), eps=8 / 255)
    assert adv_acc <= acc and adv_loss > loss


# ------------------------------------------------------------------------------------ default grid
def test_default_eps_grid():
    grid = default_eps_grid(8 / 255)
    assert len(grid) == 9
    assert grid[0] == 0.0 and grid[-1] == 8 / 255
    assert grid == pytest.approx([i / 255 for i in range(9)])
    assert all(b > a for a, b in zip(grid, grid[1:]))


def test_default_eps_grid_target_not_a_multiple():
    grid = default_eps_grid(0.035, 0.01)
    assert grid == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.035])
    assert grid[-1] == 0.035
    assert default_eps_grid(0.03, 0.01)[-1] == 0.03
    assert len(default_eps_grid(0.03, 0.01)) == 4
    assert default_eps_grid(4 / 255, 2 / 255) == pytest.approx([0, 2 / 255, 4 / 255])
