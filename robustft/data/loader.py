"""Batches for training and evaluation: x float [B, 3, S, S] in [0, 1], y int64 [B].

Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch's batches are a
pure function of its index: a resumed run sees exactly the batches an uninterrupted one would.

Augmentation is drawn for a whole (global) batch before it is applied, one draw per example and transform,
in this order: flip, pad-and-crop, colour jitter, rotation; a transform that is off draws nothing. Each
process of a data-parallel run draws the global batch and keeps its slice (``shard``), so the slices of all
processes put together are, bit for bit, the batch of a single process.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

import torch
import torch.nn.functional as F

from robustft.data.sources import ImageSource
from robustft.errors import ConfigError, DataError

T = TypeVar("T")
Batch = tuple[torch.Tensor, torch.Tensor]
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""R, G, B weights of the grey level (torchvision's rgb_to_grayscale)."""


def to_float(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, C, H, W] → float RGB [B, 3, size, size] in [0, 1]; float images (already in [0, 1], in the
    model's channels) are only resized."""
    if images.is_floating_point():
        x = images.to(torch.float32, copy=True)  # the caller's tensor is never changed in place
    else:
        x = images.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x.contiguous()


# ------------------------------------------------------------------------------------ augmentation
@dataclass(frozen=True)
class Augmentation:
    """The random draws of one batch's augmentation, one row per example; None where a transform is off."""

    flip: torch.Tensor | None = None
    """bool [B]: flip horizontally."""
    offsets: torch.Tensor | None = None
    """int64 [B, 2]: (dy, dx) of the crop in the zero-padded image."""
    pad_crop: int = 0
    """Padding of the pad-and-crop, pixels."""
    jitter: torch.Tensor | None = None
    """float [B, 3]: brightness, contrast and saturation factors."""
    jitter_order: torch.Tensor | None = None
    """int64 [B, 3]: which of the three (0, 1, 2 as above) is applied first, second, third."""
    rotation: torch.Tensor | None = None
    """float [B, 2]: cosine and sine of the rotation angle."""

    def rows(self, part: slice) -> "Augmentation":
        """The draws of the examples in ``part`` (a shard of the batch)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[part] for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def draw_augmentation(batch_size: int, gen: torch.Generator, flip: bool = False, pad_crop: int = 0,
                      color_jitter: float = 0.0, rotation: float = 0.0) -> Augmentation:
    """Draw the augmentation of a batch of ``batch_size`` examples from ``gen``.

    Args:
        batch_size: Examples in the batch (the global batch in data-parallel runs).
        gen: The epoch's generator; transforms that are off draw nothing from it.
        flip: Random horizontal flip, probability 1/2.
        pad_crop: Zero padding in pixels of the random crop; 0 turns it off.
        color_jitter: Brightness, contrast and saturation factors uniform in [1 − c, 1 + c], applied in a
            random order per example; 0 turns it off.
        rotation: Angle uniform in [−r, r] degrees; 0 turns it off.
    """
    b = batch_size
    flips = torch.rand(b, generator=gen) < 0.5 if flip else None
    offsets = torch.randint(0, 2 * pad_crop + 1, (b, 2), generator=gen) if pad_crop > 0 else None
    jitter = order = cos_sin = None
    if color_jitter > 0:
        jitter = 1 + color_jitter * (2 * torch.rand(b, 3, generator=gen) - 1)
        order = torch.rand(b, 3, generator=gen).argsort(dim=1, stable=True)
    if rotation > 0:
        radians = (2 * torch.rand(b, generator=gen).double() - 1) * (rotation * math.pi / 180)
        cos_sin = torch.stack((radians.cos(), radians.sin()), dim=1).float()
    return Augmentation(flips, offsets, pad_crop, jitter, order, cos_sin)


def flip_and_crop(x: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """The geometric part of ``aug``: each example flipped and cropped from its zero-padded image as drawn."""
    if aug.flip is not None:
        x = torch.where(aug.flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if aug.offsets is not None:
        _, _, h, w = x.shape
        padded = F.pad(x, (aug.pad_crop,) * 4)
        x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(aug.offsets.tolist())])
    return x


def apply_augmentation(x: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Apply drawn augmentation to float images [B, 3, H, W] in [0, 1]; each example is transformed on its own.

    Returns:
        New images in [0, 1] (``x`` itself when every transform is off).
    """
    x = flip_and_crop(x, aug)
    if aug.jitter is not None:
        if aug.jitter_order is None:
            raise ValueError("Augmentation: jitter is set without jitter_order")
        x = _color_jitter(x, aug.jitter, aug.jitter_order)
    if aug.rotation is not None:
        x = _rotate(x, aug.rotation)
    return x


def augment(x: torch.Tensor, flip: bool, pad_crop: int, gen: torch.Generator, color_jitter: float = 0.0,
            rotation: float = 0.0) -> torch.Tensor:
    """Random flip, pad-and-crop (zero padding), colour jitter and rotation, drawn per example from ``gen``.

    See :func:`draw_augmentation` for the parameters. With ``color_jitter = rotation = 0`` the output and the
    numbers drawn are those of a flip and pad-and-crop alone.
    """
    return apply_augmentation(x, draw_augmentation(len(x), gen, flip, pad_crop, color_jitter, rotation))


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image [B, 3, H, W] by its angle in degrees (counter-clockwise as displayed), bilinear,
    zero fill, clamped to [0, 1]."""
    radians = degrees.double() * (math.pi / 180)
    return _rotate(x, torch.stack((radians.cos(), radians.sin()), dim=1).float())


def _rotate(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    # The sampling grid F.affine_grid(align_corners=False) builds for a rotation, computed elementwise rather
    # than by a batched matrix product so that an image's grid does not depend on the rest of its batch.
    _, _, h, w = x.shape
    cos, sin = (cos_sin[:, i].to(x).view(-1, 1, 1) for i in (0, 1))
    ys = ((torch.arange(h, dtype=x.dtype, device=x.device) * 2 + 1) / h - 1).view(-1, 1)
    xs = ((torch.arange(w, dtype=x.dtype, device=x.device) * 2 + 1) / w - 1).view(1, -1)
    grid = torch.stack((cos * xs - (sin * (h / w)) * ys, (sin * (w / h)) * xs + cos * ys), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _image_mean(gray: torch.Tensor) -> torch.Tensor:
    # Summed serially (the last entry of a cumulative sum) in float64: a mean that depends neither on the
    # other images of the batch nor on the thread count, unlike a parallel reduction.
    total = gray.flatten(1).double().cumsum(1)[:, -1]
    return (total / gray[0].numel()).to(gray.dtype).view(-1, 1, 1, 1)


def _adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """Brightness (op 0), contrast (1) or saturation (2), blended as torchvision does, clamped."""
    if op == 0:
        return (x * factor).clamp_(0, 1)
    reference = _image_mean(_gray(x)) if op == 1 else _gray(x)
    return (factor * x + (1 - factor) * reference).clamp_(0, 1)


def _color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    for step in range(3):
        for op in range(3):
            rows = (order[:, step] == op).nonzero().flatten()
            if len(rows):
                x[rows] = _adjust(x[rows], op, factors[rows, op].to(x).view(-1, 1, 1, 1))
    return x


# ------------------------------------------------------------------------------------ batches
def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's order and augmentation."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def num_train_batches(n: int, batch_size: int) -> int:
    """Optimiser steps per epoch (incomplete last batch dropped, so BatchNorm never sees a batch of 1)."""
    return max(n // batch_size, 1)


def shard_slice(batch_size: int, shard: tuple[int, int]) -> slice:
    """Positions of process ``rank``'s examples in a global batch, for ``shard = (rank, world)``.

    Raises:
        ValueError: ``rank`` is not in [0, world).
        ConfigError: ``batch_size`` is not divisible by ``world``.
    """
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} of {world} processes; want 0 <= rank < world")
    if batch_size % world:
        raise ConfigError(f"data.batch_size: {batch_size} is not divisible by the {world} processes (shard world); "
                          f"set it to a multiple of {world}")
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


def prefetch(jobs: Iterable[Callable[[], T]], num_workers: int) -> Iterator[T]:
    """Results of ``jobs`` in order; with ``num_workers > 0`` computed ahead in that many threads.

    Jobs are taken from ``jobs`` in order in the calling thread (so anything they draw at creation is
    drawn in order), and at most ``2 · num_workers`` are in flight.
    """
    if num_workers <= 0:
        for job in jobs:
            yield job()
        return
    with ThreadPoolExecutor(num_workers, thread_name_prefix="robustft-data") as pool:
        pending: deque = deque()
        try:
            for job in jobs:
                pending.append(pool.submit(job))
                if len(pending) >= 2 * num_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the consumer stopped early: drop what has not started
            for future in pending:
                future.cancel()


def _train_batch(source: ImageSource, size: int, index: torch.Tensor, aug: Augmentation) -> Batch:
    return apply_augmentation(to_float(source.read(index), size), aug), source.labels[index]


def _train_batch_drawn(source: ImageSource, size: int, index: torch.Tensor,
                       aug: Augmentation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Augmentation]:
    return (*_train_batch(source, size, index, aug), index, aug)


def train_batches(source: ImageSource, size: int, batch_size: int, seed: int, epoch: int, flip: bool = False,
                  pad_crop: int = 0, color_jitter: float = 0.0, rotation: float = 0.0,
                  shard: tuple[int, int] = (0, 1), num_workers: int = 0, draws: bool = False) -> Iterator[Any]:
    """Shuffled, augmented training batches of one epoch: ``(images, labels)``, with ``draws`` also each
    example's position in ``source`` and the batch's :class:`Augmentation` (carried perturbations use them).

    Args:
        source: The training images.
        size: Side of the images yielded, pixels.
        batch_size: Global batch size, summed over all processes.
        seed: Seed of the order and augmentation; with ``epoch`` it fixes every batch.
        epoch: Index of the epoch.
        flip, pad_crop, color_jitter, rotation: The augmentation, see :func:`draw_augmentation`.
        shard: (rank, world): this process keeps, and reads, only its contiguous ``batch_size / world`` slice
            of each global batch; order and augmentation are drawn as for one process.
        num_workers: Threads reading and augmenting batches ahead; 0 reads in the loop. Batches are the same.

    Raises:
        ConfigError: ``batch_size`` is not divisible by the world size.
    """
    part = shard_slice(batch_size, shard)
    gen = epoch_generator(seed, epoch)
    order = torch.randperm(len(source), generator=gen)

    def jobs() -> Iterator[Callable[[], Any]]:
        for i in range(num_train_batches(len(source), batch_size)):
            index = order[i * batch_size:(i + 1) * batch_size]
            aug = draw_augmentation(len(index), gen, flip, pad_crop, color_jitter, rotation)
            yield partial(_train_batch_drawn if draws else _train_batch, source, size, index[part], aug.rows(part))

    return prefetch(jobs(), num_workers)


def _eval_batch(source: ImageSource, size: int, index: torch.Tensor) -> Batch:
    return to_float(source.read(index), size), source.labels[index]


def eval_batches(source: ImageSource, size: int, batch_size: int, num_workers: int = 0) -> Iterator[Batch]:
    """Batches in order, without augmentation; ``num_workers`` threads read ahead (same batches)."""
    jobs = (partial(_eval_batch, source, size, torch.arange(start, min(start + batch_size, len(source))))
            for start in range(0, len(source), batch_size))
    return prefetch(jobs, num_workers)


# ------------------------------------------------------------------------------------ training data per epoch
class TrainData(Protocol):
    """Training batches, one iterable per epoch: what the training loop draws from."""

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps (batches) in one epoch."""
        ...

    def epoch(self, epoch: int) -> Iterable[Batch]:
        """The batches of epoch ``epoch`` (0-based), images float [B, C, H, W] in [0, 1]."""
        ...


@dataclass(frozen=True)
class SourceBatches:
    """robustft's own training batches of an image source (:func:`train_batches`): every epoch's order and
    augmentation follow from (seed, epoch), so a resumed run sees the batches it would have seen."""

    source: ImageSource
    size: int
    batch_size: int
    seed: int = 0
    flip: bool = False
    pad_crop: int = 0
    color_jitter: float = 0.0
    rotation: float = 0.0
    shard: tuple[int, int] = (0, 1)
    num_workers: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return num_train_batches(len(self.source), self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        return train_batches(self.source, self.size, self.batch_size, self.seed, epoch, self.flip, self.pad_crop,
                             self.color_jitter, self.rotation, shard=self.shard, num_workers=self.num_workers)

    def epoch_drawn(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Augmentation]]:
        """The batches of :meth:`epoch`, each with its examples' positions in ``source`` and its augmentation."""
        return train_batches(self.source, self.size, self.batch_size, self.seed, epoch, self.flip, self.pad_crop,
                             self.color_jitter, self.rotation, shard=self.shard, num_workers=self.num_workers,
                             draws=True)


@dataclass(frozen=True)
class LoaderBatches:
    """Any re-iterable of ``(images, labels)`` batches with a length (a torch ``DataLoader`` included),
    iterated once per epoch. A shuffling DataLoader draws its order from torch's global generator, which a
    checkpoint saves and a resume restores."""

    loader: Iterable[Batch]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for batch in self.loader:
            yield batch[0], batch[1]


def as_train_data(train: Any) -> TrainData:
    """``train`` as :class:`TrainData`: as it is when it has ``epoch()`` and ``steps_per_epoch``, else a
    re-iterable of batches with a length (:class:`LoaderBatches`).

    Raises:
        TypeError: ``train`` is neither, or is a one-shot iterator (it would be empty from the second epoch).
        DataError: ``train`` has no batches.
    """
    if hasattr(train, "epoch") and hasattr(train, "steps_per_epoch"):
        return train
    if isinstance(train, Iterator) or not hasattr(train, "__iter__"):
        raise TypeError(f"train: want a DataLoader (or another re-iterable of (images, labels) batches with a "
                        f"length), got {type(train).__name__}; a one-shot iterator or generator would be empty "
                        "after the first epoch")
    if not hasattr(train, "__len__"):
        raise TypeError(f"train: {type(train).__name__} has no length; the LR schedule needs the number of "
                        "batches per epoch (use a DataLoader over a map-style dataset, or a list of batches)")
    if len(train) == 0:
        raise DataError("train: no batches; pass a DataLoader over a non-empty dataset")
    return LoaderBatches(train)
