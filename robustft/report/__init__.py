"""Reports read run directories only."""

from robustft.report.diagnose import diagnose_run, render_diagnosis
from robustft.report.render import render_report
from robustft.report.table import evaluation_report, results_table, run_row

__all__ = ["diagnose_run", "evaluation_report", "render_diagnosis", "render_report", "results_table", "run_row"]
