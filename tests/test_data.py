"""Tests of robustft.data: splits, datasets (digits, imagefolder, Fashion-MNIST idx files) and batches."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robustft.data.datasets as datasets_mod
from robustft.config import ConfigError, DataConfig
from robustft.data import (
    ImageArray,
    ImageFiles,
    build_data,
    eval_batches,
    num_train_batches,
    stratified_split,
    stratified_subset,
    to_float,
    train_batches,
)
from robustft.data.datasets import read_idx
from robustft.data.loader import augment


# ------------------------------------------------------------------------------------ splits
def _labels(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((c,), k, dtype=torch.long) for k, c in enumerate(counts)])


def test_stratified_split_sizes_and_balance():
    labels = _labels([40, 30, 20, 10])
    first, second = stratified_split(labels, 20, seed=0)
    assert len(first) == 80 and len(second) == 20
    assert sorted(torch.cat([first, second]).tolist()) == list(range(100))  # a partition
    assert torch.equal(first, first.sort().values) and torch.equal(second, second.sort().values)
    assert np.bincount(labels[second].numpy(), minlength=4).tolist() == [8, 6, 4, 2]
    assert np.bincount(labels[first].numpy(), minlength=4).tolist() == [32, 24, 16, 8]


def test_stratified_split_seeded():
    labels = _labels([40, 30, 20, 10])
    a = stratified_split(labels, 20, seed=0)
    b = stratified_split(labels, 20, seed=0)
    c = stratified_split(labels, 20, seed=1)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_stratified_split_edge_cases():
    labels = _labels([5, 5])
    first, second = stratified_split(labels, 0, seed=0)
    assert torch.equal(first, torch.arange(10)) and len(second) == 0
    for bad in (10, 11, -1):
        with pytest.raises(ValueError, match="ask for fewer"):
            stratified_split(labels, bad, seed=0)


def test_stratified_subset():
    labels = _labels([50, 30, 20])
    assert torch.equal(stratified_subset(labels, None, 0), torch.arange(100))
    assert torch.equal(stratified_subset(labels, 100, 0), torch.arange(100))
    assert torch.equal(stratified_subset(labels, 500, 0), torch.arange(100))
    sub = stratified_subset(labels, 10, seed=0)
    assert len(sub) == 10 and len(set(sub.tolist())) == 10
    assert np.bincount(labels[sub].numpy(), minlength=3).tolist() == [5, 3, 2]
    assert torch.equal(sub, stratified_subset(labels, 10, seed=0))


# ------------------------------------------------------------------------------------ digits
@pytest.fixture(scope="module")
def digits():
    return build_data(DataConfig(name="digits", n_val=100, n_train=300, n_test=50))


def test_digits_sizes_and_classes(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (300, 100, 50)
    assert digits.classes == [str(d) for d in range(10)] and digits.num_classes == 10
    for part, n in ((digits.train, 300), (digits.val, 100), (digits.test, 50)):
        counts = np.bincount(part.labels.numpy(), minlength=10)
        assert counts.sum() == n and counts.min() >= n // 10 - 2 and counts.max() <= n // 10 + 2
        assert part.labels.dtype == torch.int64


def test_digits_batches(digits):
    batches = list(train_batches(digits.train, 32, 64, seed=0, epoch=0, flip=True, pad_crop=2))
    assert len(batches) == num_train_batches(300, 64) == 4  # incomplete last batch dropped
    for x, y in batches:
        assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert y.shape == (64,) and y.dtype == torch.int64
    x, _ = batches[0]
    assert x.max() > 0.5  # not all black: the image content survives resizing
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey repeated to RGB
    ev = list(eval_batches(digits.test, 32, 20))
    assert [len(y) for _, y in ev] == [20, 20, 10]
    assert torch.equal(torch.cat([y for _, y in ev]), digits.test.labels)


def test_train_batches_deterministic_per_seed_and_epoch(digits):
    def epoch(seed, e):
        return list(train_batches(digits.train, 32, 64, seed=seed, epoch=e, flip=True, pad_crop=2))

    a, b, c, d = epoch(0, 1), epoch(0, 1), epoch(0, 2), epoch(1, 1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])  # another epoch: another order
    assert not torch.equal(a[0][1], d[0][1])  # another seed: another order
    # every epoch covers distinct examples (a permutation, not sampling with replacement)
    total = sum(len(y) for _, y in a)
    assert total == 256


def test_train_batches_do_not_touch_global_rng(digits):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    next(iter(train_batches(digits.train, 32, 16, seed=0, epoch=0, flip=True, pad_crop=2)))
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------------------------ augmentation
def test_augment_flip_keeps_shape_range_and_content():
    g0 = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8, generator=g0)
    out = augment(x, flip=True, pad_crop=0, gen=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    same = [torch.equal(out[i], x[i]) for i in range(16)]
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(16)]
    assert all(s or f for s, f in zip(same, flipped))
    assert any(same) and any(flipped)


def test_augment_pad_crop_keeps_shape_range_and_is_a_shift():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5  # no zeros inside
    out = augment(x, flip=False, pad_crop=2, gen=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert any(not torch.equal(out[i], x[i]) for i in range(16))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):  # each output is some 8×8 window of the zero-padded input
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))


def test_augment_off_is_identity():
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(augment(x, flip=False, pad_crop=0, gen=torch.Generator()), x)


def test_to_float():
    images = torch.tensor([[[[0, 255], [128, 64]]]], dtype=torch.uint8)
    x = to_float(images, 2)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor([[0.0, 1.0], [128 / 255, 64 / 255]]))
    big = to_float(torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8), 16)
    assert big.shape == (2, 3, 16, 16) and big.min() >= 0 and big.max() <= 1


def test_image_array_validates():
    with pytest.raises(ValueError, match="uint8"):
        ImageArray(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        ImageArray(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


# ------------------------------------------------------------------------------------ imagefolder
def _write_tree(root: Path, parts=("train", "test"), classes=("cat", "dog"), n=3) -> None:
    rng = np.random.default_rng(0)
    for part in parts:
        for c, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(n):
                size = (10 + i, 12)  # sizes differ: everything is resized
                arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                arr[..., c] = 255  # class c is bright in channel c
                Image.fromarray(arr).save(folder / f"{i}.png")
            (folder / "notes.txt").write_text("not an image")


def test_imagefolder(tmp_path):
    _write_tree(tmp_path)
    splits = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, n_val=2))
    assert splits.classes == ["cat", "dog"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 6)
    assert isinstance(splits.test, ImageFiles)
    assert sorted(splits.val.labels.tolist()) == [0, 1]
    assert splits.test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    images = splits.test.read(torch.arange(6))
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.uint8
    assert (images[:3, 0] == 255).all() and (images[3:, 1] == 255).all()
    x, y = next(iter(eval_batches(splits.test, 16, 6)))
    assert x.shape == (6, 3, 16, 16) and x.min() >= 0 and x.max() <= 1 and y.dtype == torch.int64


def test_imagefolder_with_val_split(tmp_path):
    _write_tree(tmp_path, parts=("train", "val", "test"))
    splits = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, n_val=4))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 4, 6)
    assert all("/val/" in str(p) for p in splits.val.paths)


def test_imagefolder_missing_test_folder(tmp_path):
    _write_tree(tmp_path, parts=("train",))
    with pytest.raises(FileNotFoundError) as info:
        build_data(DataConfig(name="imagefolder", root=str(tmp_path), n_val=2))
    msg = str(info.value)
    assert "test" in msg and "train/<class>" in msg and "test/<class>" in msg


def test_imagefolder_mismatched_classes(tmp_path):
    _write_tree(tmp_path, parts=("train",))
    _write_tree(tmp_path, parts=("test",), classes=("cat", "cow"))
    with pytest.raises(ValueError, match="class folders"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path), n_val=2))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        build_data(DataConfig(name="cifar10"))


# ------------------------------------------------------------------------------------ idx / Fashion-MNIST
def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_gzip_and_plain(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    gz = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(gz, "wb") as f:
        f.write(_idx_bytes(arr))
    plain = tmp_path / "y-idx1-ubyte"
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    plain.write_bytes(_idx_bytes(labels))
    out = read_idx(gz)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8 and np.array_equal(out, arr)
    assert np.array_equal(read_idx(plain), labels)


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")  # float idx
    with pytest.raises(ValueError, match="idx"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(b"\x00")
    with pytest.raises(ValueError):
        read_idx(short)


def test_fashion_mnist_missing_offline(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(datasets_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")

    def no_download(cfg):
        raise AssertionError("download=false must not download")

    monkeypatch.setattr(datasets_mod, "_download_fashion_mnist", no_download)
    cfg = DataConfig(name="fashion_mnist", root=str(empty), download=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as info:
        build_data(cfg)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(empty) in msg and "data.download=true" in msg


def test_fashion_mnist_from_root(tmp_path, monkeypatch):
    """Tiny idx files in data.root: read, padded 28→32, split."""
    monkeypatch.setattr(datasets_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    rng = np.random.default_rng(0)
    root = tmp_path / "fm"
    root.mkdir()
    files = {
        "train-images-idx3-ubyte.gz": rng.integers(1, 256, size=(40, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.tile(np.arange(10), 4),
        "t10k-images-idx3-ubyte": rng.integers(1, 256, size=(20, 28, 28)),  # uncompressed works too
        "t10k-labels-idx1-ubyte.gz": np.tile(np.arange(10), 2),
    }
    for name, arr in files.items():
        data = _idx_bytes(arr)
        if name.endswith(".gz"):
            with gzip.open(root / name, "wb") as f:
                f.write(data)
        else:
            (root / name).write_bytes(data)
    cfg = DataConfig(name="fashion_mnist", root=str(root), download=False, cache_dir=str(tmp_path / "cache"),
                     n_val=10, n_test=10)
    splits = build_data(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    assert splits.num_classes == 10 and splits.classes[0] == "T-shirt/top"
    assert sorted(splits.val.labels.tolist()) == list(range(10))
    images = splits.test.read(torch.arange(len(splits.test)))
    assert images.shape == (10, 1, 32, 32)
    assert (images[..., :2, :] == 0).all() and (images[..., 2:30, 2:30] > 0).all()  # zero padding of 2
    x, _ = next(iter(eval_batches(splits.test, 32, 10)))
    assert x.shape == (10, 3, 32, 32)


# ------------------------------------------------------------------------------------ bad data, named
@pytest.mark.parametrize("part", ["train", "test"])
def test_imagefolder_class_folder_without_images_is_an_error_naming_it(tmp_path, part):
    _write_tree(tmp_path)
    empty = tmp_path / part / "eel"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    if part == "test":
        (tmp_path / "train" / "eel").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / "eel" / "0.png")
    with pytest.raises(ValueError) as info:
        build_data(DataConfig(name="imagefolder", root=str(tmp_path), n_val=2))
    suffixes = ", ".join(sorted(datasets_mod.IMAGE_SUFFIXES))
    assert str(info.value) == (f"data.root: the class folder {empty} holds no images ({suffixes}); add its "
                               "images, or remove the class from every split")


def test_too_large_n_val_names_the_key(tmp_path):
    _write_tree(tmp_path)
    for n_val in (6, 50):
        with pytest.raises(ConfigError) as info:
            build_data(DataConfig(name="imagefolder", root=str(tmp_path), n_val=n_val))
        assert info.value.problems == [f"data.n_val: cannot split {n_val} validation examples off the 6 training "
                                       "examples of imagefolder; set data.n_val to at most 5 (0 turns validation off)"]
    assert len(build_data(DataConfig(name="imagefolder", root=str(tmp_path), n_val=5)).train) == 1


def test_model_num_classes_must_match_the_data(digits):
    assert digits.head_classes(None) == 10 and digits.head_classes(10) == 10
    for wrong in (5, 20):
        with pytest.raises(ConfigError) as info:
            digits.head_classes(wrong)
        assert info.value.problems == [f"model.num_classes: {wrong} does not match the 10 classes of digits; set "
                                       "model.num_classes=10, or null to take them from the data"]
