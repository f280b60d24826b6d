"""Numbers derived from accuracies: expected robustness, delay time, and batch accuracy."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import Attack


def expected_robustness(eps: Sequence[float], accuracy: Sequence[float],
                        weights: Sequence[float] | None = None) -> float:
    """E_ε[Acc_ε] by the trapezoid rule on the grid, ε_g = the grid's last value.

    With ``weights`` None, ε ~ U[0, ε_g] (the paper's metric). Otherwise ``weights`` gives the relative
    density of ε at each grid point (piecewise linear between them) and the result is
    ∫ w(ε) Acc_ε dε / ∫ w(ε) dε, e.g. weights growing with ε stress the large radii. The grid must start
    at 0 and increase. With a single point (ε_g = 0) it is that accuracy.

    Raises:
        ValueError: the grid does not start at 0, is not increasing, lengths differ, or the weights are
            negative or integrate to 0.
    """
    return float(_expected_robustness(eps, np.asarray(accuracy, dtype=float), weights))


def _expected_robustness(eps: Sequence[float], acc: np.ndarray, weights: Sequence[float] | None) -> np.ndarray:
    """:func:`expected_robustness` along the last axis of ``acc`` (accuracies [..., E])."""
    grid = np.asarray(eps, dtype=float)
    if grid.ndim != 1 or len(grid) == 0 or acc.shape[-1] != len(grid):
        raise ValueError(f"need matching grids, got eps {grid.shape} and accuracy {acc.shape}")
    if grid[0] != 0 or np.any(np.diff(grid) <= 0):
        raise ValueError(f"the ε grid must start at 0 and increase, got {grid.tolist()}")
    w = np.ones_like(grid) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != grid.shape or np.any(w < 0):
        raise ValueError(f"need one non-negative weight per grid point ({len(grid)}), "
                         f"got {np.asarray(weights).tolist()}")
    if len(grid) == 1:
        return acc[..., 0]
    norm = np.trapezoid(w, grid)
    if norm <= 0:
        raise ValueError(f"the ε weights integrate to 0 on the grid: {w.tolist()}")
    return np.trapezoid(acc * w, grid, axis=-1) / norm


def expected_robustness_exact(eps: Sequence[float], eps_star: np.ndarray,
                              weights: Sequence[float] | None = None) -> float:
    """E_ε[Acc_ε] over [0, ε_g] (ε_g = the grid's last value) for the step curve Acc_ε = mean_i [ε*_i > ε]:
    with uniform weights the mean of min(ε*_i, ε_g) / ε_g; with ``weights`` (a density piecewise linear
    between the grid points, as in :func:`expected_robustness`) the mean of W(min(ε*_i, ε_g)) / W(ε_g), W the
    density's integral from 0. Exact: no grid in between."""
    grid = np.asarray(eps, dtype=float)
    _expected_robustness(list(grid), np.zeros(len(grid)), weights)  # validates the grid and the weights
    star = np.asarray(eps_star, dtype=float)
    if len(grid) == 1 or len(star) == 0:
        return float((star > 0).mean()) if len(star) else 0.0
    w = np.ones_like(grid) if weights is None else np.asarray(weights, dtype=float)
    cum = np.concatenate([[0.0], np.cumsum(np.diff(grid) * (w[1:] + w[:-1]) / 2)])  # W at the grid points
    t = np.clip(star, 0.0, grid[-1])
    j = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, len(grid) - 2)  # t in [grid[j], grid[j + 1]]
    d = t - grid[j]
    slope = (w[j + 1] - w[j]) / (grid[j + 1] - grid[j])
    return float(((cum[j] + w[j] * d + slope * d * d / 2) / cum[-1]).mean())


def wilson_interval(successes: int, n: int, level: float = 0.95) -> list[float]:
    """Wilson score interval of a proportion; unlike the percentile bootstrap it does not collapse to a
    point at 0/n or n/n."""
    if n == 0:
        return [0.0, 1.0]
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [float(max(0.0, (centre - half) / (1 + z * z / n))), float(min(1.0, (centre + half) / (1 + z * z / n)))]


def bootstrap_intervals(eps: Sequence[float], correct: np.ndarray, weights: Sequence[float] | None = None,
                        resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap intervals over test examples for clean accuracy, Adv. (accuracy at ε_g) and
    expected robustness, from the evidence matrix ``correct[E, N]``."""
    rng = np.random.default_rng(seed)
    e, n = correct.shape
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).T  # [N, B] times each example is drawn
    acc = (correct.astype(np.float64) @ counts / n).T  # [B, E]
    stats = {"clean": acc[:, 0], "adv": acc[:, -1], "expected_robustness": _expected_robustness(eps, acc, weights)}
    q = [(1 - level) / 2, (1 + level) / 2]
    return {k: np.quantile(v, q).tolist() for k, v in stats.items()}


def delay_time(val_clean_acc: Sequence[float | None], threshold: float = 0.05) -> int | None:
    """Epochs trained until validation clean accuracy first exceeds ``threshold`` (1 = after the first
    epoch), or None if it never did (an epoch without a value, None, does not). The paper uses 5 % on
    100–200-class tasks."""
    for i, acc in enumerate(val_clean_acc):
        if acc is not None and acc > threshold:
            return i + 1
    return None


def adaptation_epoch(val_clean_acc: Sequence[float | None], fraction: float = 0.9) -> int | None:
    """Epochs trained until validation clean accuracy first reaches ``fraction`` of its final value (1 = after
    the first epoch); None without a final value. Applied to standard fine-tuning it places Epsilon-Scheduling's
    first hinge (the paper: where the task is learnt), applied to fix its second (where fix's adaptation ends)."""
    if not val_clean_acc or val_clean_acc[-1] is None:
        return None
    bar = fraction * val_clean_acc[-1]
    return next(i + 1 for i, acc in enumerate(val_clean_acc) if acc is not None and acc >= bar)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
             attack: Attack | None = None, eps: float = 0.0) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in its current mode, on attacked inputs if ``attack``."""
    correct, loss, n = 0.0, 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        if attack is not None and eps > 0:
            x = attack(model, x, y, eps)
        logits = _predict(model, x)
        correct += (logits.argmax(1) == y).sum().item()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
    return correct / max(n, 1), loss / max(n, 1)
