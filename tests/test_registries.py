"""One registry per kind: a new ε schedule kind is one registry entry, and every part of robustft (config
validation, the builder, training, statistics, --help) knows it without another file changing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from robustft.analysis.stats import schedule_identity
from robustft.api import fine_tune
from robustft.cli import registered_kinds
from robustft.config import (
    BACKBONES,
    DATASETS,
    EVAL_ATTACKS,
    OBJECTIVES,
    PAPER_DATASETS,
    SCHEDULES,
    TRAIN_ATTACKS,
    ConfigError,
    ModelConfig,
    backbone_source,
    config_to_dict,
    is_clean_objective,
    load_config,
)
from robustft.models import build_model
from robustft.schedules import Schedule, build_eps_schedule


# ------------------------------------------------------------------ the whole diff of a new kind: this entry
@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """α(t) = (1 − cos(π t / T)) / 2, T the end of training: a smooth ramp over all of training."""

    end: float = 1.0

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        return 0.5 * (1 - math.cos(math.pi * min(self.progress(epoch, step, steps_per_epoch) / self.end, 1.0)))


def register_cosine() -> None:
    SCHEDULES.register("cosine", lambda cfg, eps, epochs, seed: CosineSchedule(
        eps_target=eps, per_step=cfg.granularity == "step", end=max(epochs - 1, 1)),
        keys=("granularity",), summary="a cosine ramp from 0 to ε_g over all of training")
# ------------------------------------------------------------------ end of the diff


@pytest.fixture
def cosine():
    register_cosine()
    yield
    SCHEDULES.unregister("cosine")


def test_a_new_schedule_kind_is_one_registry_entry(cosine, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "schedule.kind=cosine", "schedule.t1=null", "schedule.t2=null",
                             "train.epochs=3", "train.evaluate=false", "train.run_name=cosine"])
    schedule = build_eps_schedule(cfg.schedule, 8 / 255, 3)
    assert [round(schedule.multiplier(e), 6) for e in range(3)] == [0.0, 0.5, 1.0]
    run = fine_tune(cfg)  # validation, the builder and the training loop know the kind
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [round(r["eps"] * 255, 6) for r in rows if r["kind"] == "epoch"] == [0.0, 4.0, 8.0]
    assert schedule_identity(config_to_dict(cfg)) == ("cosine", ("granularity", "'epoch'"))  # statistics
    assert "cosine" in registered_kinds() and "a cosine ramp" in registered_kinds()  # robustft train --help
    with pytest.raises(ConfigError, match=r"schedule.t1: the cosine ε schedule does not take it"):
        load_config(None, ["schedule.kind=cosine", "schedule.t1=1"])  # optional keys it does not list


def test_an_unregistered_kind_is_an_error_naming_the_registered_ones():
    with pytest.raises(ConfigError, match=r"schedule.kind: unknown ε schedule 'cosine'; choose fix, hinge, "):
        load_config(None, ["schedule.kind=cosine"])
    with pytest.raises(ValueError, match="already registered"):
        SCHEDULES.register("hinge", lambda *a: None)


def test_every_registry_is_filled_and_whether_a_run_is_the_clean_reference_is_its_objective():
    assert list(DATASETS)[:3] == ["fashion_mnist", "digits", "imagefolder"] and len(DATASETS) == 8
    assert [name for name in DATASETS if DATASETS[name].extra.get("paper")] == list(PAPER_DATASETS)
    assert list(SCHEDULES) == ["fix", "hinge", "warmup", "switch", "linear", "uniform", "piecewise", "auto"]
    assert list(OBJECTIVES) == ["standard", "adversarial", "trades"]
    assert list(TRAIN_ATTACKS) == ["apgd", "pgd", "fgsm", "nfgsm"]
    assert "apgd-t" in EVAL_ATTACKS and "autoattack" in EVAL_ATTACKS
    assert [name for name in OBJECTIVES if is_clean_objective(name)] == ["standard"]
    assert not is_clean_objective("no-such-objective")
    for registry in (DATASETS, SCHEDULES, OBJECTIVES, TRAIN_ATTACKS, EVAL_ATTACKS):
        assert all(e.summary for e in registry.entries()), registry.key


def test_a_new_backbone_source_is_one_entry_tried_before_timm():
    assert [backbone_source(n).name for n in ("efficientnet_lite0", "open_clip:ViT-B-32", "resnet18")] == [
        "embedded", "open_clip", "timm"]

    def toy(cfg):
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        net.num_features = 4
        return net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    BACKBONES.register("toys", toy, extra={"matches": lambda name: name.startswith("toy:")}, summary="toy nets")
    try:
        model = build_model(ModelConfig(name="toy:conv", pretrained=False), num_classes=3)
        assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3) and model.normalize.std.flatten().tolist() == [0.25] * 3
    finally:
        BACKBONES.unregister("toys")
    assert backbone_source("toy:conv").name == "timm"  # gone: timm takes any name (and rejects it when building)
