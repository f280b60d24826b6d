"""Tests of robustft.schedules: the ε multiplier α(t) (Epsilon-Scheduling) and the cosine LR schedule."""

from __future__ import annotations

import math

import pytest

from robustft.config import OptimConfig, ScheduleConfig
from robustft.schedules import (
    AutoSchedule,
    HingeSchedule,
    PiecewiseSchedule,
    UniformSchedule,
    build_eps_schedule,
    build_lr_schedule,
    cosine_lr_multiplier,
    hinge_multiplier,
    plateau_epoch,
    resolve_hinges,
    to_epochs,
)

EPS = 8 / 255


# ------------------------------------------------------------------------------------ hinge α
@pytest.mark.parametrize("epoch,alpha", [(0, 0.0), (11, 0.0), (12, 0.0), (13, 1 / 25), (24, 12 / 25),
                                         (36, 24 / 25), (37, 1.0), (49, 1.0)])
def test_hinge_paper_defaults(epoch, alpha):
    assert hinge_multiplier(epoch, 12, 37) == pytest.approx(alpha, abs=1e-12)
    sched = build_eps_schedule(ScheduleConfig(kind="hinge", t1=12, t2=37), EPS, epochs=50)
    assert (sched.t1, sched.t2) == (12.0, 37.0)
    assert sched.multiplier(epoch) == pytest.approx(alpha, abs=1e-12)
    assert sched.eps_at(epoch) == pytest.approx(alpha * EPS, abs=1e-15)


def test_hinge_between_hinges_is_linear():
    for t in (12.5, 20.25, 36.9):
        assert hinge_multiplier(t, 12, 37) == pytest.approx((t - 12) / 25)


def test_hinge_monotone_non_decreasing_and_bounded():
    ts = [i / 10 for i in range(0, 501)]
    values = [hinge_multiplier(t, 12, 37) for t in ts]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert min(values) == 0.0 and max(values) == 1.0


# ------------------------------------------------------------------------------------ build_eps_schedule
def test_fix_is_always_one_and_equals_hinge_at_zero():
    sched = build_eps_schedule(ScheduleConfig(kind="fix"), EPS, epochs=8)
    assert (sched.t1, sched.t2) == (0.0, 0.0)
    for epoch in range(8):
        assert sched.multiplier(epoch) == 1.0 == hinge_multiplier(epoch, 0, 0)
        assert sched.eps_at(epoch) == EPS
    step_sched = build_eps_schedule(ScheduleConfig(kind="fix", granularity="step"), EPS, epochs=8)
    assert step_sched.multiplier(0, 0, 10) == 1.0 and step_sched.multiplier(0, 3, 10) == 1.0


def test_hinge_with_fractions_of_training():
    sched = build_eps_schedule(ScheduleConfig(kind="hinge", t1=0.25, t2=0.75), EPS, epochs=8)
    assert (sched.t1, sched.t2) == (2.0, 6.0)
    assert [sched.multiplier(e) for e in range(8)] == pytest.approx([0, 0, 0, 0.25, 0.5, 0.75, 1, 1])


def test_hinge_defaults_are_quarter_and_three_quarters():
    assert resolve_hinges(ScheduleConfig(kind="hinge"), 8) == (2.0, 6.0)
    assert resolve_hinges(ScheduleConfig(kind="hinge"), 50) == (12.5, 37.5)


def test_hinge_with_integer_epochs_matches_fractions():
    ints = build_eps_schedule(ScheduleConfig(kind="hinge", t1=2, t2=6), EPS, epochs=8)
    fracs = build_eps_schedule(ScheduleConfig(kind="hinge", t1=0.25, t2=0.75), EPS, epochs=8)
    assert (ints.t1, ints.t2) == (2.0, 6.0)
    assert [ints.eps_at(e) for e in range(8)] == [fracs.eps_at(e) for e in range(8)]


def test_to_epochs_int_vs_float():
    assert to_epochs(3, 8) == 3.0  # an int is whole epochs
    assert to_epochs(0.5, 8) == 4.0  # a float is a fraction
    assert to_epochs(1.0, 8) == 8.0


def test_warmup_starts_at_zero():
    sched = build_eps_schedule(ScheduleConfig(kind="warmup", t2=4), EPS, epochs=8)
    assert (sched.t1, sched.t2) == (0.0, 4.0)
    assert [sched.multiplier(e) for e in range(6)] == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1])
    default = build_eps_schedule(ScheduleConfig(kind="warmup"), EPS, epochs=8)
    assert (default.t1, default.t2) == (0.0, 6.0)


def test_switch_jumps_at_its_hinge():
    sched = build_eps_schedule(ScheduleConfig(kind="switch", t1=3), EPS, epochs=8)
    assert sched.t1 == sched.t2 == 3.0
    assert [sched.multiplier(e) for e in range(8)] == [0, 0, 0, 1, 1, 1, 1, 1]
    default = build_eps_schedule(ScheduleConfig(kind="switch"), EPS, epochs=8)
    assert default.t1 == default.t2 == 4.0
    assert [default.multiplier(e) for e in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_t2_before_t1_rejected():
    with pytest.raises(ValueError, match="t2"):
        resolve_hinges(ScheduleConfig(kind="hinge", t1=6, t2=2), 8)


# ------------------------------------------------------------------------------------ granularity
def test_per_step_granularity():
    sched = build_eps_schedule(ScheduleConfig(kind="hinge", t1=2, t2=6, granularity="step"), EPS, epochs=8)
    per_epoch = build_eps_schedule(ScheduleConfig(kind="hinge", t1=2, t2=6), EPS, epochs=8)
    assert sched.per_step and not per_epoch.per_step
    steps = 10
    for epoch in range(8):
        # at step 0 both agree
        assert sched.multiplier(epoch, 0, steps) == per_epoch.multiplier(epoch)
    # within epoch 3: strictly between α(3) and α(4), equal to the hinge at the fractional time
    values = [sched.multiplier(3, s, steps) for s in range(steps)]
    assert values == pytest.approx([(3 + s / steps - 2) / 4 for s in range(steps)])
    assert all(per_epoch.multiplier(3) < v < per_epoch.multiplier(4) for v in values[1:])
    assert all(b > a for a, b in zip(values, values[1:]))
    # per-epoch granularity ignores the step: ε constant within an epoch
    assert {per_epoch.multiplier(3, s, steps) for s in range(steps)} == {per_epoch.multiplier(3)}
    assert sched.eps_at(3, 5, steps) == pytest.approx(sched.multiplier(3, 5, steps) * EPS)


def test_eps_at_is_alpha_times_target():
    sched = HingeSchedule(eps_target=0.5, t1=1, t2=3)
    for epoch in range(5):
        assert sched.eps_at(epoch) == pytest.approx(0.5 * hinge_multiplier(epoch, 1, 3))
    assert sched.eps_at(0) == 0.0 and sched.eps_at(2) == pytest.approx(0.25) and sched.eps_at(4) == 0.5


# ------------------------------------------------------------------------------------ special cases
def _values(sched, epochs, steps=None):
    """α at every epoch, or at every step of every epoch."""
    if steps is None:
        return [sched.multiplier(e) for e in range(epochs)]
    return [sched.multiplier(e, s, steps) for e in range(epochs) for s in range(steps)]


def _build(epochs=10, **kw):
    return build_eps_schedule(ScheduleConfig(**kw), EPS, epochs=epochs)


@pytest.mark.parametrize("granularity,steps", [("epoch", None), ("step", 7)])
def test_special_cases_equal_each_other(granularity, steps):
    g = {"granularity": granularity}
    assert _values(_build(kind="hinge", t1=0, t2=0, **g), 10, steps) == _values(_build(kind="fix", **g), 10, steps)
    assert _values(_build(kind="hinge", t1=0, t2=6, **g), 10, steps) == _values(_build(kind="warmup", t2=6, **g), 10, steps)
    assert _values(_build(kind="hinge", t1=4, t2=4, **g), 10, steps) == _values(_build(kind="switch", t1=4, **g), 10, steps)
    end = 10 if granularity == "step" else 9  # the end of training: the last epoch, or E with per-step ε
    assert _values(_build(kind="hinge", t1=0, t2=end, **g), 10, steps) == _values(_build(kind="linear", **g), 10, steps)
    hinge_points = [[0, 0], [0.25, 0], [0.75, 1], [1, 1]]
    assert _values(_build(kind="piecewise", points=hinge_points, **g), 10, steps) == pytest.approx(
        _values(_build(kind="hinge", t1=0.25, t2=0.75, **g), 10, steps), abs=1e-12)


def test_linear_ramps_over_the_whole_run():
    sched = _build(kind="linear", epochs=10)
    assert (sched.t1, sched.t2) == (0.0, 9.0)
    assert _values(sched, 10) == pytest.approx([e / 9 for e in range(10)])  # the final epoch trains at ε_g
    steps = _build(kind="linear", epochs=4, granularity="step")
    assert (steps.t1, steps.t2) == (0.0, 4.0)
    assert steps.multiplier(3, 5, 10) == pytest.approx(3.5 / 4)
    assert _build(kind="linear", epochs=1).multiplier(0) == 1.0  # a one-epoch run is at ε_g, like fix


def test_piecewise_follows_its_points_and_is_flat_outside():
    sched = _build(kind="piecewise", epochs=10, points=[[0.2, 0.0], [0.5, 1.5], [0.8, 1.0]])
    assert isinstance(sched, PiecewiseSchedule)
    expected = [0, 0, 0, 0.5, 1.0, 1.5, 4 / 3, 7 / 6, 1.0, 1.0]
    assert _values(sched, 10) == pytest.approx(expected)
    assert sched.eps_at(5) == pytest.approx(1.5 * EPS)  # a multiplier may exceed 1
    per_step = _build(kind="piecewise", epochs=10, points=[[0, 0], [1, 1]], granularity="step")
    assert per_step.multiplier(2, 5, 10) == pytest.approx(0.25)


def test_uniform_draws_once_per_epoch_reproducibly():
    a = build_eps_schedule(ScheduleConfig(kind="uniform"), EPS, epochs=50, seed=3)
    b = build_eps_schedule(ScheduleConfig(kind="uniform"), EPS, epochs=50, seed=3)
    other = build_eps_schedule(ScheduleConfig(kind="uniform"), EPS, epochs=50, seed=4)
    values = _values(a, 50)
    assert isinstance(a, UniformSchedule)
    assert values == _values(b, 50) and values != _values(other, 50)
    assert all(0 <= v < 1 for v in values) and len(set(values)) == 50
    assert 0.3 < sum(values) / 50 < 0.7  # mean of U[0, 1]
    assert {a.multiplier(7, s, 10) for s in range(10)} == {a.multiplier(7)}  # constant within an epoch
    # a fresh schedule (as after a resume) gives the same value for any epoch, in any order
    assert [UniformSchedule(EPS, seed=3).multiplier(e) for e in reversed(range(50))] == values[::-1]
    assert a.eps_at(7) == pytest.approx(a.multiplier(7) * EPS)


def test_uniform_per_step_draws_every_step():
    sched = build_eps_schedule(ScheduleConfig(kind="uniform", granularity="step"), EPS, epochs=5, seed=0)
    values = [sched.multiplier(2, s, 10) for s in range(10)]
    assert len(set(values)) == 10 and values == [sched.multiplier(2, s, 10) for s in range(10)]


# ------------------------------------------------------------------------------------ auto
@pytest.mark.parametrize("history,patience,tol,relative,expected", [
    ([0.3, 0.6, 0.8, 0.81, 0.805, 0.81], 3, 0.02, False, 5),   # flat after epoch 2: three epochs without +2 points
    ([0.3, 0.6, 0.8, 0.81, 0.805, 0.81], 5, 0.02, False, None),  # not patient enough yet
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1, 0.02, False, None),      # still climbing
    ([0.5, 0.515, 0.53, 0.545], 2, 0.02, False, None),          # gains of 1.5 points add up past the margin
    ([0.5, 0.515, 0.52, 0.51], 2, 0.02, False, 2),
    ([0.50, 0.505, 0.509], 2, 0.02, True, 2),                   # relative: 2 % of 0.5 is 1 point
    ([0.50, 0.505, 0.52], 2, 0.02, True, None),
    ([0.5, 0.4], 1, 0.0, False, 1),                             # a drop counts as no improvement
])
def test_plateau_epoch(history, patience, tol, relative, expected):
    assert plateau_epoch(history, patience, tol, relative) == expected


def _auto(epochs=10, **kw):
    return build_eps_schedule(ScheduleConfig(kind="auto", **kw), EPS, epochs=epochs)


def _feed(sched, history):
    for epoch, acc in enumerate(history):
        sched = sched.observe(epoch, acc)
    return sched


def test_auto_holds_zero_until_the_plateau_then_ramps_to_the_end():
    sched = _auto(patience=2)
    assert isinstance(sched, AutoSchedule) and sched.patience == 2 and sched.tolerance == 0.02
    curve = [0.4, 0.7, 0.8, 0.8, 0.79, 0.81, 0.85, 0.9, 0.9, 0.9]
    seen = []
    for epoch, acc in enumerate(curve):
        seen.append(sched.multiplier(epoch))  # what epoch `epoch` trains at
        sched = sched.observe(epoch, acc)
    # epochs 3 and 4 do not beat epoch 2's 0.8 by 2 points: plateau at epoch 4, so the ramp is the hinge
    # T1 = 4, T2 = 9 (the last epoch): ε > 0 from epoch 5 on, ε_g in the final epoch
    assert sched.switch == 4.0
    assert seen == pytest.approx([0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert sched.observe(10, 0.1).switch == 4.0  # once switched, it stays switched


def test_auto_never_switches_while_accuracy_keeps_improving():
    sched = _feed(_auto(patience=1), [0.1 * i for i in range(10)])
    assert sched.switch is None and _values(sched, 10) == [0.0] * 10


def test_auto_ramp_end_and_relative_tolerance():
    sched = _feed(_auto(patience=1, t2=0.6, tolerance_mode="relative", tolerance=0.1), [0.5, 0.54])
    assert sched.relative and sched.switch == 1.0 and sched.ramp_end == 6.0
    assert _values(sched, 8) == pytest.approx([0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1])
    late = _feed(_auto(patience=2, t2=1), [0.5, 0.5, 0.5])  # plateau after the ramp's end: a hard switch
    assert late.switch == 2.0 and _values(late, 5) == [0, 0, 0, 1, 1]


def test_auto_latest_t1_forces_the_ramp_on_a_curve_that_keeps_improving():
    rising = [0.1 * i for i in range(10)]
    sched = _feed(_auto(patience=2, latest_t1=0.5), rising)
    assert sched.latest == 5.0 and sched.switch == 5.0  # the ramp of hinge(T1 = 5, T2 = 9)
    assert _values(sched, 10) == _values(_build(kind="hinge", t1=5, t2=9), 10)
    early = _feed(_auto(patience=1, latest_t1=8), [0.5, 0.5])  # a plateau before the cap wins
    assert early.switch == 1.0
    assert _feed(_auto(patience=2), rising).switch is None  # the paper's rule: never forced


def test_auto_per_step_ramps_within_epochs():
    sched = _feed(_auto(patience=1, granularity="step"), [0.5, 0.5])
    assert sched.switch == 1.0 and sched.ramp_end == 10.0  # plateau at epoch 1: the ramp runs from t = 2 to 10
    assert sched.multiplier(2, 0, 4) == 0.0
    assert sched.multiplier(3, 2, 4) == pytest.approx(1.5 / 8)
    assert sched.multiplier(1, 3, 4) == 0.0  # the plateau epoch itself trained at ε = 0


def test_auto_state_round_trip_and_order_check():
    sched = _feed(_auto(patience=2), [0.4, 0.8, 0.8, 0.8])
    state = sched.state()
    assert state == {"history": [0.4, 0.8, 0.8, 0.8], "switch": 3.0}
    restored = _auto(patience=2).with_state(state)
    assert restored == sched and _values(restored, 10) == _values(sched, 10)
    with pytest.raises(ValueError, match="epoch 4"):
        sched.observe(6, 0.9)  # an epoch was skipped


def test_pure_schedules_have_no_state():
    for kind in ("fix", "hinge", "warmup", "switch", "linear", "uniform", "piecewise"):
        sched = _build(kind=kind, **({"points": [[0, 0], [1, 1]]} if kind == "piecewise" else {}))
        assert sched.state() == {} and sched.observe(0, 0.5) is sched and sched.with_state({}) is sched
        assert sched.describe()["kind"] == kind


# ------------------------------------------------------------------------------------ learning rate
def test_cosine_lr_warmup_is_linear():
    warm = [cosine_lr_multiplier(s, total_steps=100, warmup_steps=10) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert cosine_lr_multiplier(10, 100, 10) == pytest.approx(1.0)


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_cosine_lr_decays_to_min_ratio_monotonically(min_ratio):
    total, warmup = 100, 10
    after = [cosine_lr_multiplier(s, total, warmup, min_ratio) for s in range(warmup, total + 1)]
    assert after[0] == pytest.approx(1.0)
    assert after[-1] == pytest.approx(min_ratio, abs=1e-12)
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))
    assert all(min_ratio - 1e-12 <= v <= 1.0 + 1e-12 for v in after)
    # halfway through the decay the cosine is at its midpoint
    mid = warmup + (total - warmup) // 2
    assert cosine_lr_multiplier(mid, total, warmup, min_ratio) == pytest.approx(min_ratio + (1 - min_ratio) / 2)
    # never goes below min_ratio, even past the end
    assert cosine_lr_multiplier(total + 50, total, warmup, min_ratio) == pytest.approx(min_ratio)


def test_cosine_lr_without_warmup_starts_at_peak():
    assert cosine_lr_multiplier(0, 50, 0) == 1.0
    assert cosine_lr_multiplier(25, 50, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_build_lr_schedule_counts_steps():
    lr = build_lr_schedule(OptimConfig(warmup_epochs=1.0, min_lr_ratio=0.05), epochs=4, steps_per_epoch=5)
    assert lr(0) == pytest.approx(0.2) and lr(4) == pytest.approx(1.0)
    assert lr(5) == pytest.approx(1.0)
    assert lr(20) == pytest.approx(0.05)
    fractional = build_lr_schedule(OptimConfig(warmup_epochs=0.5), epochs=2, steps_per_epoch=10)
    assert fractional(0) == pytest.approx(1 / 5) and fractional(4) == pytest.approx(1.0)
