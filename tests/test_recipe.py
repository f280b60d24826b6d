"""The training recipe around the attacks: float parsing in configs, the catastrophic-overfitting monitor
(robustft/train/monitor.py), weight averaging (robustft/train/ema.py) and ``train.select: best_robust``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustft.api as api
import robustft.train.trainer as trainer
from robustft.api import fine_tune
from robustft.attacks import APGD, L2, Linf, build_attack
from robustft.config import ConfigError, load_config, save_config
from robustft.data import build_data, to_float
from robustft.errors import CatastrophicOverfittingError
from robustft.models import build_model
from robustft.runs import EpochRow, RunDir
from robustft.train import Validation, load_checkpoint, load_model_weights
from robustft.train.ema import EMA, Swapped
from robustft.train.monitor import MONITOR_KEYS, best_robust_epoch, collapsed, overfit_verdict, reference_attack

from helpers import assert_same_tensors, run_killed_and_resumed, with_overrides, without_time

EPS_G = 8 / 255
CPU = torch.device("cpu")


# ==================================================================================== float parsing
@pytest.mark.parametrize("override,section,key,value", [
    ("optim.lr=1e-4", "optim", "lr", 1e-4),
    ("optim.lr=1E-4", "optim", "lr", 1e-4),
    ("optim.lr=1e+0", "optim", "lr", 1.0),
    ("optim.lr=+2.5e-3", "optim", "lr", 2.5e-3),
    ("train.overfit_gap=.5", "train", "overfit_gap", 0.5),
    ("optim.lr=2.", "optim", "lr", 2.0),
    ("optim.lr=3", "optim", "lr", 3.0),
    ("train.ema_decay=9.99e-1", "train", "ema_decay", 0.999),
    ("attack.noise_mult=5e-1", "attack", "noise_mult", 0.5),
])
def test_float_fields_parse_decimal_and_scientific_notation(override, section, key, value):
    got = getattr(getattr(load_config(None, [override]), section), key)
    assert type(got) is float and got == value


def test_floats_in_a_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  weight_decay: 5E-5\ntrain:\n  ema_decay: 9.9e-1\n"
                    "eval:\n  eps_weights: [1e-1, 1, .5]\nattack:\n  eps: 8/255\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-4 and cfg.optim.weight_decay == 5e-5 and cfg.train.ema_decay == 0.99
    assert cfg.eval.eps_weights == [0.1, 1.0, 0.5] and all(type(w) is float for w in cfg.eval.eps_weights)
    assert cfg.attack.eps == pytest.approx(8 / 255)
    # a config written back (as the run directory's config.yaml) reads the same
    save_config(cfg.replace("optim", lr=1e-7), tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg.replace("optim", lr=1e-7)


def test_list_of_float_fields_and_eps_fields():
    cfg = load_config(None, ["eval.eps_weights=[1e-1, 1, 2]", "attack.eps=8/255", "eval.eps_grid=[0, 1e-2, 4/255]"])
    assert cfg.eval.eps_weights == [0.1, 1.0, 2.0] and all(type(w) is float for w in cfg.eval.eps_weights)
    assert cfg.attack.eps == pytest.approx(8 / 255)
    assert cfg.eval.eps_grid == pytest.approx([0.0, 0.01, 4 / 255])


@pytest.mark.parametrize("override,key", [
    ("optim.lr=abc", "optim.lr"),
    ("optim.lr=1e-4x", "optim.lr"),
    ("train.ema_decay=fast", "train.ema_decay"),
    ("train.overfit_gap=e-1", "train.overfit_gap"),
])
def test_non_numbers_for_float_fields_are_rejected_by_name(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_strings_that_look_like_numbers_stay_strings_in_string_fields():
    assert load_config(None, ["train.run_name=1e-4"]).train.run_name == "1e-4"


def test_non_number_in_a_list_of_floats_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.eps_weights"):
        load_config(None, ["eval.eps_weights=[a, 1]"])


def test_scientific_notation_in_schedule_points():
    cfg = load_config(None, ["schedule.kind=piecewise", "schedule.t1=null", "schedule.t2=null",
                             "schedule.points=[[0, 0], [5e-1, 1e-0]]"])
    assert cfg.schedule.points == [[0, 0], [0.5, 1.0]]


# ==================================================================================== monitor: verdict and selection
def row(epoch, eps, gap=None, ref=None, eps_mean=None) -> EpochRow:
    eps_mean = eps if eps_mean is None else eps_mean
    monitored = {}
    if gap is not None or ref is not None:
        ref = 0.3 if ref is None else ref
        gap = 0.0 if gap is None else gap
        monitored = {"mon_eps": eps_mean, "mon_attack_acc": ref + gap, "mon_ref_acc": ref, "mon_gap": gap}
    return EpochRow(epoch=epoch, step=4 * (epoch + 1), eps=eps, eps_mean=eps_mean, lr=1e-3, train_loss=1.0,
                    train_acc=0.5, elapsed_s=float(epoch + 1), **monitored)


def test_overfit_verdict_flags_epochs_above_the_threshold():
    rows = [row(0, 0.0), row(1, EPS_G / 2, gap=0.05), row(2, EPS_G, gap=0.25), row(3, EPS_G, gap=0.15),
            row(4, EPS_G, gap=0.10)]
    v = overfit_verdict(rows, 0.10)  # above the threshold in epochs 2 and 3, not in the last one: not raised
    assert not v.raised and v.epochs == [2, 3] and v.max_gap == 0.25 and v.threshold == 0.10
    assert "epoch(s) 3, 4" in v.message and "not in the last kept epoch" in v.message  # 1-based in the message
    last = overfit_verdict(rows + [row(5, EPS_G, gap=0.3)], 0.10)  # the weights the run ends with overfit
    assert last.to_dict() == {"raised": True, "epochs": [2, 3, 5], "max_gap": 0.3, "threshold": 0.10}
    assert "catastrophic overfitting" in last.message
    stopped = overfit_verdict(rows + [row(5, EPS_G, gap=0.3)], 0.10, stopped=5)  # stopped: raised, whatever kept
    assert stopped.raised and stopped.epochs == [2, 3, 5]
    calm = overfit_verdict(rows, 0.30)
    assert not calm.raised and calm.epochs == [] and calm.max_gap == 0.25
    assert "catastrophic" not in calm.message


def test_overfit_verdict_without_monitored_epochs():
    v = overfit_verdict([row(0, 0.0), row(1, 0.0)], 0.10)
    assert v.to_dict() == {"raised": False, "epochs": [], "max_gap": None, "threshold": 0.10}
    assert "not monitored" in v.message
    assert overfit_verdict([], 0.1).max_gap is None
    neg = overfit_verdict([row(0, EPS_G, gap=-0.2)], 0.1)  # N-FGSM's points, outside the ball, can be stronger
    assert not neg.raised and neg.max_gap == -0.2


def test_collapse_needs_a_falling_reference_accuracy():
    before = [row(0, EPS_G, gap=0.05, ref=0.40)]
    assert collapsed(before, row(1, EPS_G, gap=0.5, ref=0.02), 0.10)  # APGD accuracy fell 38 points: collapse
    assert not collapsed(before, row(1, EPS_G, gap=0.15, ref=0.38), 0.10)  # a gap, but robustness did not fall
    assert not collapsed(before, row(1, EPS_G, gap=0.05, ref=0.0), 0.10)  # no gap
    assert not collapsed([row(0, 0.0)], row(1, EPS_G, gap=0.5, ref=0.0), 0.10)  # nothing monitored before


def test_best_robust_epoch_only_counts_epochs_trained_at_eps_g():
    rows = [row(0, 0.0), row(1, EPS_G / 2, ref=0.9),  # the ramp: higher accuracy at a smaller ε, ignored
            row(2, EPS_G, ref=0.4), row(3, EPS_G, ref=0.6), row(4, EPS_G, ref=0.5),
            row(5, EPS_G, ref=0.95, eps_mean=EPS_G * 0.9)]  # ε drawn per step: not entirely at ε_g
    assert best_robust_epoch(rows, EPS_G).epoch == 3
    tie = [row(2, EPS_G, ref=0.6), row(3, EPS_G, ref=0.6), row(4, EPS_G, ref=0.5)]
    assert best_robust_epoch(tie, EPS_G).epoch == 2  # the earliest on a tie
    assert best_robust_epoch(rows[:2], EPS_G) is None
    assert best_robust_epoch([row(0, EPS_G), row(1, EPS_G)], EPS_G) is None  # not monitored
    assert best_robust_epoch(rows, 0.0) is None


def test_reference_attack_is_apgd_ce_in_evaluation_mode():
    ref = reference_attack(10, "linf")
    assert isinstance(ref, APGD) and isinstance(ref.threat, Linf)
    assert (ref.num_steps, ref.loss, ref.select) == (10, "ce", "misclassified")
    ref = reference_attack(20, "l2")
    assert isinstance(ref.threat, L2) and ref.num_steps == 20


@pytest.mark.parametrize("overrides,key", [
    (["train.select=best_robust", "train.monitor_n=0"], "train.select"),
    (["train.select=best_robust", "objective.name=standard"], "train.select"),
    (["train.select=best"], "train.select"),
    (["train.monitor_steps=5"], "train.monitor_steps"),
    (["train.monitor_n=-1"], "train.monitor_n"),
    (["train.overfit_gap=0"], "train.overfit_gap"),
    (["train.on_overfit=halt"], "train.on_overfit"),
    (["train.ema_decay=1"], "train.ema_decay"),
    (["train.ema_decay=0"], "train.ema_decay"),
])
def test_recipe_config_validation(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, overrides)


def test_recipe_config_defaults():
    t = load_config(None, []).train
    assert (t.monitor_n, t.monitor_steps, t.overfit_gap, t.on_overfit, t.ema_decay, t.select) == \
        (128, 10, 0.10, "warn", None, "final")
    assert load_config(None, ["train.select=best_robust"]).train.select == "best_robust"


# ==================================================================================== monitor: catastrophic overfitting
def train_on_digits(attack_overrides: list[str], steps: int, seed: int = 0):
    """An MLP trained with the configured attack at ε = 0.3 on scikit-learn's 8×8 digits (pixels in [0, 1]);
    returns (config, data, model in eval mode)."""
    cfg = load_config(None, ["data.name=digits", "data.image_size=8", "data.n_val=256", "data.eval_batch_size=256",
                             "attack.eps=0.3", "train.monitor_n=256", "train.monitor_steps=10"] + attack_overrides)
    data = build_data(cfg.data)
    x, y = to_float(data.train.images, 8), data.train.labels
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    attack = build_attack(cfg.attack)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        x_adv = attack(model.train(), x[idx], y[idx], cfg.attack.eps)
        loss = F.cross_entropy(model(x_adv), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cfg, data, model.eval()


@pytest.fixture(scope="module")
def fgsm_trained():
    """Plain FGSM (from x, a full step of ε) at a large ε: the textbook catastrophic overfitting."""
    return train_on_digits(["attack.name=fgsm", "attack.random_start=false"], steps=1000)


@pytest.fixture(scope="module")
def pgd_trained():
    return train_on_digits(["attack.name=pgd", "attack.num_steps=5", "attack.rel_step_size=0.5"], steps=1000)


def test_monitor_raises_its_flag_on_catastrophic_overfitting(fgsm_trained, pgd_trained):
    cfg, data, model = fgsm_trained
    numbers = trainer.monitor(model, Validation.from_config(cfg, data), CPU, cfg.attack.eps)
    assert set(numbers) == set(MONITOR_KEYS) and numbers["mon_eps"] == 0.3
    assert numbers["mon_gap"] == pytest.approx(numbers["mon_attack_acc"] - numbers["mon_ref_acc"])
    # the model beats the attack it was trained on, and a 10-step APGD breaks it completely
    assert numbers["mon_attack_acc"] > 0.5 and numbers["mon_ref_acc"] < 0.05
    verdict = overfit_verdict([replace(row(0, cfg.attack.eps), **numbers)], cfg.train.overfit_gap)
    assert verdict.raised and verdict.epochs == [0] and verdict.max_gap > 0.4

    # the same kind of model trained with 5-step PGD: no gap, no flag, and more robust under the reference
    cfg_p, data_p, model_p = pgd_trained
    numbers_p = trainer.monitor(model_p, Validation.from_config(cfg_p, data_p), CPU, cfg_p.attack.eps)
    assert abs(numbers_p["mon_gap"]) < cfg_p.train.overfit_gap / 2
    assert numbers_p["mon_ref_acc"] > numbers["mon_ref_acc"] + 0.03
    verdict_p = overfit_verdict([replace(row(0, cfg_p.attack.eps), **numbers_p)], cfg_p.train.overfit_gap)
    assert not verdict_p.raised and verdict_p.epochs == []
    # measured by FGSM rather than by its own attack, the PGD model shows no gap either
    cfg_f = with_overrides(cfg_p, ["attack.name=fgsm", "attack.random_start=false", "attack.rel_step_size=null"])
    fgsm_view = Validation.from_config(cfg_f, data_p)
    assert abs(trainer.monitor(model_p, fgsm_view, CPU, 0.3)["mon_gap"]) < cfg_p.train.overfit_gap


def test_monitor_is_off_at_eps_zero_and_with_monitor_n_zero(fgsm_trained):
    cfg, data, model = fgsm_trained
    assert trainer.monitor(model, Validation.from_config(cfg, data), CPU, 0.0) == {}
    assert trainer.monitor(model, Validation.from_config(cfg.replace("train", monitor_n=0), data), CPU, 0.3) == {}


def test_monitor_is_seeded_and_leaves_the_global_rng_alone(fgsm_trained):
    cfg, data, model = fgsm_trained
    cfg = with_overrides(cfg, ["attack.random_start=true", "train.monitor_n=64"])  # FGSM-RS draws random starts
    torch.manual_seed(123)
    first = trainer.monitor(model, Validation.from_config(cfg, data), CPU, 0.3)
    after = torch.rand(3)
    torch.manual_seed(999)
    same = trainer.monitor(model, Validation.from_config(cfg, data), CPU, 0.3)
    assert same == first  # the same numbers every epoch for the same model
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)


# ==================================================================================== monitor: end to end
def test_monitor_rows_and_summary_end_to_end(tiny_config):
    cfg = with_overrides(tiny_config, ["train.evaluate=false", "attack.name=fgsm", "train.monitor_n=32"])
    run = fine_tune(cfg, name="fgsm")
    epochs = run.epoch_rows()
    assert [r.eps for r in epochs] == [0.0, 0.0, pytest.approx(EPS_G)]
    for r in epochs[:2]:
        assert not set(MONITOR_KEYS) & set(r.to_json()), "no monitor while ε = 0"
    last = epochs[2]
    assert set(MONITOR_KEYS) <= set(last.to_json())
    assert last.mon_eps == pytest.approx(EPS_G)
    assert 0 <= last.mon_ref_acc <= 1 and 0 <= last.mon_attack_acc <= 1
    assert last.mon_gap == pytest.approx(last.mon_attack_acc - last.mon_ref_acc)
    summary = json.loads((run.path / "summary.json").read_text())
    co = summary["catastrophic_overfitting"]
    assert co == overfit_verdict(epochs, 0.10).to_dict()
    assert set(co) == {"raised", "epochs", "max_gap", "threshold"} and co["threshold"] == 0.10
    assert co["max_gap"] == pytest.approx(last.mon_gap)
    assert summary["stopped_at_epoch"] is None and summary["epochs"] == 3
    assert summary["select"]["rule"] == "final" and summary["select"]["checkpoint"] == "last.pt"
    assert summary["select"]["weights"] == "live" and summary["select"]["epochs_done"] == 3
    assert summary["final"]["mon_gap"] == last.mon_gap

    off = fine_tune(cfg.replace("train", monitor_n=0), name="off")
    assert not any(set(MONITOR_KEYS) & set(r.to_json()) for r in off.epoch_rows())
    assert json.loads((off.path / "summary.json").read_text())["catastrophic_overfitting"]["max_gap"] is None


REAL_MONITOR = trainer.monitor


def fake_monitor(monkeypatch, values: dict[int, tuple[float, float]], first_epoch: int = 0):
    """Replace the trainer's monitor: at the epochs in ``values`` (counted from ``first_epoch`` over its calls,
    one per epoch) it reports (accuracy under the training attack, under the reference); elsewhere the real
    monitor runs."""
    real, calls = REAL_MONITOR, {"n": first_epoch}

    def monitor(model, val, device, eps):
        epoch, calls["n"] = calls["n"], calls["n"] + 1
        if epoch not in values:
            return real(model, val, device, eps)
        attack_acc, ref_acc = values[epoch]
        return {"mon_eps": eps, "mon_attack_acc": attack_acc, "mon_ref_acc": ref_acc, "mon_gap": attack_acc - ref_acc}

    monkeypatch.setattr(trainer, "monitor", monitor)


STOP = ["train.on_overfit=stop", "train.monitor_n=16", "schedule.t1=0", "schedule.t2=0"]
"""ε = ε_g from the first epoch (hinge with T1 = T2 = 0), so every epoch is monitored."""


def test_on_overfit_stop_ends_training_and_evaluates_the_last_good_checkpoint(tiny_config, monkeypatch):
    cfg = with_overrides(tiny_config, STOP)
    assert cfg.train.evaluate
    fake_monitor(monkeypatch, {0: (0.5, 0.5), 1: (0.9, 0.0)})  # epoch 1 (the second) collapses
    run = fine_tune(cfg, name="stop")
    assert run.done
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["stopped_at_epoch"] == 1 and summary["epochs"] == 1
    assert summary["catastrophic_overfitting"]["raised"] and summary["catastrophic_overfitting"]["epochs"] == [1]
    assert summary["catastrophic_overfitting"]["max_gap"] == pytest.approx(0.9)
    assert summary["select"] == {"rule": "final", "epochs_done": 1, "checkpoint": "last.pt", "weights": "live"}
    assert load_checkpoint(run.checkpoint_path)["epochs_done"] == 1  # the overfitted weights were not kept
    epochs = run.epoch_rows()
    assert [r.epoch for r in epochs] == [0, 1] and epochs[1].mon_gap == pytest.approx(0.9)
    rob = json.loads((run.evaluation_dir("apgd-ce") / "robustness.json").read_text())
    assert rob["protocol"]["checkpoint_epochs"] == 1 and rob["protocol"]["checkpoint"] == "last.pt"


def test_on_overfit_warn_trains_on(tiny_config, monkeypatch, caplog):
    cfg = with_overrides(tiny_config, STOP + ["train.on_overfit=warn", "train.evaluate=false"])
    fake_monitor(monkeypatch, {0: (0.5, 0.5), 1: (0.9, 0.0), 2: (0.8, 0.1)})
    with caplog.at_level("WARNING"):
        run = fine_tune(cfg, name="warn")
    assert "monitor, epoch 2: accuracy under the training attack 90.0 % vs 0.0 %" in caplog.text
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["stopped_at_epoch"] is None and summary["epochs"] == 3
    assert summary["catastrophic_overfitting"]["raised"] and summary["catastrophic_overfitting"]["epochs"] == [1, 2]
    assert load_checkpoint(run.checkpoint_path)["epochs_done"] == 3


def test_on_overfit_stop_needs_a_collapse_not_an_early_gap(tiny_config, monkeypatch):
    """A gap in the first monitored epoch (a model not robust yet, a weak training attack) is no collapse."""
    cfg = with_overrides(tiny_config, STOP + ["train.evaluate=false"])
    fake_monitor(monkeypatch, {0: (0.9, 0.0), 1: (0.5, 0.45), 2: (0.5, 0.45)})
    run = fine_tune(cfg, name="early")
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["stopped_at_epoch"] is None and summary["epochs"] == 3
    assert not summary["catastrophic_overfitting"]["raised"] and summary["catastrophic_overfitting"]["epochs"] == [0]


def test_stop_without_a_checkpoint_to_keep_raises(tiny_config, monkeypatch, tmp_path):
    cfg = with_overrides(tiny_config, STOP)
    run = RunDir(tmp_path / "none")
    with pytest.raises(CatastrophicOverfittingError, match="epoch 2"):
        trainer._overfit_stop(cfg.train, row(1, EPS_G, gap=0.9, ref=0.0), 1, [row(0, EPS_G, ref=0.5)], run)


# ==================================================================================== EMA: units
def small_net(seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_ema_update_follows_the_warm_up_formula():
    model = small_net()
    ema = EMA(model, decay=0.5)
    expected = {k: p.detach().clone().double() for k, p in model.named_parameters()}
    decays = []
    g = torch.Generator().manual_seed(0)
    for s in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        d = min(0.5, (1 + s) / (10 + s))
        assert ema.current_decay() == pytest.approx(d)
        decays.append(d)
        ema.update(model)
        for k, p in model.named_parameters():
            expected[k] = d * expected[k] + (1 - d) * p.detach().double()
    assert ema.updates == 12
    assert decays[0] == pytest.approx(0.1) and decays[8:] == [0.5] * 4  # warm-up reaches the target at s = 8
    for k, v in ema.params.items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6, msg=k)
    assert EMA(model, 0.999).current_decay() == pytest.approx(0.1)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_ema_rejects_decays_outside_zero_one(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(small_net(), decay)


def test_ema_state_dict_takes_averaged_params_and_live_buffers():
    model = small_net().train()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.rand(8, 3, 8, 8))  # moves the BatchNorm statistics
    ema.update(model)
    state = ema.state_dict(model)
    live = model.state_dict()
    assert list(state) == list(live)
    params = dict(model.named_parameters())
    for k, v in state.items():
        if k in params:
            assert torch.equal(v, ema.params[k]) and not torch.equal(v, live[k]), k
        else:  # running_mean, running_var, num_batches_tracked
            assert torch.equal(v, live[k]), k
    assert state["1.num_batches_tracked"].item() == 1
    state["4.bias"].add_(1.0)  # a copy: changing it changes neither the average nor the model
    assert not torch.equal(state["4.bias"], ema.params["4.bias"])
    fresh = small_net(1)
    fresh.load_state_dict(state)


def test_ema_checkpoint_state_round_trip():
    model = small_net()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    ema.update(model)
    other = EMA(small_net(3), 0.9)
    other.load_checkpoint_state(ema.checkpoint_state())
    assert other.updates == 2 and other.current_decay() == ema.current_decay()
    assert all(torch.equal(other.params[k], v) for k, v in ema.params.items())
    other.params["0.weight"].add_(1.0)  # loaded as copies
    assert not torch.equal(other.params["0.weight"], ema.params["0.weight"])
    state = ema.checkpoint_state()
    state["params"] = {k: v for k, v in state["params"].items() if k != "4.weight"}
    with pytest.raises(ValueError, match="4.weight"):
        other.load_checkpoint_state(state)


def test_swapped_runs_with_the_average_and_restores_live_weights_exactly():
    model = small_net().train()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.37)
    ema.update(model)
    live = {k: v.clone() for k, v in model.state_dict().items()}
    param_ids = [id(p) for p in model.parameters()]
    with Swapped(model, ema) as swapped:
        assert swapped is model
        for k, p in model.named_parameters():
            assert torch.equal(p.detach(), ema.params[k])
    assert [id(p) for p in model.parameters()] == param_ids  # the optimiser's tensors, updated in place
    assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError, match="inside"):
        with Swapped(model, ema):
            raise RuntimeError("inside")
    assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())
    with Swapped(model, None):  # no average: nothing changes
        assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())


def test_load_model_weights_prefers_eval_model(tmp_path):
    model = small_net(0)
    averaged = small_net(1).state_dict()
    torch.save({"model": model.state_dict(), "eval_model": averaged, "epochs_done": 3, "step": 12},
               tmp_path / "with.pt")
    torch.save({"model": model.state_dict(), "epochs_done": 2, "step": 8}, tmp_path / "without.pt")
    target = small_net(2)
    assert load_model_weights(tmp_path / "with.pt", target) == {"epochs_done": 3, "step": 12}
    assert all(torch.equal(v, averaged[k]) for k, v in target.state_dict().items())
    assert load_model_weights(tmp_path / "without.pt", target) == {"epochs_done": 2, "step": 8}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in target.state_dict().items())


# ==================================================================================== EMA: end to end
def test_ema_run_killed_and_resumed_ends_bit_identical(tiny_config, monkeypatch):
    cfg = with_overrides(tiny_config, ["train.ema_decay=0.9", "train.evaluate=false", "train.monitor_n=16"])
    straight, resumed = run_killed_and_resumed(cfg, monkeypatch, die_after=1)
    a, b = load_checkpoint(straight.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    assert a["epochs_done"] == b["epochs_done"] == 3 and a["step"] == b["step"] == 12
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["ema"]["params"], b["ema"]["params"])
    assert_same_tensors(a["eval_model"], b["eval_model"])
    assert a["ema"]["updates"] == b["ema"]["updates"] == 12 and a["ema"]["decay"] == 0.9
    assert without_time(straight) == without_time(resumed)
    # the evaluated weights are the average (with the live BatchNorm statistics), not the last iterate
    params = set(a["ema"]["params"])
    assert any(not torch.equal(a["eval_model"][k], a["model"][k]) for k in params)
    assert all(torch.equal(a["eval_model"][k], v) for k, v in a["model"].items() if k not in params)
    summary = json.loads((straight.path / "summary.json").read_text())
    assert summary["select"]["weights"] == "ema"


def test_validation_and_evaluation_use_the_ema_weights(tiny_config, monkeypatch):
    cfg = with_overrides(tiny_config, ["train.ema_decay=0.9", "train.epochs=2", "schedule.t1=0", "schedule.t2=0",
                                       "train.monitor_n=16"])
    loaded = {}
    real_load = api.load_model_weights

    def spy(path, model):
        out = real_load(path, model)
        loaded["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return out

    monkeypatch.setattr(api, "load_model_weights", spy)
    run = fine_tune(cfg, name="ema")
    ckpt = load_checkpoint(run.checkpoint_path)
    assert_same_tensors(loaded["state"], ckpt["eval_model"])  # the evaluation took the average
    # the last epoch's validation row was computed with the averaged weights too
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.num_classes)
    last = run.epoch_rows()[-1]
    model.load_state_dict(ckpt["eval_model"])
    averaged = trainer.validate(model, Validation.from_config(cfg, data), CPU)
    assert averaged["val_clean_loss"] == pytest.approx(last.val_clean_loss, rel=1e-6)
    model.load_state_dict(ckpt["model"])
    assert trainer.validate(model, Validation.from_config(cfg, data), CPU)["val_clean_loss"] != pytest.approx(last.val_clean_loss, rel=1e-6)


# ==================================================================================== train.select: best_robust
BEST = ["train.select=best_robust", "train.epochs=5", "schedule.t1=1", "schedule.t2=3", "train.monitor_n=16"]
"""ε = 0, 0, ε_g/2, ε_g, ε_g by epoch."""
SCRIPTED = {2: (0.95, 0.9), 3: (0.6, 0.5), 4: (0.35, 0.3)}
"""The ramp epoch 2 has the highest accuracy but is not at ε_g; of the two at ε_g, epoch 3 is the best."""


def test_select_best_robust_keeps_and_evaluates_the_best_epoch(tiny_config, monkeypatch):
    cfg = with_overrides(tiny_config, BEST + ["train.ema_decay=0.9"])
    fake_monitor(monkeypatch, SCRIPTED)
    run = fine_tune(cfg, name="best")
    assert [r.eps for r in run.epoch_rows()] == pytest.approx([0, 0, EPS_G / 2, EPS_G, EPS_G])
    assert run.evaluated_checkpoint() == run.best_path and run.best_path.exists()
    best, last = load_checkpoint(run.best_path), load_checkpoint(run.checkpoint_path)
    assert best["epochs_done"] == 4 and last["epochs_done"] == 5
    assert "optimizer" not in best and "optimizer" in last
    assert any(not torch.equal(best["eval_model"][k], last["eval_model"][k]) for k in best["eval_model"])
    assert any(not torch.equal(best["eval_model"][k], best["model"][k]) for k in best["eval_model"])  # the EMA
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["select"] == {"rule": "best_robust", "epochs_done": 4, "mon_ref_acc": 0.5,
                                 "checkpoint": "best.pt", "weights": "ema"}
    rob = json.loads((run.evaluation_dir("apgd-ce") / "robustness.json").read_text())
    assert rob["protocol"]["checkpoint"] == "best.pt" and rob["protocol"]["checkpoint_epochs"] == 4
    assert api.resolve_target(run.path)[1] == run.best_path


def test_select_final_evaluates_last(tiny_config):
    run = fine_tune(with_overrides(tiny_config, ["train.evaluate=false", "train.monitor_n=16"]), name="final")
    assert run.evaluated_checkpoint() == run.checkpoint_path and not run.best_path.exists()


def test_best_robust_survives_a_kill_between_the_two_checkpoints(tiny_config, monkeypatch):
    cfg = with_overrides(tiny_config, BEST + ["train.evaluate=false"])
    fake_monitor(monkeypatch, SCRIPTED)
    straight = fine_tune(cfg, name="straight")
    fake_monitor(monkeypatch, SCRIPTED)  # the same numbers for the killed run and its resume
    real_save = trainer.save_checkpoint

    def die_after_last_of_epoch_4(path, model, optimizer, epochs_done, *args, **kwargs):
        real_save(path, model, optimizer, epochs_done, *args, **kwargs)
        if Path(path).name == "last.pt" and epochs_done == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", die_after_last_of_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, name="killed")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    fake_monitor(monkeypatch, SCRIPTED, first_epoch=4)  # the resumed run starts at epoch 4
    resumed = fine_tune(cfg, name="killed", resume=True)
    summary = json.loads((resumed.path / "summary.json").read_text())
    assert summary["select"]["rule"] == "best_robust" and summary["select"]["epochs_done"] == 4
    assert resumed.best_path.exists() and load_checkpoint(resumed.best_path)["epochs_done"] == 4
    assert_same_tensors(load_checkpoint(straight.best_path)["eval_model"],
                        load_checkpoint(resumed.best_path)["eval_model"])
