"""Image sources: labelled images that can be subset and read in batches as uint8 [B, C, H, W]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from robustft.errors import BadImageError


class ImageSource(Protocol):
    """Labelled images addressed by position."""

    labels: torch.Tensor
    """int64 [N]."""

    def __len__(self) -> int: ...

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] (C is 1 or 3) at the given positions."""
        ...

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ImageSource": ...


@dataclass
class ImageArray:
    """Images held in memory as one uint8 tensor (small datasets)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageArray wants uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ImageArray":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageArray(self.images[index], self.labels[index])


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
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
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

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ImageFiles":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageFiles([self.paths[i] for i in index.tolist()], self.labels[index], self.size)
