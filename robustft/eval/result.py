"""RobustnessResult: the evidence (which example survives at which ε) and every number derived from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robustft.config import format_eps
from robustft.eval.metrics import (
    bootstrap_intervals,
    expected_robustness,
    expected_robustness_exact,
    wilson_interval,
)
from robustft.runs import atomic_write, write_json


@dataclass
class Flag:
    """The outcome of one sanity check (:mod:`robustft.eval.checks`): ``raised`` True (a problem), False
    (passed) or None (not applicable)."""

    name: str
    raised: bool | None
    message: str
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RobustnessResult:
    """``correct[e, i]``: example i is classified correctly under every attack tried at ε = eps[e].

    Row 0 is ε = 0, i.e. clean accuracy. Every reported number is computed from this matrix.
    ``breaker[e, i]`` says why an example is not correct: 0 misclassified clean, k ≥ 1 broken by the k-th
    attack of ``protocol["attack_order"]`` (in incremental mode, at the smallest ε where it fell), −1 correct.

    ``radii``, from a minimum-norm attack, gives per example the smallest radius found that breaks it
    (+inf: none found, and for examples misclassified clean, which are not attacked); it is already joined
    into ``correct`` (an example broken at radius r is wrong at every grid ε ≥ r). With it the curve is known
    between grid points too (:attr:`eps_star`), and expected robustness is an exact integral
    (:attr:`expected_exact`).
    """

    eps: list[float]
    correct: np.ndarray
    labels: np.ndarray
    protocol: dict[str, Any] = field(default_factory=dict)
    breaker: np.ndarray | None = None
    weights: list[float] | None = None
    """Density of ε at the grid points for the expected robustness; None is uniform."""
    bootstrap: int = 1000
    """Resamples for the 95 % confidence intervals (0: none)."""
    checks: list[Flag] = field(default_factory=list)
    """Every sanity check run on the result, raised, passed or not applicable (:attr:`flags`: the raised ones);
    robustness.json keeps them under ``flags``."""
    radii: np.ndarray | None = None
    costs: list[dict[str, Any]] = field(default_factory=list)
    """Where the evaluation's time went: one row per attack run (``eps``, ``attack``, ``examples`` attacked,
    ``seconds``; the minimum-norm pass with ``eps`` None, the sanity checks as attack ``checks``)."""

    @property
    def accuracy(self) -> list[float]:
        """Accuracy at each ε of the grid."""
        return self.correct.mean(axis=1).tolist()

    @property
    def clean(self) -> float:
        return float(self.correct[0].mean())

    @property
    def adv(self) -> float:
        """Accuracy at the largest ε (ε_g)."""
        return float(self.correct[-1].mean())

    @property
    def expected(self) -> float:
        """Expected robustness over ε on [0, ε_g] (uniform unless ``weights``; trapezoid rule on the grid)."""
        return expected_robustness(self.eps, self.accuracy, self.weights)

    @property
    def eps_star(self) -> np.ndarray:
        """Per example, the smallest ε known to break it: 0 if misclassified clean, else the smaller of its
        minimum-norm radius and the first grid ε where it is wrong; +inf if neither (robust at every ε tried).
        Between grid points an example counts as robust up to its ε* (the evidence cannot say more)."""
        eps = np.asarray(self.eps, dtype=float)
        wrong = ~self.correct
        first = np.where(wrong.any(axis=0), eps[wrong.argmax(axis=0)], np.inf)
        return first if self.radii is None else np.minimum(first, self.radii)

    def accuracy_at(self, eps: Sequence[float] | np.ndarray) -> np.ndarray:
        """Accuracy at any ε (not only the grid's) from :attr:`eps_star`: the share of examples with ε* > ε."""
        star = self.eps_star
        return (star[None, :] > np.asarray(eps, dtype=float)[:, None] * (1 + 1e-6)).mean(axis=1)

    @property
    def expected_exact(self) -> float | None:
        """Expected robustness as an exact integral of the step curve of :attr:`eps_star` over [0, ε_g] (with
        uniform weights: the mean of min(ε*_i, ε_g) / ε_g); None without a minimum-norm attack, when the
        curve between grid points is unknown."""
        if self.radii is None:
            return None
        return expected_robustness_exact(self.eps, self.eps_star, self.weights)

    def intervals(self) -> dict[str, list[float]]:
        """95 % intervals over test examples: Wilson score intervals for clean and adv (proportions),
        the percentile bootstrap (``bootstrap`` resamples) for expected_robustness."""
        if not self.bootstrap:
            return {}
        n = self.correct.shape[1]
        boot = bootstrap_intervals(self.eps, self.correct, self.weights, self.bootstrap)
        return {"clean": wilson_interval(int(self.correct[0].sum()), n),
                "adv": wilson_interval(int(self.correct[-1].sum()), n),
                "expected_robustness": boot["expected_robustness"]}

    @property
    def flags(self) -> list[Flag]:
        """The sanity flags raised (a problem found); every check run, with its outcome, is in :attr:`checks`."""
        return [f for f in self.checks if f.raised]

    def broken_by(self) -> list[dict[str, int]]:
        """Per ε: how many examples each attack broke there (not counting those already wrong before: at
        the previous ε in incremental mode, on clean inputs in downward and independent mode)."""
        if self.breaker is None:
            return []
        names = ["clean"] + list(self.protocol.get("attack_order", []))
        out = []
        for e in range(len(self.eps)):
            prev = None if e == 0 else self.breaker[e - 1 if self.protocol.get("mode") == "incremental" else 0]
            new = self.breaker[e] if prev is None else np.where(prev == self.breaker[e], -1, self.breaker[e])
            out.append({names[k]: int((new == k).sum()) for k in range(len(names)) if (new == k).any()})
        return out

    def summary(self) -> dict[str, Any]:
        """The numbers, intervals, flags and protocol, JSON-ready (ε written as k/255 where exact)."""
        broken = self.broken_by() or [{}] * len(self.eps)
        return {"n": int(self.correct.shape[1]), "eps_target": format_eps(self.eps[-1]), "clean": self.clean,
                "adv": self.adv, "expected_robustness": self.expected, "ci95": self.intervals(),
                "bootstrap_resamples": self.bootstrap, "eps_weights": self.weights,
                "curve": [{"eps": format_eps(e), "eps_value": e, "accuracy": a, "broken_by": b}
                          for e, a, b in zip(self.eps, self.accuracy, broken)],
                "flags": [f.to_dict() for f in self.checks], "protocol": self.protocol, "costs": self.costs,
                **({"min_norm": self._min_norm_summary()} if self.radii is not None else {})}

    def _min_norm_summary(self) -> dict[str, Any]:
        """The minimum-norm pass: the exact expected robustness, its own curve on the grid (clean-correct
        examples with a radius above ε), and the radii found."""
        assert self.radii is not None
        clean = self.correct[0]
        alone = [float((clean & (self.radii > e * (1 + 1e-6))).mean()) for e in self.eps]
        found = self.radii[clean & np.isfinite(self.radii)]
        return {"expected_robustness_exact": self.expected_exact, "found": int(len(found)), "attacked": int(clean.sum()),
                "median_radius": float(np.median(found)) if len(found) else None,
                "curve_alone": [{"eps": format_eps(e), "eps_value": e, "accuracy": a} for e, a in zip(self.eps, alone)]}

    def save(self, folder: Path) -> None:
        """Write ``correct.npz`` (the evidence) and ``robustness.json`` (the numbers) into ``folder``."""
        arrays: dict[str, Any] = {"eps": np.asarray(self.eps), "correct": self.correct, "labels": self.labels}
        if self.breaker is not None:
            arrays["breaker"] = self.breaker
        if self.radii is not None:
            arrays["radii"] = self.radii
        atomic_write(folder / "correct.npz", lambda f: np.savez_compressed(f, **arrays))
        write_json(folder / "robustness.json", self.summary())

    @classmethod
    def load(cls, folder: Path) -> "RobustnessResult":
        """Read a result written by :meth:`save`."""
        with np.load(folder / "correct.npz") as z:
            eps, correct, labels = z["eps"].tolist(), z["correct"], z["labels"]
            breaker = z["breaker"] if "breaker" in z else None
            radii = z["radii"] if "radii" in z else None
        info = json.loads((folder / "robustness.json").read_text())
        checks = [Flag(**f) for f in info.get("flags", [])]
        return cls(eps, correct, labels, info["protocol"], breaker=breaker, weights=info.get("eps_weights"),
                   bootstrap=info.get("bootstrap_resamples", 0), checks=checks, radii=radii,
                   costs=info.get("costs", []))
