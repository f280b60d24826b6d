"""Data: a registry of datasets, split into train / validation / test sources, and batch iterators."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from robustft.config import DATASETS, ConfigError, DataConfig
from robustft.data import datasets, paper  # noqa: F401  (importing them registers their datasets in DATASETS)
from robustft.data.loader import (
    LoaderBatches,
    SourceBatches,
    TrainData,
    as_train_data,
    eval_batches,
    num_train_batches,
    to_float,
    train_batches,
)
from robustft.data.sources import (
    ImageArray,
    ImageFiles,
    ImageSource,
    LoaderImages,
    TensorImages,
    as_source,
    as_streamed_source,
)
from robustft.data.splits import stratified_split, stratified_subset

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Train, validation and test sources of one dataset, with its class names."""

    train: ImageSource
    val: ImageSource
    test: ImageSource
    classes: list[str]
    name: str = "the dataset"
    """The dataset's ``data.name``, for messages."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def head_classes(self, num_classes: int | None) -> int:
        """Outputs of the model's head: the dataset's classes, which ``model.num_classes`` must equal when set.

        Raises:
            ConfigError: ``num_classes`` differs from the dataset's class count (too few outputs fail on the
                first label beyond them; too many train classes that never occur).
        """
        if num_classes is None or num_classes == self.num_classes:
            return self.num_classes
        raise ConfigError([f"model.num_classes: {num_classes} does not match the {self.num_classes} classes of "
                           f"{self.name}; set model.num_classes={self.num_classes}, or null to take them from "
                           "the data"])


def build_data(cfg: DataConfig) -> DataSplits:
    """Load a dataset and cut the configured validation split and subsets (stratified, seeded).

    The validation set comes from the dataset's own ``val`` split when it has one, else from train.

    Raises:
        ConfigError: ``data.n_val`` leaves no training examples.
    """
    splits, classes = DATASETS[cfg.name].build(cfg)
    train = splits["train"]
    if "val" in splits:
        val = splits["val"].subset(stratified_subset(splits["val"].labels, cfg.n_val, cfg.split_seed))
    else:
        if cfg.n_val >= len(train):
            raise ConfigError([f"data.n_val: cannot split {cfg.n_val} validation examples off the {len(train)} "
                               f"training examples of {cfg.name}; set data.n_val to at most {len(train) - 1} "
                               "(0 turns validation off)"])
        train_idx, val_idx = stratified_split(train.labels, cfg.n_val, cfg.split_seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    train = train.subset(stratified_subset(train.labels, cfg.n_train, cfg.split_seed))
    test = splits["test"].subset(stratified_subset(splits["test"].labels, cfg.n_test, cfg.split_seed))
    log.info("%s: %d train / %d val / %d test, %d classes", cfg.name, len(train), len(val), len(test), len(classes))
    return DataSplits(train, val, test, classes, cfg.name)


__all__ = ["DATASETS", "DataSplits", "ImageArray", "ImageFiles", "ImageSource", "LoaderBatches", "SourceBatches",
           "LoaderImages", "TensorImages", "TrainData", "as_source", "as_streamed_source", "as_train_data", "build_data", "eval_batches",
           "num_train_batches", "stratified_split", "stratified_subset", "to_float", "train_batches"]
