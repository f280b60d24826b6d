"""The paper's five fine-grained datasets, read from their published archives.

Each loader reads ``data.root`` (null: ``<data.cache_dir>/<name>``) and returns image files (RGB, resized to
``data.image_size`` when read) with human-readable class names in the dataset's own label order. build_data
then keeps ``data.n_val`` validation and ``data.n_test`` test examples (stratified, seeded by
``data.split_seed``). A missing or malformed folder raises an error naming the file, the expected layout and
the key to set. Layouts (ROOT is ``data.root``):

fgvc_aircraft: FGVC-Aircraft 2013b at variant level, 100 classes, the official train / val / test
(3,334 / 3,333 / 3,333). ROOT is ``fgvc-aircraft-2013b/`` or the folder holding it (torchvision's)::

    ROOT/data/variants.txt                         one variant name per line, in label order
    ROOT/data/images_variant_{train,val,test}.txt  "<image id> <variant name>" per line
    ROOT/data/images/<image id>.jpg

caltech256: Caltech-256, 257 classes (``257.clutter`` included), 30,607 images. ROOT holds
``256_ObjectCategories/``, or is torchvision's folder holding ``caltech256/256_ObjectCategories/``::

    ROOT/256_ObjectCategories/<NNN>.<name>/*.jpg   label NNN - 1, class name <name>

    Splits: the JSONs of ``data.split_dir`` (paths relative to 256_ObjectCategories/), or else a seeded
    split in VPT's proportions: test = a stratified 15,187/30,607 of all images (stratified_split seeded by
    data.split_seed), then val = a stratified 771/30,607 of all images taken from the rest, train the
    remainder: 14,649 / 771 / 15,187 on the full dataset.

stanford_cars: Stanford Cars, 196 classes, torchvision's StanfordCars layout; ROOT may also be the folder
holding ``stanford_cars/``. No download (the official URLs are gone)::

    ROOT/devkit/cars_meta.mat                      class_names
    ROOT/devkit/cars_train_annos.mat               annotations: fname, class (1-based), bbox_*
    ROOT/cars_train/<fname>.jpg
    ROOT/cars_test_annos_withlabels.mat            annotations, as for train
    ROOT/cars_test/<fname>.jpg

    Splits: the official test set; the official train set cut 85 / 15 into train / val (stratified,
    seeded by data.split_seed): 6,922 / 1,222 of 8,144.

cub200: CUB-200-2011, 200 classes. ROOT holds ``CUB_200_2011/`` or is that folder::

    ROOT/CUB_200_2011/images.txt                   "<image id> <class folder>/<file>.jpg"
    ROOT/CUB_200_2011/image_class_labels.txt       "<image id> <label, 1-based>"
    ROOT/CUB_200_2011/train_test_split.txt         "<image id> <1 train, 0 test>"
    ROOT/CUB_200_2011/classes.txt                  "<label> <NNN.Class_name>"
    ROOT/CUB_200_2011/images/<class folder>/<file>.jpg

    Splits: the JSONs of ``data.split_dir`` (paths relative to images/), or else the official train / test
    (5,994 / 5,794) with a stratified 600/5,994 of train (seeded) as val: 5,394 / 600 / 5,794 (VPT's sizes).

stanford_dogs: Stanford Dogs, 120 classes; label k is the k-th breed folder in sorted order (as in the lists)::

    ROOT/Images/<wnid>-<breed>/<file>.jpg
    ROOT/train_list.mat, ROOT/test_list.mat        file_list (relative to Images/), labels (1-based);
                                                   or in ROOT/lists/

    Splits: the JSONs of ``data.split_dir`` (paths relative to Images/), or else the official train / test
    (12,000 / 8,580) with a stratified tenth of train (seeded) as val: 10,800 / 1,200 / 8,580.

Split files (``data.split_dir``, the public VPT format): ``train.json``, ``val.json`` and ``test.json``, each
a JSON object mapping an image path, relative to the image folder named above, to its 0-based label.

fgvc_aircraft and caltech256 are downloaded with torchvision into the cache directory when ``data.root`` is
null and ``data.download`` is true.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robustft.config import DATASETS, DataConfig
from robustft.data.sources import ImageFiles, ImageSource
from robustft.data.splits import stratified_split
from robustft.errors import ConfigError, DataError, MissingFileError

log = logging.getLogger(__name__)

Splits = dict[str, ImageSource]
NUM_CLASSES = {"fgvc_aircraft": 100, "caltech256": 257, "stanford_cars": 196, "cub200": 200, "stanford_dogs": 120}
LAYOUTS = {
    "fgvc_aircraft": "ROOT/data/variants.txt\nROOT/data/images_variant_{train,val,test}.txt\n"
                     "ROOT/data/images/<image id>.jpg\n(ROOT: fgvc-aircraft-2013b/ or the folder holding it)",
    "caltech256": "ROOT/256_ObjectCategories/<NNN>.<name>/*.jpg\n"
                  "(or ROOT/caltech256/256_ObjectCategories/..., torchvision's layout)",
    "stanford_cars": "ROOT/devkit/cars_meta.mat\nROOT/devkit/cars_train_annos.mat\nROOT/cars_train/*.jpg\n"
                     "ROOT/cars_test_annos_withlabels.mat\nROOT/cars_test/*.jpg\n"
                     "(or ROOT/stanford_cars/..., torchvision's layout; no download: the official URLs are gone)",
    "cub200": "ROOT/CUB_200_2011/images.txt, image_class_labels.txt, train_test_split.txt, classes.txt\n"
              "ROOT/CUB_200_2011/images/<NNN.Class_name>/<file>.jpg\n(ROOT may be CUB_200_2011/ itself)",
    "stanford_dogs": "ROOT/Images/<wnid>-<breed>/<file>.jpg\nROOT/train_list.mat, ROOT/test_list.mat "
                     "(or ROOT/lists/train_list.mat, ROOT/lists/test_list.mat)",
}
IMAGE_DIRS = {"caltech256": "256_ObjectCategories", "cub200": "images", "stanford_dogs": "Images"}
SPLIT_PARTS = ("train", "val", "test")
CALTECH_VPT = {"test": 15_187, "val": 771, "all": 30_607}


# ------------------------------------------------------------------------------------ errors
def _root_message(name: str, problem: str) -> str:
    tree = "\n".join("    " + line for line in LAYOUTS[name].splitlines())
    return (f"{name}: {problem}.\nExpected layout:\n{tree}\n"
            f"Set data.root to ROOT (the layouts are documented in robustft/data/paper.py).")


def _split_message(name: str, problem: str, num_classes: int) -> str:
    return (f"{name}: {problem}.\ndata.split_dir must hold train.json, val.json and test.json, each a JSON object "
            f'{{"<image path relative to {IMAGE_DIRS[name]}/>": <label 0..{num_classes - 1}>, ...}} (the public VPT '
            f"format); set data.split_dir to null for the seeded split.")


def _need_file(name: str, path: Path) -> Path:
    if not path.is_file():
        raise MissingFileError(_root_message(name, f"{path} not found"))
    return path


def _check_classes(name: str, classes: list[str], where: Path) -> None:
    if len(classes) != NUM_CLASSES[name]:
        raise DataError(_root_message(name, f"{where} gives {len(classes)} classes, {name} has {NUM_CLASSES[name]}"))


def _first_missing(paths: list[Path]) -> Path | None:
    listings: dict[Path, set[str]] = {}  # one directory listing per folder, not one stat per file
    for path in paths:
        if path.parent not in listings:
            listings[path.parent] = set(os.listdir(path.parent)) if path.parent.is_dir() else set()
        if path.name not in listings[path.parent]:
            return path
    return None


def _files(name: str, paths: list[Path], labels: list[int], cfg: DataConfig, listed_in: Path) -> ImageFiles:
    """Image files after checking they exist and their labels are in range."""
    k = NUM_CLASSES[name]
    bad = next((lab for lab in labels if not 0 <= lab < k), None)
    if bad is not None:
        raise DataError(_root_message(name, f"{listed_in} has label {bad + 1}, outside 1..{k}"))
    if not paths:
        raise DataError(_root_message(name, f"{listed_in} lists no images"))
    missing = _first_missing(paths)
    if missing is not None:
        raise MissingFileError(_root_message(name, f"{missing} (listed in {listed_in}) not found"))
    return ImageFiles(paths, torch.tensor(labels, dtype=torch.long), cfg.image_size)


# ------------------------------------------------------------------------------------ finding and reading
def _find(root: Path, marker: str, nests: tuple[str, ...]) -> Path | None:
    return next((base for base in (*(root / n for n in nests), root) if (base / marker).exists()), None)


def _download_fgvc_aircraft(root: Path) -> None:
    from torchvision.datasets import FGVCAircraft

    FGVCAircraft(str(root), split="trainval", annotation_level="variant", download=True)


def _download_caltech256(root: Path) -> None:
    from torchvision.datasets import Caltech256

    Caltech256(str(root), download=True)


DOWNLOADERS: dict[str, Callable[[Path], None]] = {"fgvc_aircraft": _download_fgvc_aircraft,
                                                  "caltech256": _download_caltech256}


def _locate(cfg: DataConfig, name: str, marker: str, nests: tuple[str, ...] = ()) -> Path:
    """The folder holding ``marker``: ROOT or ROOT/<nest>; downloaded into the cache when allowed."""
    root = Path(cfg.root or Path(cfg.cache_dir) / name).expanduser()
    base = _find(root, marker, nests)
    if base is None and cfg.root is None and cfg.download and name in DOWNLOADERS:
        log.info("%s not found in %s; downloading it with torchvision", name, root)
        try:
            DOWNLOADERS[name](root)
        except Exception as err:  # network errors come in many types
            raise MissingFileError(_root_message(name, f"{root} holds no {marker} and downloading it failed "
                                                       f"({type(err).__name__}: {err})")) from err
        base = _find(root, marker, nests)
    if base is None:
        where = " or ".join(str(b / marker) for b in (*(root / n for n in nests), root))
        hint = ", data.download is false" if cfg.root is None and name in DOWNLOADERS else ""
        raise MissingFileError(_root_message(name, f"{where} not found (data.root={cfg.root or 'null'}{hint})"))
    return base


def _no_split_dir(cfg: DataConfig, name: str) -> None:
    if cfg.split_dir:
        raise ConfigError(f"data.split_dir: {name} has official splits; split files are read for "
                          f"{', '.join(IMAGE_DIRS)} only. Set data.split_dir to null.")


def _pairs(name: str, path: Path) -> list[tuple[str, str]]:
    """Lines ``<key> <value>`` of a text list (the value may contain spaces)."""
    pairs = []
    for number, line in enumerate(_need_file(name, path).read_text().splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 1:
            raise DataError(_root_message(name, f"line {number} of {path} is {line!r}, not '<id> <value>'"))
        if parts:
            pairs.append((parts[0], parts[1]))
    return pairs


def _int(name: str, value: str, path: Path) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(_root_message(name, f"{path} has {value!r} where an integer belongs")) from None


def _mat(name: str, path: Path, fields: tuple[str, ...]) -> dict:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(_need_file(name, path)), squeeze_me=True)
    except (MatReadError, ValueError, TypeError, NotImplementedError) as err:
        raise DataError(_root_message(name, f"{path} is not a readable .mat file ({err})")) from err
    missing = [f for f in fields if f not in mat]
    if missing:
        raise DataError(_root_message(name, f"{path} lacks {', '.join(missing)} (has {sorted(mat)})"))
    return mat


def _split_off(source: ImageFiles, n_val: int, seed: int) -> tuple[ImageFiles, ImageFiles]:
    """(train, val): ``n_val`` examples (at least one) split off ``source``, stratified and seeded."""
    train, val = stratified_split(source.labels, max(n_val, 1), seed)
    return source.subset(train), source.subset(val)


def _vpt_part(name: str, path: Path, image_dir: Path, cfg: DataConfig) -> ImageFiles:
    k = NUM_CLASSES[name]
    if not path.is_file():
        raise MissingFileError(_split_message(name, f"{path} not found (data.split_dir={cfg.split_dir})", k))
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(_split_message(name, f"{path} is not JSON ({err})", k)) from err
    if not isinstance(entries, dict) or not entries:
        raise DataError(_split_message(name, f"{path} is not a non-empty JSON object", k))
    for rel, label in entries.items():
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < k:
            raise DataError(_split_message(name, f"{path}: label {label!r} of {rel!r} is not an integer in "
                                                 f"0..{k - 1}", k))
    paths = [image_dir / rel for rel in entries]
    missing = _first_missing(paths)
    if missing is not None:
        raise MissingFileError(_split_message(name, f"{path} names {missing.relative_to(image_dir)}, but "
                                                    f"{missing} does not exist", k))
    return ImageFiles(paths, torch.tensor(list(entries.values()), dtype=torch.long), cfg.image_size)


def _vpt_splits(cfg: DataConfig, name: str, image_dir: Path) -> Splits:
    split_dir = Path(cfg.split_dir or "").expanduser()
    log.info("%s: splits from %s", name, split_dir)
    return {part: _vpt_part(name, split_dir / f"{part}.json", image_dir, cfg) for part in SPLIT_PARTS}


# ------------------------------------------------------------------------------------ the datasets
def load_fgvc_aircraft(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """FGVC-Aircraft variants (100 classes), official train / val / test."""
    name = "fgvc_aircraft"
    _no_split_dir(cfg, name)
    data = _locate(cfg, name, "data", ("fgvc-aircraft-2013b",)) / "data"
    variants = _need_file(name, data / "variants.txt")
    classes = [line.strip() for line in variants.read_text().splitlines() if line.strip()]
    _check_classes(name, classes, variants)
    label_of = {c: k for k, c in enumerate(classes)}
    splits: Splits = {}
    for part in SPLIT_PARTS:
        path = data / f"images_variant_{part}.txt"
        pairs = _pairs(name, path)
        unknown = next((v for _, v in pairs if v not in label_of), None)
        if unknown is not None:
            raise DataError(_root_message(name, f"{path} names variant {unknown!r}, not in {variants}"))
        splits[part] = _files(name, [data / "images" / f"{i}.jpg" for i, _ in pairs],
                              [label_of[v] for _, v in pairs], cfg, path)
    return splits, classes


def load_caltech256(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """Caltech-256 (257 classes); VPT JSON splits, or the seeded split of the module docstring."""
    name = "caltech256"
    folder = _locate(cfg, name, IMAGE_DIRS[name], ("caltech256",)) / IMAGE_DIRS[name]
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"\d{3}\..+", p.name))
    classes = [d.name.split(".", 1)[1] for d in dirs]
    _check_classes(name, classes, folder)
    if cfg.split_dir:
        return _vpt_splits(cfg, name, folder), classes
    files = [sorted(p for p in d.iterdir() if p.suffix.lower() == ".jpg") for d in dirs]
    full = _files(name, [p for f in files for p in f], [k for k, f in enumerate(files) for _ in f], cfg, folder)
    n = len(full)
    rest, test = stratified_split(full.labels, max(round(n * CALTECH_VPT["test"] / CALTECH_VPT["all"]), 1),
                                  cfg.split_seed)
    train, val = _split_off(full.subset(rest), round(n * CALTECH_VPT["val"] / CALTECH_VPT["all"]), cfg.split_seed)
    return {"train": train, "val": val, "test": full.subset(test)}, classes


def _cars_part(name: str, annotations: Path, images: Path, cfg: DataConfig) -> ImageFiles:
    records = np.atleast_1d(_mat(name, annotations, ("annotations",))["annotations"])
    fields = records.dtype.names or ()
    if "fname" not in fields or "class" not in fields:
        raise DataError(_root_message(name, f"annotations in {annotations} have fields {fields}, "
                                            "not fname and class"))
    paths = [images / str(np.squeeze(r["fname"])) for r in records]
    return _files(name, paths, [int(np.squeeze(r["class"])) - 1 for r in records], cfg, annotations)


def load_stanford_cars(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """Stanford Cars (196 classes); official test, official train cut 85 / 15 into train / val."""
    name = "stanford_cars"
    _no_split_dir(cfg, name)
    base = _locate(cfg, name, "devkit", ("stanford_cars",))
    meta = base / "devkit" / "cars_meta.mat"
    classes = [str(c).strip() for c in np.atleast_1d(_mat(name, meta, ("class_names",))["class_names"])]
    _check_classes(name, classes, meta)
    full = _cars_part(name, base / "devkit" / "cars_train_annos.mat", base / "cars_train", cfg)
    train, val = _split_off(full, round(0.15 * len(full)), cfg.split_seed)
    test = _cars_part(name, base / "cars_test_annos_withlabels.mat", base / "cars_test", cfg)
    return {"train": train, "val": val, "test": test}, classes


def load_cub200(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """CUB-200-2011 (200 classes); VPT JSON splits, or official train / test with 600 of train as val."""
    name = "cub200"
    base = _locate(cfg, name, IMAGE_DIRS[name], ("CUB_200_2011",))
    classes = [v.split(".", 1)[-1].replace("_", " ") for _, v in _pairs(name, base / "classes.txt")]
    _check_classes(name, classes, base / "classes.txt")
    if cfg.split_dir:
        return _vpt_splits(cfg, name, base / IMAGE_DIRS[name]), classes
    files = dict(_pairs(name, base / "images.txt"))
    tables = {t: dict(_pairs(name, base / t)) for t in ("image_class_labels.txt", "train_test_split.txt")}
    for table, values in tables.items():
        if values.keys() != files.keys():
            raise DataError(_root_message(name, f"{base / table} and {base / 'images.txt'} list other image ids"))
    parts: dict[str, ImageFiles] = {}
    for part, flag in (("train", 1), ("test", 0)):
        ids = [i for i in files if _int(name, tables["train_test_split.txt"][i], base / "train_test_split.txt") == flag]
        labels = [_int(name, tables["image_class_labels.txt"][i], base / "image_class_labels.txt") - 1 for i in ids]
        parts[part] = _files(name, [base / "images" / files[i] for i in ids], labels, cfg, base / "images.txt")
    train, val = _split_off(parts["train"], round(len(parts["train"]) * 600 / 5994), cfg.split_seed)
    return {"train": train, "val": val, "test": parts["test"]}, classes


def _dogs_part(name: str, base: Path, part: str, folders: list[str], cfg: DataConfig) -> ImageFiles:
    candidates = [base / f"{part}_list.mat", base / "lists" / f"{part}_list.mat"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise MissingFileError(_root_message(name, f"{candidates[0]} or {candidates[1]} not found"))
    mat = _mat(name, path, ("file_list", "labels"))
    files = [str(np.squeeze(f)) for f in np.atleast_1d(mat["file_list"])]
    labels = [int(np.squeeze(lab)) - 1 for lab in np.atleast_1d(mat["labels"])]
    if len(files) != len(labels):
        raise DataError(_root_message(name, f"{path} has {len(files)} files but {len(labels)} labels"))
    for file, label in zip(files, labels):
        if 0 <= label < len(folders) and file.split("/")[0] != folders[label]:
            raise DataError(_root_message(name, f"{path} labels {file} {label + 1}, the label of {folders[label]}"))
    return _files(name, [base / "Images" / f for f in files], labels, cfg, path)


def load_stanford_dogs(cfg: DataConfig) -> tuple[Splits, list[str]]:
    """Stanford Dogs (120 classes); VPT JSON splits, or official train / test with a tenth of train as val."""
    name = "stanford_dogs"
    base = _locate(cfg, name, IMAGE_DIRS[name])
    folders = sorted(p.name for p in (base / IMAGE_DIRS[name]).iterdir() if p.is_dir())
    classes = [f.split("-", 1)[-1].replace("_", " ") for f in folders]
    _check_classes(name, classes, base / IMAGE_DIRS[name])
    if cfg.split_dir:
        return _vpt_splits(cfg, name, base / IMAGE_DIRS[name]), classes
    train = _dogs_part(name, base, "train", folders, cfg)
    train, val = _split_off(train, round(len(train) / 10), cfg.split_seed)
    return {"train": train, "val": val, "test": _dogs_part(name, base, "test", folders, cfg)}, classes


for _name, _load in {"fgvc_aircraft": load_fgvc_aircraft, "caltech256": load_caltech256,
                     "stanford_cars": load_stanford_cars, "cub200": load_cub200,
                     "stanford_dogs": load_stanford_dogs}.items():
    DATASETS.register(_name, _load, extra={"paper": True},
                      summary=f"the paper's {_name} from data.root in its published layout (or data.split_dir)")
