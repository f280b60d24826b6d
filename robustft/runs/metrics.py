"""The schema of metrics.jsonl, declared once: one JSON object per line, an :class:`EpochRow` after every epoch
and a :class:`StepRow` every ``train.log_every`` optimiser steps, told apart by the key ``kind`` (``"epoch"`` or
``"step"``).

The trainer builds its rows from these classes (a misspelt key is a ``TypeError`` where the row is built) and
every reader goes through the one loader, :func:`read_rows` (``RunDir.epoch_rows()``, ``RunDir.step_rows()``),
which returns typed rows: readers use attributes, never key strings. The JSON is the one the trainer wrote
before this module existed: the same key names in the same order, and an optional key is absent (not null)
where it was not measured, so run directories on disk read unchanged.

Frozen dataclasses rather than TypedDicts: a TypedDict's keys are checked only by a static type checker, so a
misspelt key would still be written and read at run time; a dataclass rejects it where the row is built, and
readers get attributes a type checker follows. The JSON round trip is two small methods either way, since
"absent" versus None and the step row's flattened objective parts need handling in both.

Reading is strict: a line that is not JSON, a ``kind`` other than the two, a missing required key, or (in an
epoch row) a key the schema does not declare raises :class:`MetricsFormatError` naming the key, the file and
the line. An unknown key is an error rather than an extra because it is a typo or a file of another robustft
version, and keeping it silently would hide either; a new key is added here first. A step row instead keeps
every key beyond its fields as ``parts``: the objective's named loss components (``ce_adv``, ``ce_clean``,
``kl``, or a user objective's own), free-form by design.

Units: ε in pixel units (images in [0, 1]: 8/255 ≈ 0.0314), accuracies as fractions in [0, 1], losses as mean
cross-entropy in nats (or the objective's loss), time in seconds, epochs counted from 0.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar, overload

from robustft.errors import MetricsFormatError


@dataclass(frozen=True, kw_only=True, slots=True)
class EpochRow:
    """The row written after every epoch (``"kind": "epoch"``)."""

    KIND: ClassVar[str] = "epoch"

    epoch: int
    """The epoch, counted from 0."""
    step: int
    """Optimiser steps done since the run began, at the end of the epoch."""
    eps: float
    """ε of the epoch's last optimiser step, pixel units."""
    eps_mean: float
    """ε averaged over the epoch's training examples, pixel units (equals ``eps`` unless ε changes within the
    epoch: per-step schedules); the ε the monitor attacks at and the one plots and tables show."""
    lr: float
    """Learning rate of the first parameter group (the backbone's) after the epoch's last step."""
    train_loss: float
    """The objective's loss averaged over the epoch's training examples, each at its step's ε."""
    train_acc: float
    """Accuracy on the epoch's training examples, on the logits the loss was computed on (attacked inputs
    where the objective attacked), fraction."""
    val_clean_acc: float | None = None
    """Clean accuracy of the weights to evaluate (the weight average, if any) on the validation split,
    fraction; None without validation (``fit(val=None)``)."""
    val_clean_loss: float | None = None
    """Their mean clean cross-entropy on the validation split, nats; None without validation."""
    val_adv_acc: float | None = None
    """Their accuracy under the training attack at ε_g on the first ``train.val_adv_n`` validation examples,
    fraction; None when that is 0, ε_g is 0 or there is no training attack."""
    val_adv_loss: float | None = None
    """Their mean cross-entropy on those attacked examples, nats; None with ``val_adv_acc``."""
    mon_eps: float | None = None
    """ε the overfitting monitor attacked at (the epoch's ``eps_mean``), pixel units; the four ``mon_*`` are
    None while ε = 0, without validation, or with the monitor off (``train.monitor_n: 0``)."""
    mon_attack_acc: float | None = None
    """Accuracy under the training attack on the first ``train.monitor_n`` validation examples, fraction."""
    mon_ref_acc: float | None = None
    """Accuracy under the reference attack (APGD-CE, ``train.monitor_steps``) on the same examples, fraction."""
    mon_gap: float | None = None
    """``mon_attack_acc − mon_ref_acc``, fraction (above ``train.overfit_gap``: catastrophic overfitting)."""
    schedule_switch: float | None = None
    """The epoch (from 0) after which an ``auto`` schedule found validation clean accuracy on a plateau and
    started ε's ramp; only in the row of the epoch where it switched, else None."""
    phase: str | None = None
    """``probe`` in an epoch of the head's probing (``finetune.head``: the head alone trained on the frozen
    backbone, at the head start's ε); None in the fine-tuning epochs."""
    elapsed_s: float
    """Wall-clock seconds of training and validation since the run began, summed over its starts (checkpoint
    writes and resume loading not counted)."""

    def to_json(self) -> dict[str, Any]:
        """The row as written to metrics.jsonl: ``kind`` first, then the fields in order, None ones left out."""
        return {"kind": self.KIND, **{f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "an epoch row") -> "EpochRow":
        """The row of a decoded JSON line; ``where`` (file and line) goes into errors.

        Raises:
            MetricsFormatError: a required key is missing or a key is not one of the schema's.
        """
        names = _check_required(cls, data, where)
        unknown = [k for k in data if k not in names and k != "kind"]
        if unknown:
            raise MetricsFormatError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} in an epoch row; "
                                     f"its keys are declared in robustft/runs/metrics.py (EpochRow): "
                                     f"{', '.join(sorted(names))}")
        return cls(**{k: v for k, v in data.items() if k != "kind"})

    def measurements(self) -> dict[str, float]:
        """The numbers measured in the epoch (``train_*``, ``val_*``, ``mon_*``) that the row holds, by key."""
        return {k: v for k, v in self.to_json().items() if k.startswith(("train_", "val_", "mon_"))}


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRow:
    """The row written every ``train.log_every`` optimiser steps (``"kind": "step"``), by process 0."""

    KIND: ClassVar[str] = "step"

    epoch: int
    """The epoch of the step, counted from 0."""
    step: int
    """Optimiser steps done since the run began, this one included."""
    eps: float
    """ε of this step, pixel units."""
    lr: float
    """Learning rate of the first parameter group (the backbone's) at this step."""
    loss: float
    """The objective's loss on the step's last micro-batch (this process's share)."""
    parts: dict[str, float] = field(default_factory=dict)
    """The objective's named components of that loss (``ObjectiveOutput.parts``: ``ce_adv``, ``ce_clean``,
    ``kl``, …); written as keys of the row beside the fields above, so no part may share a field's name."""

    def __post_init__(self) -> None:
        clash = [k for k in self.parts if k == "kind" or k in _field_names(StepRow)]
        if clash:
            raise ValueError(f"objective parts {', '.join(map(repr, clash))} share a name with a key of the step "
                             "row; rename the part")

    def to_json(self) -> dict[str, Any]:
        """The row as written to metrics.jsonl: ``kind``, the fields in order, then the parts."""
        return {"kind": self.KIND, "epoch": self.epoch, "step": self.step, "eps": self.eps, "lr": self.lr,
                "loss": self.loss, **self.parts}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "a step row") -> "StepRow":
        """The row of a decoded JSON line: every key beyond the fields is a part; ``where`` goes into errors.

        Raises:
            MetricsFormatError: a required key is missing or a part is not a number.
        """
        names = _check_required(cls, data, where)
        parts = {k: v for k, v in data.items() if k not in names and k != "kind"}
        odd = [k for k, v in parts.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if odd:
            raise MetricsFormatError(f"{where}: key(s) {', '.join(map(repr, odd))} of a step row are objective "
                                     "parts and must be numbers")
        return cls(**{k: v for k, v in data.items() if k in names}, parts=parts)


Row = EpochRow | StepRow
R = TypeVar("R", EpochRow, StepRow)

ROW_KINDS: dict[str, type[EpochRow] | type[StepRow]] = {EpochRow.KIND: EpochRow, StepRow.KIND: StepRow}
"""The row class of each ``kind``."""


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _check_required(cls: type[Row], data: dict[str, Any], where: str) -> set[str]:
    """The field names of ``cls``; raises when ``data`` lacks a required one (no default)."""
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise MetricsFormatError(f"{where}: missing required key(s) {', '.join(map(repr, missing))} of a "
                                 f"{cls.KIND} row (see robustft/runs/metrics.py, {cls.__name__})")
    return _field_names(cls)


def parse_row(line: str, where: str) -> Row:
    """One line of metrics.jsonl as its typed row; ``where`` (file and line) goes into errors.

    Raises:
        MetricsFormatError: the line is not a JSON object of a known kind following its schema.
    """
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise MetricsFormatError(f"{where}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise MetricsFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in ROW_KINDS:
        raise MetricsFormatError(f"{where}: 'kind' is {kind!r}; expected one of {', '.join(map(repr, ROW_KINDS))}")
    return ROW_KINDS[kind].from_json(data, where)


@overload
def read_rows(path: str | Path) -> list[Row]: ...
@overload
def read_rows(path: str | Path, kind: type[R]) -> list[R]: ...
def read_rows(path: str | Path, kind: type | None = None) -> list[Any]:  # the overloads above type it
    """The rows of a metrics.jsonl (``path``: the file, or a run directory holding it), in file order; only
    those of one ``kind`` (:class:`EpochRow` or :class:`StepRow`) when given. A missing file has no rows.

    Raises:
        MetricsFormatError: a line does not follow the schema (every line is checked, whatever ``kind``).
    """
    path = Path(path)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.exists():
        return []
    rows = [parse_row(line, f"{path}, line {i}") for i, line in enumerate(path.read_text().splitlines(), 1)
            if line.strip()]
    return [r for r in rows if kind is None or isinstance(r, kind)]


def to_line(row: Row) -> str:
    """The row as one line of metrics.jsonl (with its newline)."""
    return json.dumps(row.to_json()) + "\n"


def read_json_object(path: Path, what: str, remedy: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``what`` it should hold, for the message).

    Raises:
        MetricsFormatError: the file is not valid JSON, or holds something else than an object; the message ends
            with ``remedy``.
    """
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MetricsFormatError(f"{path} is not valid JSON ({err}); {remedy}") from None
    if not isinstance(raw, dict):
        raise MetricsFormatError(f"{path} holds a {type(raw).__name__}, not {what}; {remedy}")
    return raw
