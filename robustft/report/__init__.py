"""Reports read run directories only."""

from robustft.analysis import diagnose_run, run_row
from robustft.report.diagnose import render_diagnosis
from robustft.report.render import render_report
from robustft.report.table import evaluation_report, results_table

__all__ = ["diagnose_run", "evaluation_report", "render_diagnosis", "render_report", "results_table", "run_row"]
