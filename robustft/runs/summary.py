"""The training summary: what :func:`robustft.fit` returns and what a run directory keeps as summary.json.

One schema, one reader: :meth:`TrainSummary.to_dict` is the JSON written, :meth:`TrainSummary.from_dict` reads it
back (summaries written before a field existed read as its default), and every reader of summary.json goes
through :meth:`robustft.runs.RunDir.summary`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robustft.runs.metrics import read_json_object


@dataclass(frozen=True, kw_only=True)
class TrainSummary:
    """What training produced, as summary.json holds it."""

    epochs: int = 0
    """Epochs whose weights were kept (fewer than asked when ``on_overfit: stop`` ended training)."""
    train_time_s: float = 0.0
    """Wall time of the kept epochs (training steps and validation), in seconds, summed over resumes."""
    num_classes: int | None = None
    """Classes of the task (chance level is 1 / num_classes); None where unknown."""
    schedule: dict[str, Any] = field(default_factory=dict)
    """The resolved ε schedule (``Schedule.describe()``: kind, hinges in epochs, where ``auto`` switched)."""
    delay_threshold: float = 0.05
    """Validation clean accuracy (fraction) whose first crossing defines the delay time."""
    delay_epochs: int | None = None
    """Epochs until validation clean accuracy first exceeded ``delay_threshold`` (None: never, or no validation)."""
    final: dict[str, float] = field(default_factory=dict)
    """The last kept epoch's measurements (``train_loss``, ``train_acc``, ``val_clean_acc``, ``mon_gap``, ...)."""
    processes: int = 1
    """Processes that shared each batch (torchrun)."""
    precision: str = "fp32"
    """``fp32`` or ``bf16``: the arithmetic of the training forward passes."""
    channels_last: bool | str = False
    """Whether training ran in channels-last memory layout."""
    compile: bool = False
    """Whether the forward passes were compiled."""
    catastrophic_overfitting: dict[str, Any] = field(default_factory=dict)
    """The overfitting monitor's verdict: ``raised``, ``epochs``, ``max_gap``, ``threshold``."""
    stopped_at_epoch: int | None = None
    """The epoch (0-based) at which ``on_overfit: stop`` ended training, else None."""
    select: dict[str, Any] = field(default_factory=dict)
    """Which weights are evaluated: ``rule`` (final or best_robust), ``epochs_done``, ``checkpoint``, ``weights``."""
    tuning: dict[str, Any] = field(default_factory=dict)
    """What was trained (``finetune``): ``mode``, ``head``, ``probe_epochs``, ``trained_parameters`` (of
    ``parameters``)."""

    @property
    def overfit_raised(self) -> bool:
        """Whether the monitor raised ``catastrophic_overfitting``."""
        return bool(self.catastrophic_overfitting.get("raised"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (summary.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainSummary":
        """Read :meth:`to_dict`'s record; keys it does not know are ignored, missing ones take their default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def read(cls, path: Path) -> "TrainSummary":
        """Read a summary.json.

        Raises:
            MetricsFormatError: the file is not a JSON object.
        """
        return cls.from_dict(read_json_object(path, "a training summary",
                                              "delete it and resume the run to write it again"))
