"""Tests of the paper's datasets (fake trees in their published layouts), the paper augmentation, sharded and
threaded batches, and JPEG draft decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.io import savemat

import robustft.data.paper as paper
from robustft.config import PAPER_DATASETS, DataConfig
from robustft.data import DATASETS, ImageArray, ImageFiles, build_data, eval_batches, train_batches
from robustft.data.loader import augment, rotate
from robustft.data.sources import read_image

AIRCRAFT = ["707-320", "A300B4", "Falcon 2000"]
CALTECH = ["001.ak47", "002.american-flag", "257.clutter"]
CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
CUB = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
DOGS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]


@pytest.fixture(autouse=True)
def three_classes(monkeypatch):
    """The fake datasets have three classes each."""
    monkeypatch.setattr(paper, "NUM_CLASSES", {name: 3 for name in PAPER_DATASETS})


def _image(path: Path, seed: int, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG" if path.suffix == ".jpg" else None)


def _cfg(name: str, root: Path | None, **kw) -> DataConfig:
    return DataConfig(name=name, root=None if root is None else str(root), image_size=8, download=False, **kw)


def _sizes(splits) -> tuple[int, int, int]:
    return len(splits.train), len(splits.val), len(splits.test)


def _counts(source) -> list[int]:
    return np.bincount(source.labels.numpy(), minlength=3).tolist()


def _write_json(folder: Path, parts: dict[str, dict[str, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, entries in parts.items():
        (folder / f"{part}.json").write_text(json.dumps(entries))
    return folder


def _vpt_split_dir(folder: Path, rel: list[list[str]], n_train: int) -> str:
    """VPT split files for per-class image lists ``rel``: the first ``n_train`` images of each class train,
    the next one validates, the rest test."""
    parts = {"train": {p: k for k, r in enumerate(rel) for p in r[:n_train]},
             "val": {r[n_train]: k for k, r in enumerate(rel)},
             "test": {p: k for k, r in enumerate(rel) for p in r[n_train + 1:]}}
    return str(_write_json(folder, parts))


# ------------------------------------------------------------------------------------ fake trees
def make_aircraft(base: Path) -> Path:
    data = base / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(AIRCRAFT) + "\n")
    n = 0
    for part, per_class in (("train", 3), ("val", 2), ("test", 2)):
        lines = []
        for variant in AIRCRAFT:
            for _ in range(per_class):
                n += 1
                _image(data / "images" / f"{1_000_000 + n}.jpg", n)
                lines.append(f"{1_000_000 + n} {variant}")
        (data / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")
    return base


def make_caltech(root: Path, per_class: int = 10) -> Path:
    for k, folder in enumerate(CALTECH):
        for i in range(per_class):
            _image(root / "256_ObjectCategories" / folder / f"{folder[:3]}_{i:04d}.jpg", 100 * k + i)
        (root / "256_ObjectCategories" / folder / "RENAME").write_text("not an image")
    return root


def _cars_annotations(path: Path, fnames: list[str], labels: list[int]) -> None:
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    records = np.zeros((1, len(fnames)), dtype=[(f, "O") for f in fields])
    for i, (fname, label) in enumerate(zip(fnames, labels)):
        records[0, i] = (1, 1, 7, 7, label, fname)
    savemat(path, {"annotations": records})


def make_cars(root: Path) -> Path:
    (root / "devkit").mkdir(parents=True)
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array([CARS], dtype=object)})
    for part, n, annos in (("train", 20, root / "devkit" / "cars_train_annos.mat"),
                           ("test", 6, root / "cars_test_annos_withlabels.mat")):
        fnames = [f"{i + 1:05d}.jpg" for i in range(n)]
        for i, fname in enumerate(fnames):
            _image(root / f"cars_{part}" / fname, i)
        _cars_annotations(annos, fnames, [i % 3 + 1 for i in range(n)])
    return root


def make_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    base.mkdir(parents=True)
    (base / "classes.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(CUB)))
    images, labels, split = [], [], []
    for k, folder in enumerate(CUB):
        for i in range(10):
            iid = len(images) + 1
            rel = f"{folder}/{folder[4:]}_{i:04d}.jpg"
            _image(base / "images" / rel, iid)
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {k + 1}")
            split.append(f"{iid} {i % 2}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (base / name).write_text("\n".join(lines) + "\n")
    return root


def _dogs_list(path: Path, files: list[str], labels: list[int]) -> None:
    savemat(path, {"file_list": np.array(files, dtype=object).reshape(-1, 1),
                   "annotation_list": np.array([f[:-4] for f in files], dtype=object).reshape(-1, 1),
                   "labels": np.array(labels, dtype=float).reshape(-1, 1)})


def make_dogs(root: Path, lists_folder: str = "") -> Path:
    parts: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for k, folder in enumerate(DOGS):
        for i in range(8):
            rel = f"{folder}/{folder[:9]}_{i}.jpg"
            _image(root / "Images" / rel, 10 * k + i)
            files, labels = parts["train" if i < 5 else "test"]
            files.append(rel)
            labels.append(k + 1)
    (root / lists_folder).mkdir(parents=True, exist_ok=True)
    for part, (files, labels) in parts.items():
        _dogs_list(root / lists_folder / f"{part}_list.mat", files, labels)
    return root


# ------------------------------------------------------------------------------------ loading
def test_registered_under_the_config_names():
    assert set(PAPER_DATASETS) <= set(DATASETS)
    assert paper.__doc__ and all(name in paper.__doc__ for name in PAPER_DATASETS)


def test_fgvc_aircraft_official_splits(tmp_path):
    root = make_aircraft(tmp_path / "fgvc-aircraft-2013b")
    data = build_data(_cfg("fgvc_aircraft", root))
    assert data.classes == AIRCRAFT and data.num_classes == 3
    assert _sizes(data) == (9, 6, 6)
    assert _counts(data.train) == [3, 3, 3] and _counts(data.test) == [2, 2, 2]
    assert isinstance(data.train, ImageFiles) and all("/data/images/" in str(p) for p in data.val.paths)
    images = data.test.read(torch.arange(len(data.test)))
    assert images.shape == (6, 3, 8, 8) and images.dtype == torch.uint8


def test_fgvc_aircraft_n_test_subsamples(tmp_path):
    root = make_aircraft(tmp_path / "fgvc-aircraft-2013b")
    data = build_data(_cfg("fgvc_aircraft", root, n_test=3))
    assert len(data.test) == 3 and _counts(data.test) == [1, 1, 1]


def test_caltech256_seeded_split(tmp_path):
    root = make_caltech(tmp_path / "c256")
    data = build_data(_cfg("caltech256", root))
    assert data.classes == ["ak47", "american-flag", "clutter"]
    # VPT's proportions of 30 images: test round(30 · 15187/30607) = 15, val round(30 · 771/30607) = 1
    assert _sizes(data) == (14, 1, 15) and _counts(data.test) == [5, 5, 5]
    assert not set(data.train.paths) & set(data.test.paths) and not set(data.val.paths) & set(data.train.paths)
    again = build_data(_cfg("caltech256", root))
    other = build_data(_cfg("caltech256", root, split_seed=1))
    assert again.test.paths == data.test.paths and other.test.paths != data.test.paths


def test_caltech256_vpt_split(tmp_path):
    root = make_caltech(tmp_path / "c256")
    rel = [[f"{c}/{c[:3]}_{i:04d}.jpg" for i in range(10)] for c in CALTECH]
    data = build_data(_cfg("caltech256", root, split_dir=_vpt_split_dir(tmp_path / "split", rel, n_train=4)))
    assert _sizes(data) == (12, 3, 15) and _counts(data.train) == [4, 4, 4]
    assert data.val.paths[0] == root / "256_ObjectCategories" / rel[0][4]


def test_stanford_cars(tmp_path):
    root = make_cars(tmp_path / "cars")
    data = build_data(_cfg("stanford_cars", root))
    assert data.classes == CARS
    assert _sizes(data) == (17, 3, 6) and _counts(data.val) == [1, 1, 1] and _counts(data.test) == [2, 2, 2]
    assert data.test.paths[0] == root / "cars_test" / "00001.jpg" and data.test.labels[:3].tolist() == [0, 1, 2]
    assert data.test.read(torch.tensor([0, 5])).shape == (2, 3, 8, 8)


def test_cub200_official_split_and_val(tmp_path):
    root = make_cub(tmp_path / "cub")
    data = build_data(_cfg("cub200", root))
    assert data.classes == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert _sizes(data) == (13, 2, 15)  # val: round(15 · 600/5994) = 2 of the 15 official train images
    assert _counts(data.test) == [5, 5, 5]
    again = build_data(_cfg("cub200", root / "CUB_200_2011"))  # ROOT may be CUB_200_2011 itself
    assert again.val.paths == data.val.paths


def test_cub200_vpt_split(tmp_path):
    root = make_cub(tmp_path / "cub")
    rel = [[f"{c}/{c[4:]}_{i:04d}.jpg" for i in range(10)] for c in CUB]
    data = build_data(_cfg("cub200", root, split_dir=_vpt_split_dir(tmp_path / "split", rel, n_train=6)))
    assert _sizes(data) == (18, 3, 9)


@pytest.mark.parametrize("lists_folder", ["", "lists"])
def test_stanford_dogs(tmp_path, lists_folder):
    root = make_dogs(tmp_path / "dogs", lists_folder)
    data = build_data(_cfg("stanford_dogs", root))
    assert data.classes == ["Chihuahua", "Japanese spaniel", "Maltese dog"]
    assert _sizes(data) == (13, 2, 9)  # val: round(15 / 10) = 2
    assert _counts(data.test) == [3, 3, 3]


def test_stanford_dogs_vpt_split(tmp_path):
    root = make_dogs(tmp_path / "dogs")
    rel = [[f"{c}/{c[:9]}_{i}.jpg" for i in range(8)] for c in DOGS]
    data = build_data(_cfg("stanford_dogs", root, split_dir=_vpt_split_dir(tmp_path / "split", rel, n_train=4)))
    assert _sizes(data) == (12, 3, 9) and data.test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("name, make, nest", [("fgvc_aircraft", make_aircraft, "fgvc-aircraft-2013b"),
                                              ("caltech256", make_caltech, "caltech256"),
                                              ("stanford_cars", make_cars, "stanford_cars")])
def test_torchvision_layouts(tmp_path, name, make, nest):
    make(tmp_path / "parent" / nest)
    data = build_data(_cfg(name, tmp_path / "parent"))
    assert data.num_classes == 3 and len(data.test) > 0


# ------------------------------------------------------------------------------------ errors
def _error(cfg: DataConfig, kind: type[Exception]) -> str:
    with pytest.raises(kind) as info:
        build_data(cfg)
    return str(info.value)


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_missing_root(tmp_path, name):
    msg = _error(_cfg(name, tmp_path / "nowhere"), FileNotFoundError)
    assert str(tmp_path / "nowhere") in msg and "data.root" in msg
    assert paper.LAYOUTS[name].splitlines()[0] in msg  # the expected tree


@pytest.mark.parametrize("name, make, remove", [
    ("fgvc_aircraft", make_aircraft, "data/images_variant_val.txt"),
    ("stanford_cars", make_cars, "cars_test_annos_withlabels.mat"),
    ("cub200", make_cub, "CUB_200_2011/train_test_split.txt"),
    ("stanford_dogs", make_dogs, "test_list.mat"),
])
def test_missing_list_file(tmp_path, name, make, remove):
    make(tmp_path / "root")
    (tmp_path / "root" / remove).unlink()
    msg = _error(_cfg(name, tmp_path / "root"), FileNotFoundError)
    assert remove.split("/")[-1] in msg and "Expected layout" in msg and "data.root" in msg


@pytest.mark.parametrize("name, make, image", [
    ("fgvc_aircraft", make_aircraft, "data/images/1000012.jpg"),
    ("stanford_cars", make_cars, "cars_train/00003.jpg"),
    ("cub200", make_cub, f"CUB_200_2011/images/{CUB[1]}/{CUB[1][4:]}_0002.jpg"),
    ("stanford_dogs", make_dogs, f"Images/{DOGS[2]}/{DOGS[2][:9]}_6.jpg"),
])
def test_missing_image(tmp_path, name, make, image):
    make(tmp_path / "root")
    (tmp_path / "root" / image).unlink()
    msg = _error(_cfg(name, tmp_path / "root"), FileNotFoundError)
    assert str(tmp_path / "root" / image) in msg and "data.root" in msg


def _cub_split(tmp_path: Path, train: dict[str, int]) -> DataConfig:
    root = make_cub(tmp_path / "cub")
    good = {f"{CUB[0]}/{CUB[0][4:]}_0000.jpg": 0}
    split = _write_json(tmp_path / "split", {"train": train, "val": good, "test": good})
    return _cfg("cub200", root, split_dir=str(split))


def test_split_json_bad_label(tmp_path):
    msg = _error(_cub_split(tmp_path, {f"{CUB[0]}/{CUB[0][4:]}_0001.jpg": 7}), ValueError)
    assert "train.json" in msg and "7" in msg and "data.split_dir" in msg and "0..2" in msg


def test_split_json_unknown_path(tmp_path):
    msg = _error(_cub_split(tmp_path, {"999.Nothing/none.jpg": 0}), FileNotFoundError)
    assert "train.json" in msg and "999.Nothing/none.jpg" in msg and "data.split_dir" in msg


def test_split_json_missing_file(tmp_path):
    cfg = _cub_split(tmp_path, {f"{CUB[0]}/{CUB[0][4:]}_0001.jpg": 0})
    (Path(cfg.split_dir) / "val.json").unlink()
    msg = _error(cfg, FileNotFoundError)
    assert "val.json" in msg and "data.split_dir" in msg


def test_split_dir_refused_for_official_splits(tmp_path):
    make_aircraft(tmp_path / "air")
    msg = _error(_cfg("fgvc_aircraft", tmp_path / "air", split_dir=str(tmp_path)), ValueError)
    assert "data.split_dir" in msg


def test_wrong_class_count(tmp_path, monkeypatch):
    make_caltech(tmp_path / "c256")
    monkeypatch.setitem(paper.NUM_CLASSES, "caltech256", 257)
    msg = _error(_cfg("caltech256", tmp_path / "c256"), ValueError)
    assert "3 classes" in msg and "257" in msg and "256_ObjectCategories" in msg


def test_unreadable_mat_file(tmp_path):
    make_dogs(tmp_path / "dogs")
    (tmp_path / "dogs" / "train_list.mat").write_text("not a mat file")
    msg = _error(_cfg("stanford_dogs", tmp_path / "dogs"), ValueError)
    assert "train_list.mat" in msg and "Expected layout" in msg


def test_malformed_list_line(tmp_path):
    make_aircraft(tmp_path / "air")
    (tmp_path / "air" / "data" / "images_variant_test.txt").write_text("1000001 Spitfire\n")
    msg = _error(_cfg("fgvc_aircraft", tmp_path / "air"), ValueError)
    assert "Spitfire" in msg and "images_variant_test.txt" in msg


# ------------------------------------------------------------------------------------ downloads
def _patch_download(monkeypatch, name: str, action) -> list:
    import torchvision.datasets

    calls = []

    def fake(root, **kw):
        calls.append(root)
        action(Path(root))

    monkeypatch.setattr(torchvision.datasets, {"fgvc_aircraft": "FGVCAircraft", "caltech256": "Caltech256"}[name],
                        fake)
    return calls


def _offline(root: Path) -> None:
    raise OSError("network is unreachable")


@pytest.mark.parametrize("name", ["fgvc_aircraft", "caltech256"])
def test_download_offline_gives_the_layout(tmp_path, monkeypatch, name):
    calls = _patch_download(monkeypatch, name, _offline)
    cfg = DataConfig(name=name, cache_dir=str(tmp_path / "cache"), download=True)
    msg = _error(cfg, FileNotFoundError)
    assert calls == [str(tmp_path / "cache" / name)]
    assert "downloading it failed" in msg and "network is unreachable" in msg and "data.root" in msg
    assert paper.LAYOUTS[name].splitlines()[0] in msg


def test_no_download_when_not_allowed(tmp_path, monkeypatch):
    calls = _patch_download(monkeypatch, "fgvc_aircraft", _offline)
    msg = _error(DataConfig(name="fgvc_aircraft", cache_dir=str(tmp_path), download=False), FileNotFoundError)
    assert calls == [] and "data.root" in msg and "data.download is false" in msg


def test_download_into_the_cache(tmp_path, monkeypatch):
    calls = _patch_download(monkeypatch, "fgvc_aircraft", lambda root: make_aircraft(root / "fgvc-aircraft-2013b"))
    cfg = DataConfig(name="fgvc_aircraft", cache_dir=str(tmp_path / "cache"), image_size=8, download=True)
    assert _sizes(build_data(cfg)) == (9, 6, 6) and len(calls) == 1
    build_data(cfg)
    assert len(calls) == 1  # found in the cache the second time


# ------------------------------------------------------------------------------------ augmentation
def _x(n: int = 8, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_paper_augmentation_range_shape_and_seed():
    x = _x()
    out = augment(x, True, 2, _gen(), color_jitter=0.4, rotation=30)
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(x, True, 2, _gen(), color_jitter=0.4, rotation=30))
    assert not torch.equal(out, augment(x, True, 2, _gen(2), color_jitter=0.4, rotation=30))
    assert not torch.equal(out, augment(x, True, 2, _gen()))
    assert torch.equal(x, _x())  # the input is not modified


def test_zero_jitter_and_rotation_change_nothing():
    x = _x()
    g_old, g_new = _gen(), _gen()
    old = augment(x, True, 2, g_old)
    new = augment(x, True, 2, g_new, color_jitter=0.0, rotation=0.0)
    assert torch.equal(old, new) and torch.equal(g_old.get_state(), g_new.get_state())  # no extra draws
    assert augment(x, False, 0, _gen(), color_jitter=0.0, rotation=0.0) is x


def test_color_jitter_alone():
    grey = torch.full((16, 3, 6, 6), 0.5)
    out = augment(grey, False, 0, _gen(), color_jitter=0.25)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])  # grey stays grey
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))  # a constant image stays constant
    levels = out[:, 0, 0, 0]
    assert levels.min() >= 0.5 * 0.75 - 1e-6 and levels.max() <= 0.5 * 1.25 + 1e-6 and levels.std() > 0
    x = _x(16)
    jittered = augment(x, False, 0, _gen(), color_jitter=0.25)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.equal(jittered, x)


def test_rotate_by_90_degrees_is_rot90():
    x = _x(2, 9)
    out = rotate(x, torch.tensor([90.0, -90.0]))
    assert torch.allclose(out[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(out[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-6)


def test_rotate_matches_affine_grid():
    x, degrees = _x(4, 10), torch.tensor([-10.0, 3.0, 25.0, 170.0])
    rad = torch.deg2rad(degrees)
    theta = torch.stack([torch.stack([rad.cos(), -rad.sin(), torch.zeros(4)], 1),
                         torch.stack([rad.sin(), rad.cos(), torch.zeros(4)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(rotate(x, degrees), expected, atol=1e-5)


def test_rotation_augmentation():
    ones = torch.ones(16, 3, 9, 9)
    out = augment(ones, False, 0, _gen(), rotation=20)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[:, :, 4, 4], torch.ones(16, 3))  # the centre stays
    assert (out[:, 0, 0, 0] < 1).sum() >= 12  # corners fall outside and are filled with zeros
    assert len({round(v, 6) for v in out[:, 0, 0, 0].tolist()}) > 8  # one angle per example


# ------------------------------------------------------------------------------------ shards and threads
@pytest.fixture
def cub_train(tmp_path) -> ImageFiles:
    return build_data(_cfg("cub200", make_cub(tmp_path / "cub"))).train


def _epoch(source, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    args = dict(flip=True, pad_crop=1, color_jitter=0.3, rotation=15)
    return list(train_batches(source, 8, 4, seed=3, epoch=1, **{**args, **kw}))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


@pytest.mark.parametrize("world", [2, 4])
def test_shards_concatenate_to_the_single_process_batch(cub_train, world):
    whole = _epoch(cub_train)
    shards = [_epoch(cub_train, shard=(rank, world)) for rank in range(world)]
    assert all(len(s) == len(whole) == 3 for s in shards)
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([s[i][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[i][1] for s in shards]), y)


def test_shards_of_resized_in_memory_images():
    rng = np.random.default_rng(0)
    source = ImageArray(torch.from_numpy(rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)),
                        torch.arange(40) % 4)
    whole = list(train_batches(source, 12, 8, 0, 0, True, 2, color_jitter=0.2, rotation=10))
    halves = [list(train_batches(source, 12, 8, 0, 0, True, 2, color_jitter=0.2, rotation=10, shard=(r, 2)))
              for r in range(2)]
    assert all(torch.equal(torch.cat([halves[0][i][0], halves[1][i][0]]), x) for i, (x, _) in enumerate(whole))


class CountingSource:
    """An image source that records how many images it was asked to read."""

    def __init__(self, inner) -> None:
        self.inner, self.labels, self.read_count = inner, inner.labels, 0

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, index: torch.Tensor) -> torch.Tensor:
        self.read_count += len(index)
        return self.inner.read(index)

    def subset(self, index):
        return CountingSource(self.inner.subset(index))


def test_a_shard_reads_only_its_images(cub_train):
    source = CountingSource(cub_train)
    _epoch(source, shard=(1, 2))
    assert source.read_count == 3 * 2  # 3 batches of 4, half of each


def test_shard_needs_a_divisible_batch(cub_train):
    with pytest.raises(ValueError, match="not divisible"):
        train_batches(cub_train, 8, 6, 0, 0, shard=(0, 4))
    with pytest.raises(ValueError, match="rank"):
        train_batches(cub_train, 8, 4, 0, 0, shard=(2, 2))


def test_threads_yield_the_same_batches(cub_train):
    assert _same(_epoch(cub_train, num_workers=2), _epoch(cub_train))
    assert _same(_epoch(cub_train, num_workers=2, shard=(1, 2)), _epoch(cub_train, shard=(1, 2)))
    assert _same(list(eval_batches(cub_train, 8, 3, num_workers=2)), list(eval_batches(cub_train, 8, 3)))
    batches = train_batches(cub_train, 8, 4, 3, 1, num_workers=2)
    next(batches)
    batches.close()  # stopping early shuts the threads down


# ------------------------------------------------------------------------------------ JPEG draft decoding
def test_large_jpeg_read_small_matches_a_full_decode(tmp_path):
    yy, xx = np.mgrid[0:240, 0:320]
    arr = np.stack([xx * 255 // 320, yy * 255 // 240, (xx + yy) % 256 // 2], -1).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(arr[..., 0]).save(tmp_path / "grey.jpg")
    for name in ("big.jpg", "grey.jpg"):
        out = read_image(tmp_path / name, 16)
        with Image.open(tmp_path / name) as im:
            full = np.asarray(im.convert("RGB").resize((16, 16), Image.BILINEAR))
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - full).mean() < 3
    with pytest.raises(OSError, match="not-an-image"):
        (tmp_path / "not-an-image.jpg").write_text("text")
        read_image(tmp_path / "not-an-image.jpg", 16)


# ------------------------------------------------------------------------------------ end to end
def test_fine_tune_a_paper_preset_on_a_fake_tree(tmp_path, tiny_overrides):
    """A paper preset (augmentation, threaded decoding, micro-batches) trains and evaluates on FGVC-Aircraft's
    layout, shrunk to a tiny model and 16×16 images."""
    from robustft.api import fine_tune
    from robustft.config import load_config

    preset = Path(__file__).resolve().parent.parent / "configs" / "paper" / "resnet50-fgvc_aircraft-eps4.yaml"
    cfg = load_config(preset, tiny_overrides + [
        f"data.root={make_aircraft(tmp_path / 'fgvc')}", "data.name=fgvc_aircraft", "data.batch_size=4",
        "data.micro_batch_size=2", "data.num_workers=2", "train.epochs=2", "schedule.t1=1", "schedule.t2=2",
        "optim.warmup_epochs=0", "train.run_name=aircraft"])
    assert cfg.data.color_jitter == 0.25 and cfg.data.rotation == 10  # the preset's augmentation is on
    run = fine_tune(cfg)
    assert run.done
    rows = run.epoch_rows()
    assert len(rows) == 2 and all(np.isfinite(r.train_loss) for r in rows)
    assert json.loads((run.path / "summary.json").read_text())["num_classes"] == 3
