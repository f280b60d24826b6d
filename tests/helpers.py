"""Helpers shared by test modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fit_briefly(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 2) -> nn.Module:
    """Train ``model`` for a few Adam steps on random batches of (x, y); returned in eval mode with no grads."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()
