"""A sweep, then what it found: train the points not yet DONE, tabulate the finished runs and render their
report. ``robustft sweep`` and ``robustft demo`` both run :func:`sweep_and_report` and print its text."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from robustft.config import Config
from robustft.experiments.cluster import STATE_DIR, RayOptions
from robustft.experiments.sweep import SweepOutcome, SweepPoint, SweepSpec, expand, finished_runs, run_sweep
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
    import json

    record = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        record = {p["name"]: p for p in json.loads((spec.out_dir / "sweep.json").read_text())["points"]}
    rows = ["| run | state | epoch | attempt | host | error |", "|---|---|---|---|---|---|"]
    counts: dict[str, int] = {}
    for point in expand(spec):
        run, seen, started = RunDir(spec.out_dir / point.name), record.get(point.name, {}), False
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):  # a Ray sweep's last attempt
            seen, started = {**json.loads((spec.out_dir / STATE_DIR / f"{point.name}.json").read_text()), **seen}, True
        epochs = len(run.epoch_rows()) if run.metrics_path.is_file() else 0
        if run.done:
            state = "DONE"
        elif seen.get("status") == "queued" and started:  # its task began since the driver last looked
            state = "running"
        elif seen.get("status") in ("running", "queued", "failed"):
            state = seen["status"]
        else:
            state = "killed" if run.path.exists() else "not started"
        counts[state] = counts.get(state, 0) + 1
        error = (seen.get("error") or "").replace("|", "/")[:120] if state == "failed" else ""
        rows.append(f"| {point.name} | {state} | {epochs}/{point.config.train.epochs} | {seen.get('attempt') or ''} | "
                    f"{seen.get('host') or ''} | {error} |")
    return "\n".join(rows) + "\n\n" + ", ".join(f"{k}: {v}" for k, v in counts.items())
