"""Run directories: a folder that describes one run and everything it produced."""

from robustft.runs.metrics import EpochRow, MetricsFormatError, StepRow, read_rows
from robustft.runs.rundir import (
    RESUMABLE_KEYS,
    RunDir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_temp_files,
    versions,
    write_json,
)

__all__ = ["EpochRow", "MetricsFormatError", "RESUMABLE_KEYS", "RunDir", "StepRow", "atomic_write",
           "atomic_write_bytes", "atomic_write_text", "read_rows", "remove_temp_files", "versions", "write_json"]
