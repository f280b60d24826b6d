"""Numbers derived from accuracies: expected robustness, delay time, and batch accuracy."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import Attack


def expected_robustness(eps: Sequence[float], accuracy: Sequence[float]) -> float:
    """E_{ε~U[0, ε_g]}[Acc_ε] by the trapezoid rule on the grid, ε_g = the grid's last value.

    The grid must start at 0 and increase. With a single point (ε_g = 0) it is that accuracy.

    Raises:
        ValueError: the grid does not start at 0, is not increasing, or lengths differ.
    """
    eps, acc = np.asarray(eps, dtype=float), np.asarray(accuracy, dtype=float)
    if eps.shape != acc.shape or eps.ndim != 1 or len(eps) == 0:
        raise ValueError(f"need matching 1-D grids, got eps {eps.shape} and accuracy {acc.shape}")
    if eps[0] != 0 or np.any(np.diff(eps) <= 0):
        raise ValueError(f"the ε grid must start at 0 and increase, got {eps.tolist()}")
    if len(eps) == 1:
        return float(acc[0])
    return float(np.trapezoid(acc, eps) / eps[-1])


def delay_time(val_clean_acc: Sequence[float], threshold: float = 0.05) -> int | None:
    """Epochs trained until validation clean accuracy first exceeds ``threshold`` (1 = after the first
    epoch), or None if it never did. The paper uses 5 % on 100–200-class tasks."""
    for i, acc in enumerate(val_clean_acc):
        if acc > threshold:
            return i + 1
    return None


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
             attack: Attack | None = None, eps: float = 0.0) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in its current mode, on attacked inputs if ``attack``."""
    correct, loss, n = 0, 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        if attack is not None and eps > 0:
            x = attack(model, x, y, eps)
        logits = _predict(model, x)
        correct += (logits.argmax(1) == y).sum().item()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
    return correct / max(n, 1), loss / max(n, 1)
