"""Run directories: a folder that describes one run and everything it produced."""

from robustft.runs.rundir import RunDir, atomic_write, atomic_write_text, versions, write_json

__all__ = ["RunDir", "atomic_write", "atomic_write_text", "versions", "write_json"]
