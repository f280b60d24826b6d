"""The state of a sweep, ``OUT_DIR/sweep.json``: every point's status (``pending``, ``queued``, ``running``,
``ran``, ``skipped``, ``failed``), its error and time, and, while it runs on Ray, its epoch, attempt and host.

One schema, one writer, one reader: :class:`SweepRecorder` is what the sequential, process-pool and Ray back-ends
of :func:`robustft.experiments.sweep.run_sweep` report to, and it writes the file (:meth:`SweepState.write`) at
each change; :meth:`SweepState.read` reads it back (files written by earlier versions, with fewer keys, too).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from robustft.errors import MetricsFormatError
from robustft.experiments.point import SweepPoint
from robustft.runs import write_json

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
"""The sweep's state, in its ``out_dir``."""

PointResult = tuple[str, "str | None", "str | None", float]
"""What training one point gives: (status, error, traceback, seconds) (:func:`robustft.experiments.point.run_point`)."""

LIVE_KEYS = ("epoch", "epochs", "attempt", "host", "pid")
"""The keys sweep.json holds for a running point only."""


@dataclass
class SweepOutcome:
    """What a sweep did with each point: ``ran``, ``skipped`` (already DONE) or ``failed``."""

    status: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    """The points in sweep order: :meth:`names` lists them so, whatever order parallel runs end in."""

    def names(self, status: str) -> list[str]:
        """The points with ``status``, in sweep order."""
        named = [n for n, s in self.status.items() if s == status]
        rank = {n: i for i, n in enumerate(self.order)}
        return sorted(named, key=lambda n: rank.get(n, len(rank)))

    def summary(self) -> str:
        """One line per status, then each failure with its error."""
        lines = [f"{s}: {len(self.names(s))}" + (f" ({', '.join(self.names(s))})" if self.names(s) else "")
                 for s in ("ran", "skipped", "failed")]
        lines += [f"  {n} failed: {self.errors[n]}" for n in self.names("failed") if n in self.errors]
        return "\n".join(lines)


@dataclass(frozen=True)
class PointState:
    """One point's entry of sweep.json."""

    name: str
    variant: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    """The point's grid values (dotted key → value)."""
    status: str = "pending"
    """``pending``, ``queued``, ``running``, ``ran``, ``skipped`` or ``failed``."""
    error: str | None = None
    traceback: str | None = None
    seconds: float | None = None
    """Wall time of the point's training, in seconds (None: skipped or not ended)."""
    epoch: int | None = None
    """Epochs finished, while running on Ray."""
    epochs: int | None = None
    """Epochs the run trains, while running on Ray."""
    attempt: int | None = None
    """Which attempt of the point's Ray task runs (1: the first)."""
    host: str | None = None
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of the entry; the Ray keys (:data:`LIVE_KEYS`) only while the point is running."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in LIVE_KEYS}
        if self.status == "running":
            out.update({key: getattr(self, key) for key in LIVE_KEYS})
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PointState":
        """Read :meth:`to_dict`'s entry; unknown keys are ignored, missing ones take their default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class SweepState:
    """Every point of a sweep with its state, in sweep order (sweep.json)."""

    points: tuple[PointState, ...] = ()

    def point(self, name: str) -> PointState | None:
        """The state of the point ``name``, or None if the sweep has no such point."""
        return next((p for p in self.points if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of sweep.json."""
        return {"points": [p.to_dict() for p in self.points]}

    def write(self, out_dir: Path) -> None:
        """Write ``OUT_DIR/sweep.json`` (atomically: a reader sees the old or the new state)."""
        write_json(Path(out_dir) / SWEEP_FILE, self.to_dict())

    @classmethod
    def read(cls, out_dir: Path) -> "SweepState":
        """The state in ``OUT_DIR/sweep.json``; no points when there is no such file (no sweep ran there yet).

        Raises:
            MetricsFormatError: the file is not a sweep's state.
        """
        path = Path(out_dir) / SWEEP_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(tuple(PointState.from_dict(p) for p in raw["points"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise MetricsFormatError(f"{path} is not a sweep's state ({type(err).__name__}: {err}); delete it, the "
                                     "next run of the sweep writes it again") from None


class SweepRecorder:
    """The one writer of a sweep's state: each back-end reports a point ending (:meth:`finished`) and, on Ray, a
    point queued (:meth:`queued`) or running (:meth:`running`); every report rewrites ``OUT_DIR/sweep.json``."""

    def __init__(self, points: list[SweepPoint], out_dir: Path):
        self.points, self.out_dir = list(points), Path(out_dir)
        self.outcome = SweepOutcome(order=[p.name for p in points])
        self._live: dict[str, PointState] = {}

    def finished(self, i: int, point: SweepPoint, result: PointResult) -> None:
        """Point ``i`` (1-based) ended with ``result``; a failure is logged with its error."""
        status, error, tb, seconds = result
        self.outcome.status[point.name] = status
        self._live.pop(point.name, None)
        if status != "skipped":
            self.outcome.seconds[point.name] = seconds
        if error is not None:
            self.outcome.errors[point.name] = error
            if tb is not None:
                self.outcome.tracebacks[point.name] = tb
            log.error("[%d/%d] %s failed: %s", i, len(self.points), point.name, error)
        self.state().write(self.out_dir)

    def queued(self, point: SweepPoint) -> None:
        """The point waits for a worker (its Ray task was submitted)."""
        self._live[point.name] = PointState(point.name, point.variant, point.values, "queued")
        self.state().write(self.out_dir)

    def running(self, point: SweepPoint, epoch: int, attempt: int | None, host: str | None, pid: int | None) -> None:
        """The point trains: ``epoch`` epochs done, in ``attempt`` of its Ray task on ``host`` (process ``pid``)."""
        self._live[point.name] = PointState(point.name, point.variant, point.values, "running", epoch=epoch,
                                            epochs=point.config.train.epochs, attempt=attempt, host=host, pid=pid)
        self.state().write(self.out_dir)

    def state(self) -> SweepState:
        """Every point's state now."""
        return SweepState(tuple(self._point_state(p) for p in self.points))

    def _point_state(self, point: SweepPoint) -> PointState:
        o, name = self.outcome, point.name
        if name not in o.status:
            return self._live.get(name) or PointState(name, point.variant, point.values)
        return PointState(name, point.variant, point.values, o.status[name], o.errors.get(name),
                          o.tracebacks.get(name), o.seconds.get(name))
