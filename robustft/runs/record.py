"""A run directory read as one typed record: its config, its training summary and one evaluation's numbers
(:meth:`robustft.runs.RunDir.record`). Tables, statistics, reports and exports start from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robustft.config import Config
from robustft.runs.robustness import RobustnessSummary
from robustft.runs.summary import TrainSummary


@dataclass(frozen=True)
class RunRecord:
    """What a run directory holds, typed: config.yaml, summary.json and ``eval/NAME/robustness.json``."""

    path: Path
    """The run directory."""
    config: Config
    """The run's resolved config."""
    summary: TrainSummary | None
    """The training summary; None while training has not finished."""
    result: RobustnessSummary | None
    """The evaluation's numbers; None while the run has no such evaluation."""
    evaluation: str | None = None
    """The evaluation asked for (the folder under ``eval/``); None: the run config's own."""

    @property
    def name(self) -> str:
        """The run's folder name."""
        return self.path.name
