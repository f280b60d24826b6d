"""Experiments: sweeps over configs, hyper-parameter search (Ray Tune, optional), the sweep → report pipeline
and the demo; statistics across runs are re-exported from :mod:`robustft.analysis`."""

from robustft.analysis.stats import aggregate, compare_to_fix, load_results, paired_ttest
from robustft.experiments.demo import run_demo
from robustft.experiments.pipeline import SweepResult, sweep_and_report, sweep_plan, sweep_status
from robustft.experiments.state import SweepState
from robustft.experiments.sweep import expand, load_sweep, run_sweep

__all__ = ["SweepResult", "SweepState", "aggregate", "compare_to_fix", "expand", "load_results", "load_sweep", "paired_ttest",
           "run_demo", "run_sweep", "sweep_and_report", "sweep_plan", "sweep_status"]
