"""Analysis of run directories, below the reports that render it and the experiments that run it: one row of
numbers per run, statistics across runs (mean ± std over seeds, paired t-tests) and the suboptimal-transfer
diagnosis."""

from robustft.analysis.diagnosis import diagnose_run, load_curve, training_verdict
from robustft.analysis.rows import RunRow, run_row
from robustft.analysis.stats import aggregate, compare_to_fix, load_results, paired_ttest

__all__ = ["RunRow", "aggregate", "compare_to_fix", "diagnose_run", "load_curve", "load_results", "paired_ttest", "run_row",
           "training_verdict"]
