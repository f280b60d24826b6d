"""One row of numbers per run directory: its setting and the headline numbers of an evaluation, read from its
typed record (:meth:`robustft.runs.RunDir.record`: config, summary.json and ``eval/NAME/robustness.json``).
Statistics, diagnoses and tables all start here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from robustft.config import OBJECTIVES, Config, FinetuneConfig, format_eps, is_clean_objective
from robustft.runs import RunDir, RunRecord

METRICS = ("clean", "adv", "e_adv")
"""The headline numbers of a row that statistics compare across runs (attributes of :class:`RunRow`)."""


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """One run's setting and the headline numbers of one evaluation (fractions; None where not measured)."""

    run: str
    """The run's folder name."""
    schedule: str
    """The method: ``standard``, or the ε schedule's kind (with TRADES and its β)."""
    eps: str | float
    """ε_g as written in configs: ``k/255`` where it is one exactly, else the float."""
    clean: float | None = None
    """Clean test accuracy."""
    adv: float | None = None
    """Test accuracy under attack at ε_g."""
    e_adv: float | None = None
    """Expected robustness over ε ∈ [0, ε_g]."""
    e_adv_exact: float | None = None
    """Expected robustness from the minimum-norm pass, where one ran."""
    n: int | None = None
    """Test examples evaluated."""
    delay: int | None = None
    """Delay time: epochs until validation clean accuracy first exceeded the threshold."""
    train_s: float | None = None
    """Training wall time, in seconds."""
    evaluation: str | None = None
    """The evaluation asked for (the folder under ``eval/``); None: the run config's own."""
    attacks: str | None = None
    """The evaluation's attacks, joined with ``+``."""
    flags: tuple[str, ...] | None = None
    """Names of the sanity flags raised (the training monitor's included); None: the checks did not run."""

    def metric(self, name: str) -> float | None:
        """The headline number ``name``, one of :data:`METRICS`."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}: one of {', '.join(METRICS)}")
        value: float | None = getattr(self, name)
        return value

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON-ready values (flags as a list)."""
        return {**asdict(self), "flags": None if self.flags is None else list(self.flags)}

    @classmethod
    def from_record(cls, record: RunRecord) -> "RunRow":
        """The row of a run's typed record."""
        summary, result = record.summary, record.result
        checked = result is not None and bool(result.checks)
        flags = tuple(c.name for c in result.raised) if result is not None and checked else None
        if summary is not None and summary.overfit_raised:  # the training monitor's flag
            flags = (flags or ()) + ("catastrophic_overfitting",)
        return cls(run=record.name, schedule=schedule_label(record.config), eps=format_eps(record.config.attack.eps),
                   clean=result.clean if result else None, adv=result.adv if result else None,
                   e_adv=result.expected_robustness if result else None,
                   e_adv_exact=result.expected_exact if result else None, n=result.n if result else None,
                   delay=summary.delay_epochs if summary is not None else None,
                   train_s=summary.train_time_s if summary is not None else None, evaluation=record.evaluation,
                   attacks="+".join(result.attack_order) or None if result else None, flags=flags)


def schedule_label(cfg: Config) -> str:
    """The method of a run in words: the objective's name for a clean one (``standard``), else the schedule's kind,
    with TRADES and its β (and its CE inner loss) named, then what fine-tuning trained and how its head started
    where they are not the paper's (``fix + lora``, ``fix + linear_probe``)."""
    schedule = cfg.objective.name if is_clean_objective(cfg.objective.name) else cfg.schedule.kind
    label = OBJECTIVES[cfg.objective.name].extra.get("label") if cfg.objective.name in OBJECTIVES else None
    method = f"{schedule} ({label(cfg.objective)})" if label is not None else schedule
    f, paper = cfg.finetune, FinetuneConfig()
    return method + "".join(f" + {part}" for part, default in ((f.mode, paper.mode), (f.head, paper.head))
                            if part != default)


def run_row(path: str | Path, evaluation: str | None = None) -> RunRow:
    """One table row from a run directory's config, summary.json and an evaluation's robustness.json."""
    return RunRow.from_record(RunDir(Path(path)).record(evaluation))
