"""Robustness over an ε grid: which test examples survive the attack at each ε.

In ``incremental`` mode the grid is walked upward and only the examples still correct at the previous
ε are attacked: an adversarial example inside a small ball is inside every larger one, so the curve is
monotone by construction and the cost falls as accuracy falls. ``independent`` attacks every example
at every ε (for comparison; its curve may rise with ε, a sign of a weak attack or gradient masking).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft.attacks import Attack
from robustft.config import format_eps
from robustft.data import ImageSource, eval_batches
from robustft.eval.result import RobustnessResult

log = logging.getLogger(__name__)


def default_eps_grid(eps_target: float, step: float = 1 / 255) -> list[float]:
    """0, step, 2·step, …, ε_g (ε_g included even when it is not a multiple of the step)."""
    k = int(np.floor(eps_target / step + 1e-9))
    grid = [i * step for i in range(k + 1)]
    if eps_target - grid[-1] > 1e-12:
        grid.append(eps_target)
    grid[-1] = eps_target
    return grid


def _survivors(model: nn.Module, source: ImageSource, eps: float, attack: Attack, device: torch.device,
               image_size: int, batch_size: int, bar: tqdm) -> np.ndarray:
    """Boolean per example of ``source``: still classified correctly after the attack at ``eps``."""
    out = []
    for x, y in eval_batches(source, image_size, batch_size):
        x, y = x.to(device), y.to(device)
        x_adv = attack(model, x, y, eps)
        with torch.no_grad():
            out.append((model(x_adv).argmax(1) == y).cpu().numpy())
        bar.update(len(y))
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def evaluate(model: nn.Module, source: ImageSource, eps_grid: list[float], attack: Attack, *,
             device: torch.device, image_size: int, batch_size: int = 256, mode: str = "incremental",
             seed: int = 0, protocol: dict | None = None) -> RobustnessResult:
    """Attack ``source`` at every ε of the grid; returns the evidence matrix and the protocol.

    The model is put in eval mode. ε = 0 is added to the grid if missing (its row is clean accuracy).
    Random starts are seeded per ε from ``seed`` without disturbing the caller's random state.
    """
    if mode not in ("incremental", "independent"):
        raise ValueError(f"mode must be incremental or independent, got {mode!r}")
    grid = sorted(set([0.0] + [float(e) for e in eps_grid]))
    model.eval()
    n = len(source)
    correct = np.zeros((len(grid), n), dtype=bool)
    with torch.random.fork_rng():
        for e, eps in enumerate(grid):
            torch.manual_seed(seed + e)
            todo = np.flatnonzero(correct[e - 1]) if (mode == "incremental" and e > 0) else np.arange(n)
            desc = f"eval ε={format_eps(eps)}"
            with tqdm(total=len(todo), desc=desc, unit="img", disable=None, leave=False) as bar:
                correct[e, todo] = _survivors(model, source.subset(todo), eps, attack, device, image_size,
                                              batch_size, bar)
            log.info("%s: accuracy %.4f (%d attacked)", desc, correct[e].mean(), len(todo))
    protocol = {"mode": mode, "seed": seed, "grid": [format_eps(e) for e in grid], **(protocol or {})}
    return RobustnessResult(grid, correct, source.labels.numpy().copy(), protocol)
