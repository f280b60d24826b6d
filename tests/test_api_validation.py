"""The Python API checks its arguments by the config's rules and raises the config's error: ε in [0, 1], hinges as
whole epochs or fractions, a schedule built for fit's epochs; evaluate runs the sanity checks by default, in the
evaluation's norm, streams a map-style DataLoader and leaves the model's modes as they were."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import robustft
from robustft.attacks import APGD, build_threat_model
from robustft.config import load_config
from robustft.errors import ConfigError, UserError
from robustft.eval import SanityChecks
from robustft.objectives import StandardObjective
from robustft.schedules import HingeSchedule, hinge_multiplier

from helpers import fit_briefly, toy_cnn, toy_data

GRID = [0.0, 4 / 255]


def refused(call, *needles: str) -> str:
    """The message of the ConfigError (a UserError) ``call()`` raises; it must contain every needle."""
    with pytest.raises(ConfigError) as info:
        call()
    assert isinstance(info.value, UserError)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = toy_data(96, seed=0)
    return fit_briefly(toy_cnn(), x, y, steps=30), x[:24], y[:24]


def cheap_checks() -> SanityChecks:
    return SanityChecks(n=8, square_queries=10, long_steps=5)


# ------------------------------------------------------------------------ eps_schedule: the config's rules
def test_a_float_hinge_above_one_is_refused_naming_the_hinge_and_the_fix():
    message = refused(lambda: robustft.eps_schedule("hinge", eps=8 / 255, epochs=10, t1=10 / 4, t2=3 * 10 / 4),
                      "t1", "t2", "as an integer", "fraction in [0, 1]", "t1=0.25")
    with pytest.raises(ConfigError) as config_path:  # the same rule, the same words on the config path
        load_config(None, ["schedule.t1=2.5", "schedule.t2=0.75", "train.epochs=10"])
    assert config_path.value.problems[0] in message


def test_eps_above_one_in_eps_schedule_asks_for_k_over_255():
    refused(lambda: robustft.eps_schedule("fix", eps=8, epochs=10), "eps", "did you mean 8/255?")
    assert robustft.eps_schedule("fix", eps="8/255", epochs=10).eps_target == 8 / 255


def test_fit_refuses_a_schedule_whose_eps_is_out_of_range():
    x, y = toy_data(16, seed=0)
    schedule = HingeSchedule(eps_target=8.0, epochs=2)  # built by hand, past eps_schedule's check
    refused(lambda: robustft.fit(toy_cnn(), [(x, y)], objective=StandardObjective(), schedule=schedule, epochs=2),
            "eps_target", "8/255")


def test_fit_refuses_a_schedule_built_for_other_epochs():
    x, y = toy_data(16, seed=0)
    schedule = robustft.eps_schedule("hinge", eps=8 / 255, epochs=10)
    assert schedule.describe()["epochs"] == 10
    refused(lambda: robustft.fit(toy_cnn(), [(x, y)], objective=StandardObjective(), schedule=schedule, epochs=3),
            "epochs", "3", "10", "eps_schedule(..., epochs=3)")


def test_hinge_fractions_are_taken_of_the_epochs_in_describe_and_in_training():
    schedule = robustft.eps_schedule("hinge", eps=8 / 255, epochs=6, t1=0.25, t2=0.75)
    d = schedule.describe()
    assert (d["t1"], d["t2"], d["epochs"]) == (1.5, 4.5, 6)  # f · E, as docs/schedules.md says
    x, y = toy_data(16, seed=0)
    used: list[float] = []
    robustft.fit(toy_cnn(), [(x, y)], objective=StandardObjective(), schedule=schedule, epochs=6,
                 on_epoch=lambda row: used.append(row.eps))
    from_describe = [d["eps"] * hinge_multiplier(e, d["t1"], d["t2"]) for e in range(6)]
    assert used == pytest.approx(from_describe)
    assert [u / (8 / 255) for u in used] == pytest.approx([0, 0, 1 / 6, 1 / 2, 5 / 6, 1])


# ------------------------------------------------------------------------ evaluate
def test_evaluate_refuses_an_eps_grid_in_0_255_units(trained):
    model, x, y = trained
    refused(lambda: robustft.evaluate(model, (x, y), eps_grid=[0, 8]), "eps_grid", "did you mean 8/255?")


def test_evaluate_runs_the_sanity_checks_by_default(trained):
    model, x, y = trained
    result = robustft.evaluate(model, (x, y), GRID)
    assert any(c["attack"] == "checks" for c in result.costs)
    assert {"eval_mode", "large_eps", "black_box", "converged"} <= {f.name for f in result.checks}
    skipped = robustft.evaluate(model, (x, y), GRID, checks=False)
    assert not any(c["attack"] == "checks" for c in skipped.costs) and skipped.checks == []


def test_norm_reaches_the_checks_with_attack_objects(trained):
    model, x, y = trained
    seen: list[str] = []

    class Spy(SanityChecks):
        def check_large_eps(self, model, x, y):
            seen.append(self._norm)
            return super().check_large_eps(model, x, y)

    l2 = {"apgd-l2": APGD(num_steps=2, threat=build_threat_model("l2"))}
    result = robustft.evaluate(model, (x, y), GRID, attacks=l2, checks=Spy(n=8, square_queries=10, long_steps=5))
    assert seen == ["l2"] and result.protocol["norm"] == "l2"  # norm=None: the attacks' own
    refused(lambda: robustft.evaluate(model, (x, y), GRID, attacks=l2, norm="linf"), "norm", "norm='l2'")
    refused(lambda: robustft.evaluate(model, (x, y), GRID, attacks=l2, checks=SanityChecks(norm="linf")),
            "checks", "norm")


def test_evaluate_leaves_the_model_in_the_modes_it_had(trained):
    model, x, y = trained
    model.train()
    model[1].eval()  # a caller's frozen BatchNorm stays frozen
    before = [m.training for m in model.modules()]
    robustft.evaluate(model, (x, y), GRID, checks=cheap_checks())
    assert [m.training for m in model.modules()] == before
    model.eval()


class Counted(Dataset):
    """A map-style dataset that counts its reads."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return self.x[i], self.y[i]


def test_evaluate_streams_a_map_style_dataloader(trained):
    model, x, y = trained
    dataset = Counted(x, y)
    rng = torch.get_rng_state()
    streamed = robustft.evaluate(model, DataLoader(dataset, batch_size=8, shuffle=True), GRID, batch_size=8,
                                 checks=False)
    assert torch.equal(torch.get_rng_state(), rng)  # the shuffle was not drawn from the caller's generator
    assert dataset.reads > len(y)  # read again where attacked, not held
    whole = robustft.evaluate(model, DataLoader(TensorDataset(x, y), batch_size=8, drop_last=False,
                                                sampler=list(range(len(y)))), GRID, batch_size=8, checks=False)
    assert (streamed.correct == whole.correct).all()
