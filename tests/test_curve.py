"""AutoAttack-grade curves: warm starts across the ε grid (``x_init``), the minimum-norm pass joined with the
grid, the exact expected robustness, the ``autoattack`` check and the ``curve`` preset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from robustft.attacks import APGD, FMN, PGD, build_eval_attacks, build_threat_model
from robustft.config import (
    ConfigError,
    EvalConfig,
    EvalSettings,
    evaluation_name,
    expand_attacks,
    format_eps,
    load_config,
)
from robustft.data import to_float
from robustft.eval import RobustnessResult, SanityChecks, evaluate, expected_robustness
from robustft.eval.metrics import expected_robustness_exact

from helpers import TINY, toy_image_mlp, toy_images

CPU = torch.device("cpu")
GRID = [1 / 255, 2 / 255, 3 / 255, 4 / 255, 6 / 255, 8 / 255]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return toy_image_mlp()


@pytest.fixture(scope="module")
def data():
    return toy_images(64, seed=5, classes=4)


class Recording(nn.Module):
    """``inner`` that records every input it sees."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


# ------------------------------------------------------------------------------------------- x_init contract
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["apgd", "pgd"])
def test_x_init_is_where_the_attack_starts_projected_into_the_ball(model, kind, norm):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 4
    eps = 4 / 255 if norm == "linf" else 0.3
    threat = build_threat_model(norm)
    inside = threat.project(x + 0.5 * eps * torch.randn_like(x).sign() / (1 if norm == "linf" else 10), x, eps)
    outside = (x + 0.2).clamp(0, 1)  # far outside the ball: must be projected
    for start in (inside, outside):
        rec = Recording(model)
        attack = (APGD(num_steps=3, threat=threat, select="misclassified") if kind == "apgd" else
                  PGD(num_steps=3, threat=threat, select="misclassified"))
        x_adv = attack(rec, x, y, eps, x_init=start)
        first = next(s for s in rec.seen if len(s) == len(x))  # APGD-CE first probes one image for the classes
        assert torch.allclose(first, threat.project(start, x, eps)), "the first point attacked is x_init, projected"
        d = (x_adv - x).flatten(1)
        dist = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (dist <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_x_init_of_the_wrong_shape_is_refused(model):
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    for attack in (APGD(num_steps=2), PGD(num_steps=2)):
        with pytest.raises(ValueError, match="x_init"):
            attack(model, x, y, 4 / 255, x_init=torch.rand(3, 3, 8, 8))


def test_warm_steps_bound_the_work_of_a_warm_started_run(model):
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    rec = Recording(model)
    APGD(num_steps=10, warm_steps=2, select="max_loss")(rec, x, y, 4 / 255, x_init=x)
    assert sum(len(s) == len(x) for s in rec.seen) == 1 + 2, "the start, then warm_steps iterations"
    rec.seen.clear()
    APGD(num_steps=10, warm_steps=2, select="max_loss")(rec, x, y, 4 / 255)
    assert sum(len(s) == len(x) for s in rec.seen) == 1 + 10, "a cold run keeps num_steps"


# ----------------------------------------------------------------------------------------- warm-started grid
def test_warm_started_curve_is_monotone_and_not_above_the_cold_one(model, data):
    attack = {"apgd-ce": APGD(num_steps=5, select="misclassified")}
    cold = evaluate(model, data, GRID, attack, device=CPU, image_size=8, batch_size=16, seed=1)
    warm = evaluate(model, data, GRID, attack, device=CPU, image_size=8, batch_size=16, seed=1, warm_start=True)
    assert warm.protocol["start"] == "warm" and cold.protocol["start"] == "cold"
    assert np.all(np.diff(warm.accuracy) <= 0)
    assert not (warm.correct[1:] & ~warm.correct[:-1]).any()
    assert np.array_equal(warm.correct[:2], cold.correct[:2]), "the first ε > 0 has nothing to start from"
    assert all(w <= c for w, c in zip(warm.accuracy, cold.accuracy)), (warm.accuracy, cold.accuracy)
    assert 0 < warm.adv < warm.clean, "the test needs a model the attack partly breaks"


class StartSpy:
    """An attack that records the ``x_init`` it is given at each ε and moves to the box corner nearest to it."""

    accepts_start = True

    def __init__(self):
        self.starts: dict[float, torch.Tensor | None] = {}

    def __call__(self, model, x, y, eps, x_init=None):
        self.starts.setdefault(eps, x_init)
        return (x + eps * (2 * (x > 0.5).float() - 1)).clamp(0, 1)


def test_each_surviving_example_starts_from_its_own_point_of_the_previous_eps(model, data):
    spy = StartSpy()
    result = evaluate(model, data, [2 / 255, 4 / 255], {"spy": spy}, device=CPU, image_size=8, batch_size=64,
                      warm_start=True)
    assert spy.starts[2 / 255] is None, "nothing to start from at the first ε"
    survivors = np.flatnonzero(result.correct[1])
    x = to_float(data.images, 8)[survivors]
    expected = (x + 2 / 255 * (2 * (x > 0.5).float() - 1)).clamp(0, 1)
    assert torch.allclose(spy.starts[4 / 255], expected)
    # an attack without accepts_start never gets x_init (this one would raise TypeError if it did)
    plain = evaluate(model, data, GRID[:3], {"plain": lambda m, x, y, eps: x}, device=CPU, image_size=8,
                     warm_start=True)
    assert plain.accuracy == [plain.clean] * 4


class Interrupting:
    """Wraps an attack; raises KeyboardInterrupt at the ``stop_at``-th ε it sees (counting from 1)."""

    def __init__(self, inner, stop_at: int | None):
        self.inner, self.stop_at, self.eps_seen = inner, stop_at, []
        self.accepts_start = getattr(inner, "accepts_start", False)

    def __call__(self, model, x, y, eps, **kw):
        if eps not in self.eps_seen:
            self.eps_seen.append(eps)
        if self.stop_at is not None and len(self.eps_seen) == self.stop_at:
            raise KeyboardInterrupt
        return self.inner(model, x, y, eps, **kw)


def test_a_killed_warm_started_evaluation_with_a_minimum_norm_pass_resumes_exactly(model, data, tmp_path):
    apgd, fmn = APGD(num_steps=4, select="misclassified"), FMN(steps=20)
    state = tmp_path / "partial.npz"
    run = dict(device=CPU, image_size=8, batch_size=16, seed=3, warm_start=True)
    whole = evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": Interrupting(apgd, None)}, **run)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": Interrupting(apgd, 4)}, state_path=state, **run)
    again = Interrupting(apgd, None)
    resumed = evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": again}, state_path=state, **run)
    assert again.eps_seen[0] == GRID[3], "resumed at the interrupted ε, with its warm starts"
    assert np.array_equal(resumed.correct, whole.correct) and np.array_equal(resumed.breaker, whole.breaker)
    assert np.array_equal(resumed.radii, whole.radii)


# ------------------------------------------------------------------------------------------- downward walk
class Counting:
    """Wraps an attack; records which examples (by their first pixel) it attacks at each ε."""

    def __init__(self, inner):
        self.inner, self.seen = inner, {}
        self.accepts_start = getattr(inner, "accepts_start", False)

    def __call__(self, model, x, y, eps, **kw):
        self.seen[eps] = self.seen.get(eps, 0) + len(x)
        return self.inner(model, x, y, eps, **kw)


def test_a_downward_walk_attacks_below_eps_g_only_what_broke_above_and_is_monotone(model, data):
    attack = Counting(APGD(num_steps=5, select="misclassified"))
    down = evaluate(model, data, GRID, {"apgd-ce": attack}, device=CPU, image_size=8, batch_size=16, seed=1,
                    mode="downward", warm_start=True)
    assert down.protocol["mode"] == "downward" and down.protocol["start"] == "warm"
    assert np.all(np.diff(down.accuracy) <= 0)
    assert not (down.correct[1:] & ~down.correct[:-1]).any(), "broken at ε: broken at every larger ε"
    eps = down.eps
    assert attack.seen[eps[-1]] == down.correct[0].sum(), "every clean-correct example at ε_g"
    for k in range(1, len(eps) - 1):  # below ε_g: the clean-correct examples broken at the ε above, no others
        broken_above = (down.correct[0] & ~down.correct[k + 1]).sum()  # (+ a cold retry of the warm runs that failed)
        assert broken_above <= attack.seen.get(eps[k], 0) <= 2 * broken_above, eps[k]
    assert 0 < down.adv < down.clean, "the test needs a model the attack partly breaks"
    # the same attacks upward break at least as many at ε_g (the same seed and attack there: equal)
    up = evaluate(model, data, [GRID[-1]], {"apgd-ce": APGD(num_steps=5, select="misclassified")}, device=CPU,
                  image_size=8, batch_size=16, seed=len(GRID), mode="incremental")
    assert up.accuracy[-1] == down.accuracy[-1]
    assert down.broken_by()[-1] == {"apgd-ce": int(down.correct[0].sum() - down.correct[-1].sum())}


def test_downward_each_attacked_example_starts_from_the_point_that_broke_it_above(model, data):
    spy = StartSpy()
    result = evaluate(model, data, [2 / 255, 4 / 255], {"spy": spy}, device=CPU, image_size=8, batch_size=64,
                      mode="downward", warm_start=True)
    assert spy.starts[4 / 255] is None, "nothing to start from at ε_g"
    attacked = np.flatnonzero(result.correct[0] & ~result.correct[2])
    x = to_float(data.images, 8)[attacked]
    expected = (x + 4 / 255 * (2 * (x > 0.5).float() - 1)).clamp(0, 1)  # where the spy broke them at 4/255
    assert len(attacked) and torch.allclose(spy.starts[2 / 255], expected)
    cold = StartSpy()
    evaluate(model, data, [2 / 255, 4 / 255], {"spy": cold}, device=CPU, image_size=8, mode="downward",
             warm_start=False)
    assert cold.starts[2 / 255] is None, "without warm starts none is given"


class WarmFails:
    """An attack that does nothing from a warm start (``x_init``) and, started cold, moves to the box corner."""

    accepts_start = True

    def __init__(self):
        self.calls: list[tuple[float, bool, int]] = []  # (ε, warm, examples)

    def __call__(self, model, x, y, eps, x_init=None):
        self.calls.append((eps, x_init is not None, len(x)))
        return x if x_init is not None else (x + eps * (2 * (x > 0.5).float() - 1)).clamp(0, 1)


def test_downward_a_failed_warm_start_is_attacked_again_cold_before_it_counts_as_robust(model, data):
    """Downward, an example that survives its ε is settled as robust at every smaller ε, so a warm run that
    cannot break it must not decide that alone: the same examples are attacked cold, and the walk ends
    where the cold walk ends."""
    grid = [4 / 255, 16 / 255, 64 / 255]
    spy = WarmFails()
    warm = evaluate(model, data, grid, {"spy": spy}, device=CPU, image_size=8, batch_size=64, mode="downward",
                    warm_start=True)
    cold = evaluate(model, data, grid, {"spy": WarmFails()}, device=CPU, image_size=8, batch_size=64,
                    mode="downward", warm_start=False)
    assert np.array_equal(warm.correct, cold.correct), "a warm run that fails does not weaken the walk"
    assert 0 < warm.accuracy[-1] < warm.accuracy[2] < warm.clean, "the test needs examples broken at ε_g and below"
    for k in (1, 2):  # below ε_g: each warm-started example once from its start, once more cold
        broken_above = int((warm.correct[0] & ~warm.correct[k + 1]).sum())
        at = [(w, n) for e, w, n in spy.calls if e == warm.eps[k]]
        assert at == ([(True, broken_above), (False, broken_above)] if broken_above else []), (k, at)


class FixedMinNorm:
    """A minimum-norm attack that reports every example broken at ``radius``, at the box corner that far."""

    def __init__(self, radius: float):
        self.radius = radius

    def min_norm(self, model, x, y):
        return (x + self.radius * (2 * (x > 0.5).float() - 1)).clamp(0, 1), torch.full((len(x),), self.radius)

    def __call__(self, model, x, y, eps):
        raise AssertionError("a minimum-norm attack runs once, not per ε")


def test_downward_an_example_the_minimum_norm_pass_broke_above_starts_from_its_point(model, data):
    spy = StartSpy()
    result = evaluate(model, data, [2 / 255, 4 / 255], {"fmn": FixedMinNorm(3 / 255), "spy": spy}, device=CPU,
                      image_size=8, batch_size=64, mode="downward", warm_start=True)
    assert 4 / 255 not in spy.starts, "at ε_g the minimum-norm pass broke every example: no grid attack"
    assert result.broken_by()[-1] == {"fmn": int(result.correct[0].sum())}
    x = to_float(data.images, 8)[np.flatnonzero(result.correct[0])]
    assert torch.allclose(spy.starts[2 / 255], (x + 3 / 255 * (2 * (x > 0.5).float() - 1)).clamp(0, 1)), \
        "below, each example starts from the point the minimum-norm pass found"


def test_a_killed_downward_evaluation_resumes_exactly(model, data, tmp_path):
    apgd, fmn = APGD(num_steps=4, select="misclassified"), FMN(steps=20)
    state = tmp_path / "partial.npz"
    run = dict(device=CPU, image_size=8, batch_size=16, seed=3, warm_start=True, mode="downward", checks=False)
    whole = evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": Interrupting(apgd, None)}, **run)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": Interrupting(apgd, 3)}, state_path=state, **run)
    again = Interrupting(apgd, None)
    resumed = evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": again}, state_path=state, **run)
    assert again.eps_seen[0] == GRID[-3], "resumed at the interrupted ε (the third from the top)"
    assert np.array_equal(resumed.correct, whole.correct) and np.array_equal(resumed.breaker, whole.breaker)


def test_an_unknown_mode_is_refused(model, data):
    with pytest.raises(ValueError, match="mode must be one of incremental, downward, independent"):
        evaluate(model, data, GRID, ["apgd-ce"], device=CPU, image_size=8, mode="sideways")


# ------------------------------------------------------------------------------------- minimum-norm curve
def linear_problem(n: int = 60, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, np.ndarray]:
    """A 2-class linear model on 3×4×4 images near 0.5 (the [0, 1] box never binds within the radii used)
    and the exact ℓ∞ distance of each image to its decision boundary, |margin| / ‖w‖₁."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(48, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 48, generator=g))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.5 + 0.02 * (torch.rand(n, 3, 4, 4, generator=g) - 0.5)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    y[:3] = 1 - y[:3]  # three examples misclassified clean
    w = lin.weight[0] - lin.weight[1]
    star = ((z[:, 0] - z[:, 1]).abs() / w.abs().sum()).detach().numpy().astype(float)
    star[:3] = 0.0
    return model, x, y, star


def test_minimum_norm_curve_equals_the_analytic_curve_and_a_grid_evaluation():
    model, x, y, star = linear_problem()
    grid = np.quantile(star[3:], [0.15, 0.4, 0.65, 0.9]).tolist()  # ε* spread across the grid points
    near = np.abs(star[:, None] - np.asarray(grid)[None]) < 0.03 * np.asarray(grid)[None]
    keep = ~near.any(1)  # leave out ε* within FMN's tolerance of a grid point
    data = (x[keep], y[keep])
    analytic = [(star[keep] > e).mean() for e in [0.0, *grid]]
    mn = evaluate(model, data, grid, {"fmn": FMN(steps=100)}, device=CPU, image_size=4, checks=False)
    on_grid = evaluate(model, data, grid, {"apgd-ce": APGD(num_steps=20, select="misclassified")}, device=CPU,
                       image_size=4)
    assert np.allclose(mn.accuracy, analytic), (mn.accuracy, analytic)
    assert np.allclose(on_grid.accuracy, analytic), (on_grid.accuracy, analytic)
    down = evaluate(model, data, grid, {"apgd-ce": APGD(num_steps=20, select="misclassified")}, device=CPU,
                    image_size=4, mode="downward", warm_start=True)
    assert np.allclose(down.accuracy, analytic), (down.accuracy, analytic)
    assert np.allclose(mn.accuracy_at([0.0, *grid]), analytic)
    # the exact integral from the radii ≈ the analytic one (FMN's radii within a few % of ε*)
    exact = np.minimum(star[keep], grid[-1]).mean() / grid[-1]
    assert mn.expected_exact == pytest.approx(exact, rel=0.03)
    summary = mn.summary()["min_norm"]
    assert summary["found"] == keep[3:].sum() and summary["attacked"] == keep[3:].sum()
    assert [p["accuracy"] for p in summary["curve_alone"]] == pytest.approx(analytic)


def test_the_minimum_norm_pass_joins_the_grid_and_spares_the_grid_attacks(model, data):
    apgd = APGD(num_steps=5, select="misclassified")
    counted = Interrupting(apgd, None)
    calls: list[int] = []

    def counting(m, x, y, eps, **kw):
        calls.append(len(x))
        return counted(m, x, y, eps, **kw)

    joined = evaluate(model, data, GRID, {"fmn": FMN(steps=30), "apgd-ce": counting}, device=CPU, image_size=8,
                      batch_size=64, seed=2)
    assert joined.radii is not None and np.isinf(joined.radii[~joined.correct[0]]).all()
    # an example the pass broke at radius r is wrong at every grid ε ≥ r, and never attacked there
    for e, eps in enumerate(joined.eps):
        assert not (joined.correct[e] & (joined.radii <= eps)).any()
    by_fmn = joined.breaker == 1
    assert by_fmn[1:].any(), "the pass broke something"
    assert sum(calls) == sum(int(joined.correct[e - 1].sum() - ((joined.breaker[e] == 1) & joined.correct[e - 1]).sum())
                             for e in range(1, len(joined.eps)))
    star = joined.eps_star
    assert np.all(star[~joined.correct[0]] == 0)
    assert np.allclose(joined.accuracy_at(joined.eps), joined.accuracy), "the step curve meets the grid at its points"


def test_exact_expected_robustness_integrates_the_step_curve():
    grid = [0.0, 2.0, 4.0, 8.0]
    star = np.array([0.0, 1.0, 3.0, 5.0, np.inf, 8.0])
    assert expected_robustness_exact(grid, star) == pytest.approx(np.minimum(star, 8.0).mean() / 8.0)
    weights = [1.0, 2.0, 0.5, 3.0]
    fine = np.linspace(0, 8, 80001)
    w = np.interp(fine, grid, weights)
    acc = (star[None, :] > fine[:, None]).mean(1)
    numeric = np.trapezoid(w * acc, fine) / np.trapezoid(w, fine)
    assert expected_robustness_exact(grid, star, weights) == pytest.approx(numeric, abs=1e-4)
    # on a fine grid the trapezoid rule of the grid curve approaches the exact integral
    curve = [(star > e).mean() for e in fine[::100]]
    assert expected_robustness(fine[::100].tolist(), curve) == pytest.approx(np.minimum(star, 8).mean() / 8, abs=2e-3)


def test_radii_survive_a_save_and_load(model, data, tmp_path):
    result = evaluate(model, data, GRID[:3], {"fmn": FMN(steps=10)}, device=CPU, image_size=8)
    result.save(tmp_path)
    again = RobustnessResult.load(tmp_path)
    assert np.array_equal(again.radii, result.radii) and again.expected_exact == result.expected_exact
    assert again.summary()["min_norm"]["expected_robustness_exact"] == result.expected_exact


# ---------------------------------------------------------------------------- the AutoAttack check and preset
@pytest.mark.heavy
def test_the_autoattack_check_flags_a_weak_evaluation_and_passes_a_strong_one(model, data):
    weak = {"pgd": PGD(num_steps=1, rel_step_size=0.05, random_start=False, select="misclassified")}
    strong = {"apgd-ce": APGD(num_steps=50, select="misclassified"),
              "apgd-t": APGD(num_steps=50, loss="dlr-targeted", targets=3, select="misclassified")}
    checks = SanityChecks(n=20, square_queries=50, autoattack_n=32)
    grid = [8 / 255]
    flagged = evaluate(model, data, grid, weak, device=CPU, image_size=8, checks=checks)
    passed = evaluate(model, data, grid, strong, device=CPU, image_size=8, checks=checks)
    f_weak = next(f for f in flagged.checks if f.name == "autoattack")
    f_strong = next(f for f in passed.checks if f.name == "autoattack")
    assert f_weak.raised and f_weak.value > 0.01 and "AutoAttack" in f_weak.message
    assert f_strong.raised is False, f_strong.message
    assert all(f.name != "autoattack" for f in evaluate(model, data, grid, strong, device=CPU, image_size=8,
                                                        checks=SanityChecks(n=20, square_queries=50)).checks)


def test_the_curve_preset_sets_its_attacks_warm_starts_and_autoattack_check():
    cfg = EvalConfig(attacks=["curve"])
    assert expand_attacks(cfg.attacks) == ["fmn", "apgd-ce", "apgd-t"]
    assert cfg.settings.warm_start is True and cfg.settings.check_autoattack == 100 and cfg.warm_start is None
    plain = EvalConfig(attacks=["apgd-ce"])
    assert plain.settings.warm_start is False and plain.settings.check_autoattack == 0
    off = EvalConfig(attacks=["curve"], warm_start=False, check_autoattack=0)
    assert off.settings.warm_start is False and off.settings.check_autoattack == 0
    attacks = build_eval_attacks(cfg, "linf")
    assert isinstance(attacks["fmn"], FMN) and attacks["apgd-t"].loss == "dlr-targeted"
    assert evaluation_name(cfg) == "fmn+apgd-ce+apgd-t"
    assert cfg.settings.mode == "downward" and plain.settings.mode == "incremental"
    assert cfg.settings.num_steps == 100 and plain.settings.num_steps == 10
    # settings follow the attacks: the same section with other attacks is resolved again, its own values kept
    strong = dataclasses.replace(cfg, attacks=["strong"])
    assert strong.settings == EvalSettings() and dataclasses.replace(off, attacks=["cheap"]).settings.warm_start is False
    assert dataclasses.replace(EvalConfig(num_steps=7), attacks=["curve"]).settings.num_steps == 7
    assert evaluation_name(EvalConfig(attacks=["curve"], mode="incremental")) == "fmn+apgd-ce+apgd-t-incremental"
    assert evaluation_name(EvalConfig(attacks=["apgd-ce"], mode="downward")) == "apgd-ce-downward"
    assert evaluation_name(EvalConfig(attacks=["apgd-ce"], mode="independent")) == "apgd-ce-independent"


@pytest.mark.heavy
def test_cli_eval_with_the_curve_preset_end_to_end(tmp_path, capsys, monkeypatch):
    """Train a tiny run, evaluate it with ``--attacks curve``: warm starts, the FMN radii and the AutoAttack
    check land in robustness.json, the report draws the curve between grid points, export carries the exact
    E.adv."""
    import json

    from robustft.analysis.stats import load_results
    from robustft.api import fine_tune
    from robustft.attacks import AutoAttack
    from robustft.cli import main
    from robustft.config import load_config
    from robustft.eval import checks
    from robustft.export import export_run
    from robustft.report.plots import _step_curve

    cfg = load_config(None, TINY + ["train.epochs=1", "schedule.t1=0", "schedule.t2=1", f"train.out_dir={tmp_path}", "train.run_name=r",
                                    "eval.checks=false"])
    run = fine_tune(cfg)
    # the reference of the AutoAttack check is AutoAttack's APGD-CE alone here: the wiring is what this tests (the
    # standard AutoAttack's Square and FAB-T on the survivors of a tiny model take 30 s; the check itself:
    # test_the_autoattack_check_flags_a_weak_evaluation_and_passes_a_strong_one)
    monkeypatch.setattr(checks, "AutoAttack", lambda components=(), **kw: AutoAttack(components=components or ("apgd-ce",),
                                                                                     **kw))
    # the preset's settings but its budgets: fewer steps and check examples (the settings are what is tested)
    code = main(["eval", str(run.path), "--attacks", "curve", "--set", "eval.checks=true", "eval.check_autoattack=16",
                 "eval.fmn_steps=20", "eval.targets=2", "eval.num_steps=10", "eval.warm_steps=4", "eval.check_n=16"])
    assert code == 0
    info = json.loads((run.path / "eval" / "fmn+apgd-ce+apgd-t" / "robustness.json").read_text())
    assert info["protocol"]["start"] == "warm" and info["protocol"]["mode"] == "downward"
    assert info["protocol"]["attack_order"] == ["fmn", "apgd-ce", "apgd-t"]
    assert 0 <= info["min_norm"]["expected_robustness_exact"] <= info["clean"]
    assert any(f["name"] == "autoattack" and f["raised"] is not None for f in info["flags"])
    [result] = load_results([run.path], evaluation="fmn+apgd-ce+apgd-t")
    eps, acc = _step_curve(result)
    assert eps[0] == 0 and eps[-1] == pytest.approx(8.0) and acc[0] == pytest.approx(info["clean"])
    assert np.all(np.diff(acc) <= 0), "the step curve falls with ε"
    export_run(run.path, tmp_path / "export", evaluation="fmn+apgd-ce+apgd-t")
    exported = json.loads((tmp_path / "export" / "model_info.json").read_text())
    assert float(exported["robustft"]["e_adv_exact"]) == pytest.approx(100 * info["min_norm"]["expected_robustness_exact"],
                                                                        abs=0.01)


def test_the_result_says_where_the_evaluations_time_went_and_keeps_it_across_a_resume(model, data, tmp_path):
    apgd, fmn = APGD(num_steps=4, select="misclassified"), FMN(steps=20)
    run = dict(device=CPU, image_size=8, batch_size=16, seed=3, warm_start=True, mode="downward", checks=False)
    whole = evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": apgd}, **run)
    assert whole.costs[0]["eps"] is None and whole.costs[0]["attack"] == "fmn"
    assert whole.costs[0]["examples"] == int(whole.correct[0].sum())
    grid_rows = whole.costs[1:]
    assert grid_rows[0]["eps"] == format_eps(GRID[-1]) and all(r["attack"] == "apgd-ce" for r in grid_rows)
    assert all(r["seconds"] >= 0 and r["examples"] > 0 for r in grid_rows)
    state = tmp_path / "partial.npz"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": Interrupting(apgd, 3)}, state_path=state, **run)
    resumed = evaluate(model, data, GRID, {"fmn": fmn, "apgd-ce": Interrupting(apgd, None)}, state_path=state, **run)
    assert [(r["eps"], r["attack"], r["examples"]) for r in resumed.costs] == \
        [(r["eps"], r["attack"], r["examples"]) for r in whole.costs]


class EpsRecorder:
    """An attack that records the ε it is called at and breaks nothing."""

    def __init__(self):
        self.eps_seen: list[float] = []

    def __call__(self, model, x, y, eps):
        self.eps_seen.append(eps)
        return x


@pytest.mark.parametrize("mode", ["downward", "incremental"])
def test_attacks_at_target_run_at_eps_g_only(model, data, mode):
    everywhere, at_target = EpsRecorder(), EpsRecorder()
    result = evaluate(model, data, GRID, {"apgd-ce": APGD(num_steps=3, select="misclassified"),
                                          "everywhere": everywhere, "late": at_target},
                      device=CPU, image_size=8, batch_size=64, mode=mode, at_target=["late"])
    assert set(at_target.eps_seen) == {GRID[-1]} and len(set(everywhere.eps_seen)) > 1
    assert result.protocol["at_target"] == ["late"]
    with pytest.raises(ValueError, match="at_target: nope not among the attacks"):
        evaluate(model, data, GRID, {"apgd-ce": APGD(num_steps=1)}, device=CPU, image_size=8, at_target=["nope"])


def test_the_aa_curve_preset_adds_fab_t_and_square_at_eps_g():
    cfg = EvalConfig(attacks=["aa-curve"])
    assert expand_attacks(cfg.attacks) == ["fmn", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert cfg.settings.at_target == ("fab-t", "square") and cfg.settings.mode == "downward"
    assert evaluation_name(cfg) == "fmn+apgd-ce+apgd-t+fab-t+square"
    assert evaluation_name(EvalConfig(attacks=["aa-curve"], at_target=[])) == "fmn+apgd-ce+apgd-t+fab-t+square-every-eps"
    with pytest.raises(ConfigError, match="eval.at_target: square not among eval.attacks"):
        load_config(None, ["eval.attacks=[curve]", "eval.at_target=[square]"])
