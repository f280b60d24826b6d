"""RobustnessResult: the evidence (which example survives at which ε) and every number derived from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustft.config import format_eps
from robustft.eval.metrics import expected_robustness


@dataclass
class RobustnessResult:
    """``correct[e, i]``: example i is classified correctly under every attack tried at ε = eps[e].

    Row 0 is ε = 0, i.e. clean accuracy. Every reported number is computed from this matrix.
    """

    eps: list[float]
    correct: np.ndarray
    labels: np.ndarray
    protocol: dict[str, Any] = field(default_factory=dict)

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
        """Expected robustness over ε ~ U[0, ε_g] (trapezoid rule on the grid)."""
        return expected_robustness(self.eps, self.accuracy)

    def summary(self) -> dict[str, Any]:
        """The numbers and the protocol, JSON-ready (ε written as k/255 where exact)."""
        return {"n": int(self.correct.shape[1]), "eps_target": format_eps(self.eps[-1]), "clean": self.clean,
                "adv": self.adv, "expected_robustness": self.expected,
                "curve": [{"eps": format_eps(e), "eps_value": e, "accuracy": a} for e, a in zip(self.eps, self.accuracy)],
                "protocol": self.protocol}

    def save(self, folder: Path) -> None:
        """Write ``correct.npz`` (the evidence) and ``robustness.json`` (the numbers) into ``folder``."""
        from robustft.runs import atomic_write, write_json

        atomic_write(folder / "correct.npz", lambda f: np.savez_compressed(
            f, eps=np.asarray(self.eps), correct=self.correct, labels=self.labels))
        write_json(folder / "robustness.json", self.summary())

    @classmethod
    def load(cls, folder: Path) -> "RobustnessResult":
        """Read a result written by :meth:`save`."""
        with np.load(folder / "correct.npz") as z:
            eps, correct, labels = z["eps"].tolist(), z["correct"], z["labels"]
        protocol = json.loads((folder / "robustness.json").read_text())["protocol"]
        return cls(eps, correct, labels, protocol)
