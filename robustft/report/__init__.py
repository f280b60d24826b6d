"""Reports read run directories only."""

from robustft.report.table import results_table, run_row

__all__ = ["results_table", "run_row"]
