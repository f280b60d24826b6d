"""A sweep, then what it found: train the points not yet DONE, tabulate the finished runs and render their
report. ``robustft sweep`` and ``robustft demo`` both run :func:`sweep_and_report` and print its text."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from robustft.config import Config
from robustft.errors import MetricsFormatError
from robustft.experiments.cluster import RayOptions, read_attempt
from robustft.experiments.state import PointState, SweepOutcome, SweepState
from robustft.experiments.sweep import SweepPoint, SweepSpec, expand, finished_runs, run_sweep
from robustft.report import render_report, results_table
from robustft.report.render import ReportFiles
from robustft.runs import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep_and_report` did and produced."""

    label: str
    """What ran, e.g. ``sweep sweeps/schedules.yaml`` or ``demo``."""
    points: list[SweepPoint]
    out_dir: Path
    outcome: SweepOutcome
    finished: list[Path]
    """Run directories that are DONE, in sweep order."""
    table: str
    """The results table of the finished runs ("" when none finished)."""
    report: ReportFiles | None
    """None when no report was asked for or no run finished."""

    @property
    def failed(self) -> list[str]:
        """Names of the points that failed."""
        return self.outcome.names("failed")

    def text(self) -> str:
        """The results table, what the sweep did with each point, then the report's findings (paired t-tests,
        sanity checks, diagnosis) and where the report is."""
        parts = [self.table] if self.table else []
        parts.append(f"{self.label}: {len(self.points)} runs in {self.out_dir}\n{self.outcome.summary()}")
        if self.report is not None:
            parts += [self.report.findings, f"report: {self.report.html}\n        {self.report.markdown}"]
        return "\n\n".join(parts)


def sweep_and_report(spec: SweepSpec, jobs: int = 1, report: bool = True, title: str = "robustft report",
                     label: str = "sweep", train: Callable[[Config], Any] | None = None,
                     ray: RayOptions | None = None) -> SweepResult:
    """Run every point of ``spec`` not yet DONE, ``jobs`` at a time or as Ray tasks (:func:`run_sweep`,
    ``train`` as there), then tabulate the finished runs and, if ``report``, render their report into
    ``OUT_DIR/report``."""
    points = expand(spec)
    log.info("%s: %d runs (%s) into %s; finished runs are reused, a killed run resumes", label, len(points),
             ", ".join(p.name for p in points), spec.out_dir)
    outcome = run_sweep(points, spec.out_dir, train, jobs, ray)
    finished = finished_runs(points, spec.out_dir)
    files = render_report(finished, spec.out_dir / "report", title=title) if report and finished else None
    return SweepResult(label, points, spec.out_dir, outcome, finished, results_table(finished) if finished else "",
                       files)


def sweep_plan(spec: SweepSpec) -> str:
    """The run directories a sweep makes, one a line with its grid values; nothing runs."""
    return "\n".join(f"{spec.out_dir / p.name}  " + " ".join(f"{k}={v}" for k, v in p.values.items())
                     for p in expand(spec))


def sweep_status(spec: SweepSpec) -> str:
    """Every point's state as a Markdown table, from the run directories and ``OUT_DIR/sweep.json`` (which a
    running sweep keeps current): DONE, running (epoch, attempt, host), queued, failed (its error), killed
    (started, not DONE, the sweep not running it) or not started; nothing runs."""
    try:
        record = SweepState.read(spec.out_dir)
    except MetricsFormatError as err:
        log.warning("%s; the points' states are read from their run directories only", err)
        record = SweepState()
    rows = ["| run | state | epoch | attempt | host | error |", "|---|---|---|---|---|---|"]
    counts: dict[str, int] = {}
    for point in expand(spec):
        run = RunDir(spec.out_dir / point.name)
        seen = record.point(point.name) or PointState(point.name)
        attempt = read_attempt(spec.out_dir, point.name)  # a Ray sweep's last attempt
        state = _point_status(run, seen, started=attempt is not None)
        counts[state] = counts.get(state, 0) + 1
        number = seen.attempt if seen.attempt is not None else (attempt or {}).get("attempt")
        host = seen.host if seen.host is not None else (attempt or {}).get("host")
        epochs = len(run.epoch_rows()) if run.metrics_path.is_file() else 0
        error = (seen.error or "").replace("|", "/")[:120] if state == "failed" else ""
        rows.append(f"| {point.name} | {state} | {epochs}/{point.config.train.epochs} | {number or ''} | "
                    f"{host or ''} | {error} |")
    return "\n".join(rows) + "\n\n" + ", ".join(f"{k}: {v}" for k, v in counts.items())


def _point_status(run: RunDir, seen: PointState, started: bool) -> str:
    """A point's state from its run directory, its entry of sweep.json and whether its Ray task has started."""
    if run.done:
        return "DONE"
    if seen.status == "queued" and started:  # its task began since the driver last looked
        return "running"
    if seen.status in ("running", "queued", "failed"):
        return seen.status
    return "killed" if run.path.exists() else "not started"
