"""Batches for training and evaluation: x float [B, 3, S, S] in [0, 1], y int64 [B].

Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch's batches are a
pure function of its index: a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from robustft.data.sources import ImageSource


def to_float(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, C, H, W] → float RGB [B, 3, size, size] in [0, 1]."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x.contiguous()


def augment(x: torch.Tensor, flip: bool, pad_crop: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and pad-and-crop (zero padding), per example."""
    b, _, h, w = x.shape
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
    if pad_crop > 0:
        padded = F.pad(x, (pad_crop,) * 4)
        offsets = torch.randint(0, 2 * pad_crop + 1, (b, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    return x


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's order and augmentation."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def num_train_batches(n: int, batch_size: int) -> int:
    """Optimiser steps per epoch (incomplete last batch dropped, so BatchNorm never sees a batch of 1)."""
    return max(n // batch_size, 1)


def train_batches(source: ImageSource, size: int, batch_size: int, seed: int, epoch: int,
                  flip: bool = False, pad_crop: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented training batches of one epoch."""
    gen = epoch_generator(seed, epoch)
    order = torch.randperm(len(source), generator=gen)
    for i in range(num_train_batches(len(source), batch_size)):
        index = order[i * batch_size:(i + 1) * batch_size]
        x = augment(to_float(source.read(index), size), flip, pad_crop, gen)
        yield x, source.labels[index]


def eval_batches(source: ImageSource, size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches in order, without augmentation."""
    for start in range(0, len(source), batch_size):
        index = torch.arange(start, min(start + batch_size, len(source)))
        yield to_float(source.read(index), size), source.labels[index]
