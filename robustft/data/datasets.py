"""The datasets robustft knows, each returning train / test (and optionally val) image sources and class names.

The paper's five fine-grained datasets live in :mod:`robustft.data.paper`.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustft.config import DATASETS, DataConfig
from robustft.data.sources import ImageArray, ImageFiles, ImageSource
from robustft.data.splits import stratified_split
from robustft.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}

Splits = dict[str, ImageSource]


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format), gzip-compressed or not, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an idx file of unsigned bytes; replace it with the dataset's original file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _fashion_mnist_folders(cfg: DataConfig) -> list[Path]:
    cache = Path(os.path.expanduser(cfg.cache_dir)) / "FashionMNIST" / "raw"
    folders = [Path(cfg.root).expanduser()] if cfg.root else []
    return folders + [FASHION_MNIST_SYSTEM_DIR, cache]


def _download_fashion_mnist(cfg: DataConfig) -> None:
    from torchvision.datasets import FashionMNIST

    root = Path(os.path.expanduser(cfg.cache_dir))
    log.info("Fashion-MNIST not found locally; downloading it into %s", root)
    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)


FASHION_MNIST_NATIVE = 28
"""Side of Fashion-MNIST's images, pixels."""


def load_fashion_mnist(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """Fashion-MNIST as single-channel images, repeated to RGB when read: at its native 28×28 when
    ``data.image_size`` is 28, else zero-padded to 32×32 (then resized to ``data.image_size`` when read).
    A training step at 28×28 costs about 0.96× one at 32×32 on the embedded backbone (BENCHMARKS.md).

    Looked for in ``data.root``, the Debian package ``dataset-fashion-mnist``, then the cache directory,
    where it is downloaded when ``data.download`` is true.
    """
    folders = _fashion_mnist_folders(cfg)
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    if any(_find_idx(folders, s) is None for pair in stems.values() for s in pair) and cfg.download:
        try:
            _download_fashion_mnist(cfg)
        except Exception as err:  # network errors come in many types
            log.warning("downloading Fashion-MNIST failed: %s", err)
    splits: Splits = {}
    for split, (img_stem, lbl_stem) in stems.items():
        img_path, lbl_path = _find_idx(folders, img_stem), _find_idx(folders, lbl_stem)
        if img_path is None or lbl_path is None:
            raise MissingFileError(
                f"Fashion-MNIST files ({img_stem}.gz, ...) not found in {', '.join(map(str, folders))}. "
                "Install them with: sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), "
                "or go online with data.download=true, or point data.root to a folder holding the idx files."
            )
        images = torch.from_numpy(read_idx(img_path).copy()).unsqueeze(1)
        if cfg.image_size != FASHION_MNIST_NATIVE:
            images = F.pad(images, (2, 2, 2, 2))
        splits[split] = ImageArray(images, torch.from_numpy(read_idx(lbl_path).astype(np.int64)))
    return splits, list(FASHION_MNIST_CLASSES)


def load_digits(cfg: DataConfig, test_fraction: float = 0.2) -> tuple[Splits, list[str]]:
    """scikit-learn's 8×8 digits (1,797 images, ships in the wheel); a stratified 20 % test split."""
    from sklearn.datasets import load_digits as sk_digits  # scikit-learn loads slowly; only this dataset needs it

    bunch = sk_digits()
    images = torch.from_numpy(np.round(bunch.images * 255 / 16).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    full = ImageArray(images, labels)
    train_idx, test_idx = stratified_split(labels, round(test_fraction * len(labels)), seed=0)
    return {"train": full.subset(train_idx), "test": full.subset(test_idx)}, [str(d) for d in range(10)]


def _scan_class_folders(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = classes or found
    if sorted(found) != sorted(classes):
        raise DataError(f"{folder} has class folders {found} but the training split has {classes}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"data.root: the class folder {folder / name} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add its images, or remove the class from "
                            "every split")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return paths, labels, classes


def load_imagefolder(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """A folder ``root`` with ``train/`` and ``test/`` (and optionally ``val/``), one sub-folder per class."""
    root = Path(cfg.root or "").expanduser()
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise MissingFileError(
                f"data.root: {root / part} is not a folder; imagefolder expects {root}/train/<class>/*.jpg and "
                f"{root}/test/<class>/*.jpg (and optionally {root}/val/<class>/...)"
            )
    splits: Splits = {}
    classes = None
    for part in ("train", "val", "test"):
        if (root / part).is_dir():
            paths, labels, classes = _scan_class_folders(root / part, classes)
            splits[part] = ImageFiles(paths, torch.tensor(labels, dtype=torch.long), cfg.image_size)
    return splits, list(classes or [])


DATASETS.register("fashion_mnist", load_fashion_mnist,
                  summary="Fashion-MNIST (Debian's dataset-fashion-mnist, or downloaded), 28×28 native or padded to 32×32, 10 classes")
DATASETS.register("digits", load_digits, summary="scikit-learn's 8×8 digits, 10 classes (ships in the wheel; tests)")
DATASETS.register("imagefolder", load_imagefolder, check=lambda d, config: [] if d.root else [
    "data.root: imagefolder needs data.root (a folder with train/ and test/)"],
    summary="your own folder: root/{train,test[,val]}/CLASS/*.jpg")
