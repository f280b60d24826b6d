"""Image sources: labelled images that can be subset and read in batches as [B, C, H, W] tensors (uint8 for
the datasets robustft loads; float in [0, 1] for tensors a user passes in, :class:`TensorImages`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
)

from robustft.errors import BadImageError, DataError


class ImageSource(Protocol):
    """Labelled images addressed by position."""

    labels: torch.Tensor
    """int64 [N]."""

    def __len__(self) -> int: ...

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] at the given positions: uint8 (C is 1 or 3; made RGB in [0, 1] by
        :func:`robustft.data.to_float`) or float in [0, 1] (taken as they are)."""
        ...

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> "ImageSource": ...


M = TypeVar("M", bound="InMemory")


@dataclass
class InMemory:
    """Images and labels held in memory as two tensors."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def subset(self: M, index: Sequence[int] | np.ndarray | torch.Tensor) -> M:
        index = torch.as_tensor(index, dtype=torch.long)
        return type(self)(self.images[index], self.labels[index])


@dataclass
class ImageArray(InMemory):
    """Images held in memory as one uint8 tensor (small datasets)."""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageArray wants uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")


@dataclass
class TensorImages(InMemory):
    """Float images in [0, 1] held in memory, in the channels the model takes (a user's own data)."""

    def __post_init__(self) -> None:
        if not self.images.is_floating_point() or self.images.dim() != 4:
            raise DataError(f"images: want float [N, C, H, W] in [0, 1], got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        if len(self.images) and (self.images.min() < 0 or self.images.max() > 1):
            raise DataError(f"images: pixel values must lie in [0, 1] (found {self.images.min().item():.3g} to "
                            f"{self.images.max().item():.3g}); ε is in pixel units, so pass unnormalised images "
                            "and put the normalisation inside the model (robustft.models.Normalized)")


def as_source(data: Any) -> ImageSource:
    """Labelled images as an :data:`ImageSource`: a source as it is, ``(images, labels)`` tensors, or any
    iterable of ``(images, labels)`` batches (a torch ``DataLoader`` included), read once into memory.

    Raises:
        TypeError: ``data`` is none of these.
        DataError: the images are not float [N, C, H, W] in [0, 1] (see :class:`TensorImages`) or there are none.
    """
    if isinstance(data, (InMemory, ImageFiles)) or (hasattr(data, "read") and hasattr(data, "subset")):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorImages(data[0].float() if data[0].dtype == torch.float64 else data[0], data[1].long())
    if not hasattr(data, "__iter__"):
        raise TypeError(f"expected an image source, (images, labels) tensors or an iterable of (images, labels) "
                        f"batches such as a DataLoader; got {type(data).__name__}")
    batches = [_batch(batch) for batch in data]
    xs, ys = [x for x, _ in batches], [y for _, y in batches]
    if not xs:
        raise DataError("the data yielded no batches")
    return as_source((torch.cat(xs), torch.cat(ys)))


def read_image(path: Path, size: int) -> np.ndarray:
    """One image file as uint8 RGB [size, size, 3], resized bilinearly.

    A JPEG much larger than ``size`` is decoded at a reduced scale (PIL's ``draft``: 1/2, 1/4 or 1/8, at least
    twice ``size`` on each side) before the resize, which is several times faster on full-resolution photos.

    Raises:
        BadImageError: The file cannot be read as an image; the message names it (an OSError).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (2 * size, 2 * size))
            return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except (OSError, SyntaxError) as err:  # PIL reports some malformed files (PNG chunks) as SyntaxError
        raise BadImageError(f"cannot read the image {path} ({err}); it is truncated, corrupt or not an image: "
                            "delete or replace that file, then run the command again (train: with --resume)") from err


@dataclass
class ImageFiles:
    """Image files read and resized to ``size``×``size`` RGB on demand (users' own folders)."""

    paths: list[Path]
    labels: torch.Tensor
    size: int

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(index), 3, self.size, self.size, dtype=torch.uint8)
        for row, i in enumerate(index.tolist()):
            out[row] = torch.from_numpy(read_image(self.paths[i], self.size).copy()).permute(2, 0, 1)
        return out

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> "ImageFiles":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageFiles([self.paths[i] for i in index.tolist()], self.labels[index], self.size)


def as_streamed_source(data: Any) -> ImageSource:
    """``data`` as the evaluator reads it: a DataLoader over a map-style dataset streamed
    (:class:`LoaderImages`: read by position when attacked, only the labels in memory), anything else as
    :func:`as_source` reads it."""
    index = _streamable(data)
    return LoaderImages.of(data, index) if index is not None else as_source(data)


def _streamable(loader: Any) -> np.ndarray | None:
    """The dataset positions a DataLoader yields, when it can be read by position instead of iterated: a
    map-style dataset, the default batching without ``drop_last``, and sequential, shuffled (every example
    once) or subset sampling; else None. Its sampler is not iterated (a shuffle would draw from the caller's
    generator); a shuffled order is evaluated in the dataset's order, which changes no example's verdict."""
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset) or loader.drop_last:
        return None
    dataset, sampler = loader.dataset, loader.sampler
    if type(loader.batch_sampler) is not BatchSampler or not hasattr(dataset, "__len__"):
        return None
    n = len(dataset)
    if type(sampler) is SequentialSampler or (type(sampler) is RandomSampler and not sampler.replacement
                                              and sampler.num_samples == n):
        return np.arange(n)
    if type(sampler) is SubsetRandomSampler:
        return np.sort(np.asarray([int(i) for i in sampler.indices], dtype=np.int64))
    return None


class LoaderImages:
    """The examples of a DataLoader's map-style dataset at ``index``, read by position a batch at a time (the
    loader's ``collate_fn`` makes the batch) whenever they are attacked; only the labels are held in memory.
    Images must be float in [0, 1], as :class:`robustft.data.TensorImages` checks them."""

    def __init__(self, loader: DataLoader, index: np.ndarray, labels: torch.Tensor):
        self.loader, self.index, self.labels = loader, index, labels

    @classmethod
    def of(cls, loader: DataLoader, index: np.ndarray) -> "LoaderImages":
        """The examples at ``index``, their labels read in one pass through the loader's own workers."""
        reader = DataLoader(loader.dataset, batch_size=loader.batch_size or 1, sampler=index.tolist(),
                            num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                            worker_init_fn=loader.worker_init_fn,
                            multiprocessing_context=loader.multiprocessing_context,
                            generator=torch.Generator())  # a private generator: the caller's is not drawn from
        labels = [_batch(batch)[1] for batch in reader]
        if not labels:
            raise DataError("the data yielded no batches: pass a DataLoader or an iterable of (images, labels) batches "
                            "with at least one example")
        return cls(loader, index, torch.cat(labels).long())

    def __len__(self) -> int:
        return len(self.index)

    def read(self, index: torch.Tensor) -> torch.Tensor:
        rows = self.index[torch.as_tensor(index, dtype=torch.long).numpy()]
        x, _ = _batch(self.loader.collate_fn([self.loader.dataset[int(i)] for i in rows]))
        return TensorImages(x.float() if x.dtype == torch.float64 else x, self.labels[index]).images

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> "LoaderImages":
        index = torch.as_tensor(index, dtype=torch.long)
        return LoaderImages(self.loader, self.index[index.numpy()], self.labels[index])


def _batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a batch a DataLoader yields, on the CPU."""
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise TypeError(f"each batch must be (images, labels); got {type(batch).__name__}")
    return torch.as_tensor(batch[0]).detach().cpu(), torch.as_tensor(batch[1]).detach().cpu()
