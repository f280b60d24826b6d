"""Golden numbers: a tiny CNN trained with ``robustft.fit`` (Madry AT with 3-step APGD, a hinge ε schedule,
validation and the overfitting monitor, the default AdamW under warm-up + cosine) on scikit-learn's digits,
seeded, then evaluated with ``robustft.evaluate`` (APGD-CE on a 4-point ε grid, BatchNorm folded); every
number asserted exactly.

Any silent change in the numerics of training (data order, attack, objective, schedule, optimiser, learning
rates, BatchNorm, the monitor) or of evaluation (the attack, the walk over the grid, the seeds, the folded
model, the metrics) changes a number here. The numbers are those of one intra-op thread with the pinned torch (constraints.txt) and its AVX2 CPU kernels
(:data:`RECORDED_WITH`); another torch build or kernel set rounds differently, so there the test says so and
skips. A deliberate change of the numerics updates these numbers in the same commit, and says so in its
message.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import robustft
from robustft.attacks import APGD
from robustft.eval.metrics import expected_robustness
from robustft.objectives import AdversarialObjective
from robustft.runs import EpochRow

RECORDED_WITH = ("2.14.1", "AVX2")
"""(torch version, ``torch.backends.cpu.get_cpu_capability()``) the numbers below were recorded with."""
EPS_G = 16 / 255
EPS_GRID = [0.0, 4 / 255, 8 / 255, EPS_G]
N_TEST = 200
EPOCHS = [  # (eps, lr, train_loss, train_acc, val_clean_acc, mon_gap) of every epoch
    (0.0, 0.001, 2.368856966495514, 0.154296875, 0.171875, None),
    (0.0, 0.0009157348061512727, 2.0407387390732765, 0.404296875, 0.453125, None),
    (0.0, 0.0006730585285387465, 1.7571326792240143, 0.744140625, 0.78125, None),
    (EPS_G / 2, 0.0003642797750674629, 1.7463666051626205, 0.685546875, 0.859375, 0.03125),
    (EPS_G, 0.00010734153455962764, 1.8378852754831314, 0.533203125, 0.875, 0.09375),
    (EPS_G, 3.854818796385495e-07, 1.804938219487667, 0.548828125, 0.875, 0.0625),
]
FINAL = {"train_loss": 1.804938219487667, "train_acc": 0.548828125, "val_clean_acc": 0.875,
         "val_clean_loss": 1.459997296333313, "mon_eps": EPS_G, "mon_attack_acc": 0.53125, "mon_ref_acc": 0.46875,
         "mon_gap": 0.0625}
DELAY_EPOCHS = 1
CORRECT = [148, 133, 122, 78]  # examples correct at each ε of EPS_GRID, of N_TEST
EXPECTED = 0.585  # E.adv: the trapezoid rule over CORRECT / N_TEST, as the float it is
WEIGHT_SUMS = [-0.8400207385420799, -6.473379670511349]  # float64 sums of the trained conv and head weights


@pytest.fixture
def one_thread():
    """One intra-op thread, whatever the machine's cores: a sum's rounding depends on how it is split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    bunch = load_digits()
    return torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(bunch.target)


def test_training_and_evaluation_numbers_are_the_golden_ones(one_thread):
    here = (torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability())
    if here != RECORDED_WITH:
        pytest.skip(f"golden numbers recorded with torch {RECORDED_WITH[0]} and {RECORDED_WITH[1]} kernels; this is "
                    f"torch {here[0]} with {here[1]}, which rounds differently (record the numbers here to check)")
    x, y = digits()
    train = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 512, 32)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    rows: list[EpochRow] = []
    summary = robustft.fit(model, train, val=(x[1200:1264], y[1200:1264]), epochs=6, seed=0, monitor_n=32,
                           objective=AdversarialObjective(APGD(num_steps=3)), on_epoch=rows.append,
                           schedule=robustft.eps_schedule("hinge", eps=EPS_G, epochs=6, t1=2, t2=4))
    result = robustft.evaluate(model, (x[-N_TEST:], y[-N_TEST:]), EPS_GRID, attacks=["apgd-ce"], checks=False,
                               bootstrap=0)

    epochs = [(r.eps, r.lr, r.train_loss, r.train_acc, r.val_clean_acc, r.mon_gap) for r in rows]
    correct = result.correct.sum(axis=1).tolist()
    weight_sums = [float(model[i].weight.detach().double().sum()) for i in (0, 5)]
    assert epochs == EPOCHS
    assert (summary.final, summary.delay_epochs) == (FINAL, DELAY_EPOCHS)
    assert correct == CORRECT
    assert (result.clean, result.adv) == (CORRECT[0] / N_TEST, CORRECT[-1] / N_TEST)
    assert result.expected == EXPECTED == expected_robustness(EPS_GRID, [c / N_TEST for c in CORRECT])
    assert weight_sums == WEIGHT_SUMS
