"""The object API: robustft.fit and robustft.evaluate on a user's own nn.Module and DataLoader, the same loop and
evaluator as the config path."""

from __future__ import annotations

import dataclasses
import inspect
import json
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import robustft
from robustft.attacks import APGD, build_attack, describe_attack
from robustft.config import TrainConfig
from robustft.data import SourceBatches, TensorImages, as_source, as_train_data, build_data
from robustft.models import Normalized, build_model
from robustft.objectives import AdversarialObjective, StandardObjective
from robustft.runs import EpochRow, RunDir
from robustft.schedules import build_lr_schedule
from robustft.train import build_optimizer, fit_config, load_checkpoint
from robustft.train.api import LOOP_OPTIONS
from robustft.train.trainer import seed_everything

from helpers import with_overrides


def digits_tensors(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images[:n], dtype=torch.float32).unsqueeze(1) / 16
    return x, torch.tensor(bunch.target[:n])


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 10))
    return Normalized(net, mean=[0.5], std=[0.5])


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ one loop: config path = object API
def test_object_api_and_config_path_give_bit_identical_weights(tiny_config, tmp_path):
    cfg = with_overrides(tiny_config, ["train.ema_decay=0.9", "train.evaluate=false"])
    run = RunDir(tmp_path / "config_path")
    run.create(cfg)
    fit_config(cfg, run)
    ckpt = load_checkpoint(run.checkpoint_path)

    seed_everything(cfg.train.seed)  # as the config path does before it builds the data and the model
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.num_classes)
    d = cfg.data
    train = SourceBatches(data.train, d.image_size, d.batch_size, cfg.train.seed, d.flip, d.pad_crop)
    optimizer = build_optimizer(model, cfg.optim)
    epochs = cfg.train.epochs
    summary = robustft.fit(model, train, val=data.val, objective=AdversarialObjective(APGD(num_steps=2)),
                           schedule=robustft.eps_schedule("hinge", eps=cfg.attack.eps, epochs=epochs, t1=1, t2=2),
                           epochs=epochs, optimizer=optimizer,
                           lr_schedule=build_lr_schedule(cfg.optim, epochs, train.steps_per_epoch),
                           seed=cfg.train.seed, ema_decay=0.9, channels_last=False)
    # the config's training attack is the one passed above
    assert describe_attack("a", build_attack(cfg.attack)) == describe_attack("a", APGD(num_steps=2))
    assert summary.epochs == epochs and summary.select["weights"] == "ema"
    assert same_weights(model.state_dict(), ckpt["eval_model"])  # the weight average, buffers included
    assert not same_weights(ckpt["model"], ckpt["eval_model"])


# ------------------------------------------------------------------------ a user's model and DataLoader
class Killed(Exception):
    pass


def test_fit_on_a_dataloader_checkpoints_and_resumes_exactly(tmp_path):
    x, y = digits_tensors()
    val = (x[300:], y[300:])
    schedule = robustft.eps_schedule("hinge", eps=16 / 255, epochs=3, t1=1, t2=2)

    def run(model: nn.Module, path, resume=False, die_after=None) -> robustft.TrainSummary:
        torch.manual_seed(5)  # the DataLoader's shuffle draws from torch's global generator
        loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=50, shuffle=True)

        def on_epoch(row: EpochRow) -> None:
            if row.epoch == die_after:
                raise Killed

        return robustft.fit(model, loader, val=val, objective=AdversarialObjective(APGD(num_steps=2)),
                            schedule=schedule, epochs=3, run=path, resume=resume, on_epoch=on_epoch, seed=3,
                            ema_decay=0.8, monitor_n=32)

    whole = small_cnn()
    summary = run(whole, tmp_path / "whole")
    assert summary.epochs == 3 and "val_clean_acc" in summary.final and "mon_gap" in summary.final
    assert RunDir(tmp_path / "whole").summary() == summary and (tmp_path / "whole" / "DONE").is_file()

    with pytest.raises(Killed):
        run(small_cnn(), tmp_path / "killed", die_after=0)
    assert not (tmp_path / "killed" / "DONE").exists()
    with pytest.raises(robustft.RunExistsError, match="resume=True"):
        run(small_cnn(), tmp_path / "killed")  # a checkpoint is there: no silent restart over it
    resumed = small_cnn(seed=9)  # other initial weights: the checkpoint's replace them
    run(resumed, tmp_path / "killed", resume=True)
    assert same_weights(resumed.state_dict(), whole.state_dict())
    rows = RunDir(tmp_path / "killed").epoch_rows()
    assert [r.epoch for r in rows] == [0, 1, 2]


def test_fit_without_a_run_directory_writes_nothing_and_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = digits_tensors(300)
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # a user's optimiser keeps its LR
    summary = robustft.fit(model, [(x[i:i + 60], y[i:i + 60]) for i in range(0, 300, 60)], optimizer=optimizer,
                           objective=StandardObjective(), schedule=robustft.eps_schedule("fix", eps=0.0, epochs=3),
                           epochs=3)
    assert summary.epochs == 3 and summary.final["train_acc"] > 0.5 and summary.delay_epochs is None
    assert optimizer.param_groups[0]["lr"] == 1e-2
    assert not same_weights(before, model.state_dict())
    assert list(tmp_path.iterdir()) == []


def test_fit_refuses_what_it_cannot_train_with():
    x, y = digits_tensors(100)
    loader = DataLoader(TensorDataset(x, y), batch_size=50)
    common = dict(objective=StandardObjective(), epochs=2)
    fix = robustft.eps_schedule("fix", eps=8 / 255, epochs=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'ema'"):
        robustft.fit(small_cnn(), loader, schedule=fix, ema=0.9, **common)
    with pytest.raises(ValueError, match="auto schedule.*val="):
        robustft.fit(small_cnn(), loader, schedule=robustft.eps_schedule("auto", eps=8 / 255, epochs=2), **common)
    with pytest.raises(ValueError, match="best_robust.*val="):
        robustft.fit(small_cnn(), loader, schedule=fix, select="best_robust", **common)
    with pytest.raises(TypeError, match="one-shot iterator"):
        robustft.fit(small_cnn(), iter(loader), schedule=fix, **common)
    with pytest.raises(TypeError, match="unknown setting"):
        robustft.eps_schedule("hinge", eps=8 / 255, epochs=2, T1=1)


# ------------------------------------------------------------------------ what the caller owns stays as it was
def rng_states() -> tuple:
    numpy = np.random.get_state()
    return random.getstate(), (numpy[0], numpy[1].tolist(), *numpy[2:]), torch.get_rng_state().tolist()


def test_fit_leaves_the_callers_generators_optimizer_layout_and_modes_as_they_were():
    x, y = digits_tensors(200)
    loader = DataLoader(TensorDataset(x[:150], y[:150]), batch_size=50, shuffle=True)  # shuffles from torch's generator

    def train(model: nn.Module, optimizer: torch.optim.Optimizer) -> robustft.TrainSummary:
        return robustft.fit(model, loader, val=(x[150:], y[150:]), objective=AdversarialObjective(APGD(num_steps=2)),
                            schedule=robustft.eps_schedule("hinge", eps=8 / 255, epochs=2, t1=0, t2=1), epochs=2,
                            optimizer=optimizer, lr_schedule=lambda step: 0.5, seed=4, monitor_n=16,
                            channels_last=True)  # trains channels-last: the layout must come back

    model = small_cnn()
    model.eval()
    model.model[1].train()  # modes differ between modules: each is given back its own
    modes = [m.training for m in model.modules()]
    strides = {k: v.stride() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    keys = [set(g) for g in optimizer.param_groups]
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = rng_states()
    train(model, optimizer)
    assert rng_states() == before  # random, numpy and torch: as the caller left them
    assert [set(g) for g in optimizer.param_groups] == keys  # no base_lr or other key added
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # lr_schedule's LR: 0.5 × the LR given
    assert [m.training for m in model.modules()] == modes
    assert {k: v.stride() for k, v in model.state_dict().items()} == strides
    assert model.model[0].weight.is_contiguous()  # the default layout again

    again = small_cnn()
    again.eval()
    again.model[1].train()
    torch.rand(7), random.random(), np.random.rand(3)  # the caller's draws in between change nothing
    train(again, torch.optim.SGD(again.parameters(), lr=0.1, momentum=0.9))
    assert same_weights(again.state_dict(), model.state_dict())  # same seed: bit-identical weights


def test_fit_takes_the_train_sections_loop_settings_with_their_defaults():
    params = inspect.signature(robustft.fit).parameters
    defaults = TrainConfig()
    assert LOOP_OPTIONS <= set(params)
    assert {name: params[name].default for name in LOOP_OPTIONS} == \
        {name: getattr(defaults, name) for name in LOOP_OPTIONS}


def test_train_summary_round_trips_through_summary_json(tmp_path):
    summary = robustft.TrainSummary(
        epochs=3, train_time_s=12.5, num_classes=10, schedule={"kind": "hinge", "t1": 1.0, "t2": 2.0},
        delay_epochs=2, final={"val_clean_acc": 0.5, "mon_gap": 0.01}, processes=1, precision="fp32",
        channels_last=True, catastrophic_overfitting={"raised": True, "epochs": [2], "max_gap": 0.3, "threshold": 0.1},
        stopped_at_epoch=None, select={"rule": "final", "epochs_done": 3, "checkpoint": "last.pt", "weights": "live"})
    run = RunDir(tmp_path / "run")
    run.write_summary(summary)
    assert run.summary() == summary and run.summary().overfit_raised
    assert json.loads(run.summary_path.read_text()) == dataclasses.asdict(summary)  # plain JSON, keys as before
    run.summary_path.write_text(json.dumps({"epochs": 2, "train_time_s": 3.0, "written_by": "a later version"}))
    assert run.summary() == robustft.TrainSummary(epochs=2, train_time_s=3.0)  # missing keys: defaults
    assert RunDir(tmp_path / "unfinished").summary() is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.epochs = 4  # type: ignore[misc]


# ------------------------------------------------------------------------ data in any form
def test_data_in_any_form_becomes_one_source():
    x, y = digits_tensors(120)
    from_tensors = as_source((x, y))
    from_loader = as_source(DataLoader(TensorDataset(x, y), batch_size=50))
    assert isinstance(from_loader, TensorImages) and torch.equal(from_loader.images, x)
    assert torch.equal(from_loader.labels, from_tensors.labels)
    assert as_source(from_tensors) is from_tensors
    with pytest.raises(ValueError, match=r"\[0, 1\].*Normalized"):
        as_source((x * 255, y))  # unnormalised 0–255 pixels would make ε meaningless
    with pytest.raises(TypeError, match="DataLoader"):
        as_source(42)
    with pytest.raises(TypeError, match="one-shot"):
        as_train_data(b for b in [(x, y)])  # a generator would be empty from the second epoch

    class Stream:  # re-iterable, but with no length to size the LR schedule
        def __iter__(self):
            yield x, y

    with pytest.raises(TypeError, match="no length"):
        as_train_data(Stream())
    with pytest.raises(ValueError, match="one mean and one positive std"):
        Normalized(nn.Identity(), mean=[0.5, 0.5], std=[0.5])


def test_evaluate_takes_a_dataloader_and_attack_names(tmp_path):
    x, y = digits_tensors(200)
    model = small_cnn()
    robustft.fit(model, DataLoader(TensorDataset(x, y), batch_size=50, shuffle=False), objective=StandardObjective(),
                 schedule=robustft.eps_schedule("fix", eps=0.0, epochs=4), epochs=4,
                 optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))
    grid = [0.0, 2 / 255, 8 / 255]
    by_name = robustft.evaluate(model, DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32), grid,
                                attacks=["apgd-ce"])
    by_object = robustft.evaluate(model, (x[:64], y[:64]), grid,
                                  attacks={"apgd-ce": APGD(num_steps=10, select="misclassified")})
    assert by_name.correct.shape == (3, 64) and (by_name.correct == by_object.correct).all()
    assert by_name.clean > 0.5 and by_name.accuracy == sorted(by_name.accuracy, reverse=True)
    assert by_name.checks and by_name.flags == [f for f in by_name.checks if f.raised]  # every check; the raised
