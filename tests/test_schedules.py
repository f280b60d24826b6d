"""Tests of robustft.schedules: the ε multiplier α(t) (Epsilon-Scheduling) and the cosine LR schedule."""

from __future__ import annotations

import math

import pytest

from robustft.config import OptimConfig, ScheduleConfig
from robustft.schedules import (
    HingeSchedule,
    build_eps_schedule,
    build_lr_schedule,
    cosine_lr_multiplier,
    hinge_multiplier,
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
