"""The numbers of one evaluation as ``eval/NAME/robustness.json`` holds them, typed.

:meth:`robustft.eval.RobustnessResult.save` writes the file (``RobustnessResult.summary()``); reports, tables and
exports read it back through :meth:`RobustnessSummary.read` (:meth:`robustft.runs.RunDir.robustness`). Every key is
optional on reading: files written before a key existed read as its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustft.errors import MetricsFormatError
from robustft.runs.metrics import read_json_object

ROBUSTNESS_FILE = "robustness.json"
"""The name of an evaluation's numbers in its folder ``RUN/eval/NAME/``."""


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy at one ε of the evaluation's grid."""

    eps: str | float
    """ε as written in configs: ``k/255`` where it is one exactly, else the float."""
    eps_value: float
    """ε in pixel units."""
    accuracy: float
    """Fraction of the test examples classified correctly under every attack at this ε."""
    broken_by: dict[str, int] = field(default_factory=dict)
    """Examples each attack broke here (``clean``: misclassified without attack)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CurvePoint":
        """One entry of ``curve`` (or ``min_norm.curve_alone``)."""
        return cls(raw["eps"], float(raw["eps_value"]), float(raw["accuracy"]), dict(raw.get("broken_by", {})))


@dataclass(frozen=True)
class CheckOutcome:
    """One sanity check as robustness.json keeps it under ``flags``."""

    name: str
    raised: bool | None
    """True: a problem found; False: passed; None: not applicable."""
    message: str = ""
    value: float | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CheckOutcome":
        """One entry of ``flags``."""
        return cls(str(raw["name"]), raw.get("raised"), str(raw.get("message", "")), raw.get("value"))


@dataclass(frozen=True)
class MinNormSummary:
    """The minimum-norm pass of an evaluation (``min_norm``)."""

    expected_robustness_exact: float | None = None
    """Expected robustness as an exact integral of the per-example ε* (fraction)."""
    found: int = 0
    """Clean-correct examples for which a breaking radius was found."""
    attacked: int = 0
    """Clean-correct examples the minimum-norm attack ran on."""
    median_radius: float | None = None
    """Median radius found, in pixel units."""
    curve_alone: tuple[CurvePoint, ...] = ()
    """The curve on the grid from the minimum-norm radii alone."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "MinNormSummary":
        """The ``min_norm`` object."""
        return cls(raw.get("expected_robustness_exact"), int(raw.get("found", 0)), int(raw.get("attacked", 0)),
                   raw.get("median_radius"), tuple(CurvePoint.from_dict(c) for c in raw.get("curve_alone", [])))


@dataclass(frozen=True)
class RobustnessSummary:
    """The headline numbers, curve, sanity checks and protocol of one evaluation (fractions, not percent)."""

    n: int | None = None
    """Test examples evaluated."""
    eps_target: str | float | None = None
    """ε_g, the largest ε of the grid, as written in configs (``k/255`` where it is one exactly)."""
    clean: float | None = None
    """Clean accuracy."""
    adv: float | None = None
    """Accuracy under attack at ε_g."""
    expected_robustness: float | None = None
    """Expected robustness over ε ∈ [0, ε_g] (E.adv)."""
    ci95: dict[str, list[float]] = field(default_factory=dict)
    """95 % intervals of ``clean``, ``adv`` and ``expected_robustness``."""
    bootstrap_resamples: int = 0
    """Bootstrap resamples behind the interval of the expected robustness."""
    eps_weights: list[float] | None = None
    """Density of ε at the grid points (None: uniform)."""
    curve: tuple[CurvePoint, ...] = ()
    """Accuracy at each ε of the grid."""
    checks: tuple[CheckOutcome, ...] = ()
    """Every sanity check run (empty: checks were not run)."""
    protocol: dict[str, Any] = field(default_factory=dict)
    """How the evaluation ran (``mode``, ``attack_order``, ...)."""
    costs: list[dict[str, Any]] = field(default_factory=list)
    """Where the evaluation's time went, one row per attack run."""
    min_norm: MinNormSummary | None = None
    """The minimum-norm pass, when one ran."""

    @property
    def attack_order(self) -> tuple[str, ...]:
        """The attacks of the evaluation, in the order they ran."""
        return tuple(self.protocol.get("attack_order", []))

    @property
    def raised(self) -> tuple[CheckOutcome, ...]:
        """The sanity checks that raised a flag."""
        return tuple(c for c in self.checks if c.raised)

    @property
    def expected_exact(self) -> float | None:
        """The exact expected robustness of the minimum-norm pass, or None without one."""
        return self.min_norm.expected_robustness_exact if self.min_norm is not None else None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RobustnessSummary":
        """Read ``RobustnessResult.summary()``'s record; unknown keys are ignored, missing ones take their default."""
        min_norm = raw.get("min_norm")
        return cls(n=raw.get("n"), eps_target=raw.get("eps_target"), clean=raw.get("clean"), adv=raw.get("adv"),
                   expected_robustness=raw.get("expected_robustness"), ci95=dict(raw.get("ci95") or {}),
                   bootstrap_resamples=int(raw.get("bootstrap_resamples", 0)), eps_weights=raw.get("eps_weights"),
                   curve=tuple(CurvePoint.from_dict(c) for c in raw.get("curve", [])),
                   checks=tuple(CheckOutcome.from_dict(f) for f in raw.get("flags", [])),
                   protocol=dict(raw.get("protocol") or {}), costs=list(raw.get("costs", [])),
                   min_norm=MinNormSummary.from_dict(min_norm) if min_norm is not None else None)

    @classmethod
    def read(cls, path: Path) -> "RobustnessSummary":
        """Read a robustness.json.

        Raises:
            MetricsFormatError: the file is not a JSON object of an evaluation's numbers.
        """
        raw = read_json_object(path, "an evaluation's numbers",
                               "delete its folder and evaluate the run again (robustft eval RUN)")
        try:
            return cls.from_dict(raw)
        except (KeyError, TypeError, ValueError) as err:
            raise MetricsFormatError(f"{path} does not follow the schema of robustness.json ({type(err).__name__}: "
                                     f"{err}); delete its folder and evaluate the run again (robustft eval RUN)"
                                     ) from None
