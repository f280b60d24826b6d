"""Experiments: sweeps over configs, hyper-parameter search (Ray Tune, optional), statistics across runs,
and the demo."""

from robustft.experiments.stats import aggregate, compare_to_fix, load_results, paired_ttest
from robustft.experiments.sweep import expand, load_sweep, run_sweep

__all__ = ["aggregate", "compare_to_fix", "expand", "load_results", "load_sweep", "paired_ttest", "run_sweep"]
