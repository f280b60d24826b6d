"""Evaluation: the ε-grid evaluator, its result (the evidence matrix) and derived metrics."""

from robustft.eval.evaluator import default_eps_grid, evaluate
from robustft.eval.metrics import accuracy, delay_time, expected_robustness
from robustft.eval.result import RobustnessResult

__all__ = ["RobustnessResult", "accuracy", "default_eps_grid", "delay_time", "evaluate", "expected_robustness"]
