"""One registry per kind: a new ε schedule kind is one registry entry, and every part of robustft (config
validation, the builder, training, statistics, --help) knows it without another file changing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from robustft.analysis.stats import method_rank, schedule_identity
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
from robustft.report.plots import color
from robustft.schedules import Schedule, build_eps_schedule

from helpers import assert_training_attack_contract


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
        keys=("granularity",), color="#000080", summary="a cosine ramp from 0 to ε_g over all of training")
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
    assert color("cosine (granularity=step)") == "#000080" and method_rank("cosine") == 2  # plots and tables
    with pytest.raises(ConfigError, match=r"schedule.t1: the cosine ε schedule does not take it"):
        load_config(None, ["schedule.kind=cosine", "schedule.t1=1"])  # optional keys it does not list


def test_an_unregistered_kind_is_an_error_naming_the_registered_ones():
    with pytest.raises(ConfigError, match=r"schedule.kind: unknown ε schedule 'cosine'; choose fix, hinge, "):
        load_config(None, ["schedule.kind=cosine"])
    with pytest.raises(ValueError, match="already registered"):
        SCHEDULES.register("hinge", lambda *a: None)


REGISTRIES = [DATASETS, SCHEDULES, OBJECTIVES, TRAIN_ATTACKS, EVAL_ATTACKS, BACKBONES]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.key)
def test_every_registry_has_described_entries_and_no_key_that_no_entry_takes(registry):
    assert len(registry) and all(e.summary or registry is BACKBONES for e in registry.entries())
    assert registry.unused() == []  # an optional section key no kind takes could never have an effect
    for entry in registry.entries():
        assert set(entry.defaults) <= set(entry.keys), entry.name


def test_a_kind_that_names_a_key_its_section_lacks_is_refused():
    with pytest.raises(ValueError, match="names key"):
        SCHEDULES.register("typo", lambda *a: None, keys=("t3",))
    with pytest.raises(ValueError, match="names key"):
        SCHEDULES.register("typo", lambda *a: None, keys=("t1",), defaults={"t2": 0.5})
    assert "typo" not in SCHEDULES


def test_what_a_run_is_follows_from_its_entries():
    """The clean reference is the clean objectives, the robust baseline the one baseline schedule, validation the
    adaptive schedules need is checked by their entry, and each method has its own colour in plots."""
    assert [name for name in DATASETS if DATASETS[name].extra.get("paper")] == list(PAPER_DATASETS)
    clean = [name for name in OBJECTIVES if is_clean_objective(name)]
    assert clean and not is_clean_objective("no-such-objective") and all(method_rank(n) == 0 for n in clean)
    baselines = [name for name in SCHEDULES if SCHEDULES[name].baseline]
    assert len(baselines) == 1 and method_rank(baselines[0]) == 1
    for name in (n for n in SCHEDULES if SCHEDULES[n].adaptive):
        with pytest.raises(ConfigError, match="needs data.n_val"):
            load_config(None, [f"schedule.kind={name}", "schedule.t1=null", "schedule.t2=null", "data.n_val=0"])
    colours = [color(n) for n in [*clean, *SCHEDULES]]
    assert len(set(colours)) == len(colours)


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


def test_every_entry_extra_is_one_the_registry_documents():
    """A training attack's ``extra`` keys are the documented ones (a typo would silently take the default)."""
    from robustft.attacks import TRAIN_ATTACK_EXTRAS

    for entry in TRAIN_ATTACKS.entries():
        assert set(entry.extra) <= set(TRAIN_ATTACK_EXTRAS), entry.name


# ------------------------------------------------------------------ a kind with keys of its own: still one entry each
@dataclass(frozen=True)
class PowerRamp(Schedule):
    """Epsilon-Scheduling with a curved ramp: α = ((t − T1) / (T2 − T1))^power between the hinges."""

    t1: float = 0.0
    t2: float = 0.0
    power: float = 2.0

    def multiplier(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        t = self.progress(epoch, step, steps_per_epoch)
        return 0.0 if t < self.t1 else 1.0 if t >= self.t2 else ((t - self.t1) / (self.t2 - self.t1)) ** self.power


@dataclass
class TwoStagePGD:
    """PGD whose step shrinks by ``decay`` halfway: the second half starts where the first ended."""

    num_steps: int
    rel_step_size: float
    decay: float
    threat: object

    def __call__(self, model, x, y, eps):
        from robustft.attacks import PGD

        if eps == 0:
            return x
        half = max(self.num_steps // 2, 1)
        first = PGD(num_steps=half, rel_step_size=self.rel_step_size, threat=self.threat)(model, x, y, eps)
        second = PGD(num_steps=max(self.num_steps - half, 1), rel_step_size=self.rel_step_size * self.decay,
                     random_start=False, threat=self.threat)
        return second(model, x, y, eps, x_init=first)


def register_power_and_two_stage() -> None:
    from robustft.attacks import rel_step
    from robustft.config import hinges_in_epochs

    SCHEDULES.register("power", lambda cfg, eps, epochs, seed: PowerRamp(
        eps_target=eps, epochs=epochs, per_step=cfg.granularity == "step", power=SCHEDULES.option(cfg, "power"),
        t1=hinges_in_epochs(cfg, epochs)[0], t2=hinges_in_epochs(cfg, epochs)[1]),
        keys=("t1", "t2", "granularity", "power"), defaults={"t1": 0.2, "t2": 0.6, "power": 2.0},
        summary="ε = 0 until t1, then α = u^power to ε_g at t2")
    TRAIN_ATTACKS.register("pgd2", lambda cfg, threat: TwoStagePGD(
        cfg.num_steps, rel_step(cfg), TRAIN_ATTACKS.option(cfg, "decay"), threat),
        keys=("decay",), defaults={"decay": 0.5}, extra={"rel_step": 0.25},
        summary="PGD whose step shrinks by attack.decay halfway")
# ------------------------------------------------------------------ end of the diff


@pytest.fixture
def power_and_two_stage():
    register_power_and_two_stage()
    yield
    SCHEDULES.unregister("power")
    TRAIN_ATTACKS.unregister("pgd2")


def test_kinds_with_keys_of_their_own_are_one_entry_each(power_and_two_stage, tiny_overrides, trained_toy_net,
                                                         toy_batch):
    """A hinge-shaped schedule with its own default hinges and a key of its own, and a training attack with a
    key of its own: configs, the builders, training, statistics and the attack contract know them."""
    cfg = load_config(None, [*tiny_overrides, "schedule.kind=power", "schedule.t1=null", "schedule.t2=null",
                             "schedule.power=3", "attack.name=pgd2", "train.epochs=5", "train.evaluate=false",
                             "train.run_name=power"])
    assert cfg.schedule.options == {"power": 3} and cfg.attack.options == {"decay": 0.5}  # given, and the default
    schedule = build_eps_schedule(cfg.schedule, 8 / 255, 5)
    assert [round(schedule.multiplier(e), 6) for e in range(5)] == [0.0, 0.0, 0.125, 1.0, 1.0]  # hinges 1 and 3
    run = fine_tune(cfg)
    assert load_config(run.path / "config.yaml").schedule.options == {"power": 3}  # written flat, read back
    assert "schedule.power: 3" not in (run.path / "config.yaml").read_text()
    assert "power: 3" in (run.path / "config.yaml").read_text()
    kind, *keys = schedule_identity(config_to_dict(cfg))  # statistics tell settings apart by its keys
    assert kind == "power" and sorted(keys) == [("granularity", "'epoch'"), ("power", "3"), ("t1", "None"),
                                                ("t2", "None")]
    assert_training_attack_contract("pgd2", "linf", trained_toy_net, toy_batch)
    with pytest.raises(ConfigError, match=r"schedule.power: the key of the power ε schedule"):
        load_config(None, ["schedule.kind=hinge", "schedule.power=3"])
    with pytest.raises(ValueError, match="gives no default"):
        SCHEDULES.register("nodefault", lambda *a: None, keys=("sharpness",))
