"""A trained run's model (in eval mode, on the CPU) and the stratified test subset the benchmarks attack."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robustft.config import Config
from robustft.data import ImageSource, build_data, stratified_subset
from robustft.models import build_model
from robustft.runs import RunDir
from robustft.train import load_model_weights


def load_run(run_dir: Path, n: int, checkpoint: Path | None = None) -> tuple[RunDir, Config, nn.Module, ImageSource]:
    """(run, config, model, test): the weights of ``checkpoint`` (default: the ones the run is evaluated
    with) and ``n`` test examples, stratified by class as ``robustft eval`` picks them."""
    run = RunDir(run_dir)
    cfg = run.config()
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.num_classes)
    load_model_weights(checkpoint or run.evaluated_checkpoint(), model)
    model.eval()
    return run, cfg, model, data.test.subset(stratified_subset(data.test.labels, n, cfg.data.split_seed))
