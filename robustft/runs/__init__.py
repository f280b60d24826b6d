"""Run directories: a folder that describes one run and everything it produced."""

from robustft.runs.metrics import EpochRow, MetricsFormatError, StepRow, read_rows
from robustft.runs.record import RunRecord
from robustft.runs.robustness import ROBUSTNESS_FILE, CheckOutcome, CurvePoint, MinNormSummary, RobustnessSummary
from robustft.runs.rundir import (
    RESUMABLE_KEYS,
    UNKNOWN,
    RunDir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_temp_files,
    run_config_from_dict,
    versions,
    write_json,
)
from robustft.runs.summary import TrainSummary

__all__ = ["CheckOutcome", "CurvePoint", "EpochRow", "MetricsFormatError", "MinNormSummary", "RESUMABLE_KEYS",
           "ROBUSTNESS_FILE", "RobustnessSummary", "RunDir", "RunRecord", "StepRow", "TrainSummary", "UNKNOWN",
           "atomic_write", "atomic_write_bytes", "atomic_write_text", "read_rows", "remove_temp_files",
           "run_config_from_dict", "versions", "write_json"]
