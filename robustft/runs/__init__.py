"""Run directories: a folder that describes one run and everything it produced."""

from robustft.runs.rundir import (RESUMABLE_KEYS, RunDir, atomic_write, atomic_write_text, remove_temp_files, versions,
                                   write_json)

__all__ = ["RESUMABLE_KEYS", "RunDir", "atomic_write", "atomic_write_text", "remove_temp_files", "versions",
           "write_json"]
