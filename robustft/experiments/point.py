"""One point of a sweep, and how it is trained: with any failure caught and recorded, so that a sweep, run
one point after another, in worker processes or as Ray tasks, goes on past a failing run."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from robustft.api import fine_tune
from robustft.config import Config


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its name, variant, grid values and resolved config."""

    name: str
    variant: str | None
    values: dict[str, Any]
    config: Config


def default_train(cfg: Config) -> Any:
    """Train (or resume) the point's run with the config it was given, no other (a sweep's runs are its points)."""
    return fine_tune(cfg, resume=True, allow_changes=False)


def run_point(train: Callable[[Config], Any], point: SweepPoint) -> tuple[str, str | None, str | None, float]:
    """Train one point; (status, error, traceback, seconds), with any exception caught and recorded."""
    t0 = time.perf_counter()
    try:
        train(point.config)
        return "ran", None, None, time.perf_counter() - t0
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a failing run must not stop the sweep; it is recorded with its traceback
        return "failed", f"{type(err).__name__}: {err}", traceback.format_exc(), time.perf_counter() - t0
