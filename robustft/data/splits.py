"""Stratified, seeded splits and subsets: every class keeps its share."""

from __future__ import annotations

import numpy as np
import torch

from robustft.errors import DataError


def stratified_split(labels: torch.Tensor, n_second: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of (first, second) parts, ``second`` holding ``n_second`` examples in class proportions.

    Raises:
        DataError: ``n_second`` is not smaller than the number of examples.
    """
    n = len(labels)
    if n_second == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    if not 0 < n_second < n:
        raise DataError(f"cannot split {n_second} of {n} examples off; ask for fewer")
    from sklearn.model_selection import train_test_split

    y = labels.numpy()
    counts = np.bincount(y)
    counts = counts[counts > 0]
    # stratification needs two examples per class and room for every class on both sides
    can_stratify = counts.min() >= 2 and min(n_second, n - n_second) >= len(counts)
    stratify = y if can_stratify else None
    first, second = train_test_split(np.arange(n), test_size=n_second, random_state=seed, stratify=stratify)
    return torch.from_numpy(np.sort(first)), torch.from_numpy(np.sort(second))


def stratified_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Positions of a stratified subset of ``n`` examples (all when ``n`` is None or too large)."""
    if n is None or n >= len(labels):
        return torch.arange(len(labels))
    return stratified_split(labels, n, seed)[1]
