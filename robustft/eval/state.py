"""What an evaluation carries from one ε of its walk to the next, and saves so that a killed evaluation resumes
with the same result: the evidence so far, the minimum-norm radii, the warm starts and the costs.

The state is one ``.npz`` file of plain arrays (never pickled objects), written atomically after each ε and
keyed by a digest of the protocol and the examples: a file of another evaluation is not resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustft.errors import ForeignFileError
from robustft.runs import atomic_write

log = logging.getLogger(__name__)


@dataclass
class EvalState:
    """The evidence of an evaluation so far (``correct`` and ``breaker``, one row per grid ε; rows of ε not
    walked yet are unset), how many ε of the walk are ``done``, the minimum-norm radii, and (warm starts) the
    points each attack left per example."""

    correct: np.ndarray
    breaker: np.ndarray
    done: int = 0
    radii: np.ndarray | None = None
    radius_by: np.ndarray | None = None
    starts: dict[str, torch.Tensor] = field(default_factory=dict)
    starts_at: int = -1
    """The grid index whose points ``starts`` holds (-1: none)."""
    costs: list[dict[str, Any]] = field(default_factory=list)
    """Seconds and examples of each attack run so far (:attr:`RobustnessResult.costs`)."""

    @classmethod
    def fresh(cls, num_eps: int, n: int) -> "EvalState":
        """The state of an evaluation of ``n`` examples over ``num_eps`` grid points that has not started."""
        return cls(np.zeros((num_eps, n), dtype=bool), np.full((num_eps, n), -1, dtype=np.int8))

    @classmethod
    def resume(cls, path: Path | None, key: str, num_eps: int, n: int) -> "EvalState":
        """A fresh state, or that of an interrupted evaluation with the same ``key`` read from ``path``.

        Raises:
            ForeignFileError: ``path`` is not the partial results of an evaluation.
        """
        state = cls.fresh(num_eps, n)
        if path is None or not path.exists():
            return state
        saved = read_state(path)
        if saved["key"] != key or saved["correct"].shape != state.correct.shape:
            log.warning("%s belongs to an evaluation with another protocol; starting over", path)
            return state
        done = saved["done"]
        state.correct[:], state.breaker[:], state.done = saved["correct"], saved["breaker"], done
        if "radii" in saved:
            state.radii, state.radius_by = saved["radii"], saved["radius_by"]
        state.starts = {k[len("start:"):]: torch.from_numpy(v) for k, v in saved.items() if k.startswith("start:")}
        state.starts_at = int(saved.get("starts_at", -1))
        state.costs = json.loads(str(saved["costs"])) if "costs" in saved else []
        log.info("resuming the evaluation in %s after %d of %d ε", path.parent, done, num_eps)
        return state

    def keep_start(self, slot: str, rows: np.ndarray, points: torch.Tensor) -> None:
        """Remember ``points`` as the last points of examples ``rows`` under ``slot`` (an attack, or a walk's
        shared slot)."""
        if slot not in self.starts:
            self.starts[slot] = torch.zeros((self.correct.shape[1], *points.shape[1:]), dtype=torch.float32)
        self.starts[slot][torch.from_numpy(rows)] = points

    def cost(self, eps: str | float | None, attack: str, examples: int, seconds: float) -> None:
        """Record where time went: ``attack`` ran on ``examples`` at ``eps`` (as :func:`format_eps` writes it;
        None: not at one grid ε)."""
        self.costs.append({"eps": eps, "attack": attack, "examples": int(examples), "seconds": round(seconds, 3)})

    def save(self, path: Path, key: str) -> None:
        """Write the state to ``path`` (atomically), under ``key``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"key": np.asarray(key), "done": np.asarray(self.done), "correct": self.correct,
                                  "breaker": self.breaker, "starts_at": np.asarray(self.starts_at),
                                  "costs": np.asarray(json.dumps(self.costs))}
        if self.radii is not None and self.radius_by is not None:
            arrays.update(radii=self.radii, radius_by=self.radius_by)
        arrays.update({f"start:{k}": v.numpy() for k, v in self.starts.items()})
        atomic_write(path, lambda f: np.savez(f, **arrays))


def fingerprint(protocol: dict, labels: np.ndarray) -> str:
    """A digest of everything that decides the evidence: protocol, examples and their labels."""
    text = json.dumps(protocol, sort_keys=True, default=str) + hashlib.sha256(labels.tobytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()


def read_state(path: Path) -> dict[str, Any]:
    """The arrays of a state written by :meth:`EvalState.save` (``key`` and ``done`` as str and int).

    Raises:
        ForeignFileError: the file is not such a state (not an .npz, pickled objects, other arrays).
    """
    try:
        with np.load(path) as z:
            state: dict[str, Any] = {k: z[k] for k in z.files}
            state["key"], state["done"] = str(z["key"]), int(z["done"])
            state["correct"] = z["correct"].astype(bool)
            state["breaker"] = z["breaker"]
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as err:
        reason = (str(err.args[0]) if isinstance(err, KeyError) else  # numpy's advice to unpickle is not passed on
                  "it holds pickled data, which is never loaded" if "pickle" in str(err).lower() else
                  f"{type(err).__name__}: {err}")
        raise ForeignFileError(f"{path} is not the partial results of a robustft evaluation ({reason}); delete it "
                               "to restart this evaluation") from None
    correct, breaker = state["correct"], state["breaker"]
    if correct.ndim != 2 or breaker.shape != correct.shape or not 0 <= state["done"] <= len(correct):
        raise ForeignFileError(f"{path} is not the partial results of a robustft evaluation (arrays of other "
                               "shapes or counts); delete it to restart this evaluation")
    return state
