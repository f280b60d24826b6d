"""Reports read run directories only."""

from robustft.report.table import evaluation_report, results_table, run_row

__all__ = ["evaluation_report", "results_table", "run_row"]
