"""Evaluation: the ε-grid evaluator, its result (the evidence matrix), sanity checks and derived metrics."""

from robustft.eval.checks import SanityChecks
from robustft.eval.evaluator import default_eps_grid, evaluate
from robustft.eval.metrics import accuracy, bootstrap_intervals, delay_time, expected_robustness, wilson_interval
from robustft.eval.result import Flag, RobustnessResult

__all__ = ["Flag", "RobustnessResult", "SanityChecks", "accuracy", "bootstrap_intervals", "default_eps_grid",
           "delay_time", "evaluate", "expected_robustness", "wilson_interval"]
