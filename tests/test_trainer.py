"""The training loop end to end on a tiny model: run directory, metrics, resume, non-finite loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robustft.train.trainer as trainer
from robustft.api import RunExistsError, fine_tune
from robustft.config import apply_overrides, config_from_dict, config_to_dict
from robustft.runs import RunDir
from robustft.schedules import UniformSchedule
from robustft.train import NonFiniteLossError, load_checkpoint


def _tree(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if not p.name.startswith(".")}


def test_fine_tune_writes_the_run_directory(tiny_config):
    run = fine_tune(tiny_config, name="tiny")
    assert _tree(run.path) == {"config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoints",
                               "checkpoints/last.pt", "eval", "eval/apgd-ce", "eval/apgd-ce/robustness.json",
                               "eval/apgd-ce/correct.npz", "DONE"}
    epochs = run.rows("epoch")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    # the hinge schedule t1=1, t2=2 (epochs): ε = 0, 0, ε_g
    assert [r["eps"] for r in epochs] == [0.0, 0.0, pytest.approx(8 / 255)]
    for key in ("step", "lr", "train_loss", "train_acc", "val_clean_acc", "val_clean_loss", "val_adv_acc"):
        assert all(key in r for r in epochs)
    assert run.rows("step"), "step rows are logged every train.log_every steps"
    rob = json.loads((run.evaluation_dir("apgd-ce") / "robustness.json").read_text())
    assert rob["n"] == 32 and len(rob["curve"]) == 3 and rob["protocol"]["attack_order"] == ["apgd-ce"]
    assert {f["name"] for f in rob["flags"]} >= {"eps0_is_clean", "input_gradients", "black_box", "large_eps"}
    assert set(rob["ci95"]) == {"clean", "adv", "expected_robustness"}
    assert rob["protocol"]["versions"]["pyautoattack"] and rob["protocol"]["checkpoint_epochs"] == 3
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["epochs"] == 3 and "delay_epochs" in summary
    assert RunDir(run.path).config() == tiny_config


def test_existing_run_needs_resume(tiny_config):
    fine_tune(tiny_config.replace("train", evaluate=False), name="tiny")
    with pytest.raises(RunExistsError, match="--resume"):
        fine_tune(tiny_config.replace("train", evaluate=False), name="tiny")


def test_resume_with_other_config_is_refused(tiny_config):
    cfg = tiny_config.replace("train", evaluate=False)
    fine_tune(cfg, name="tiny")
    (Path(cfg.train.out_dir) / "tiny" / "DONE").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="optim.lr"):
        fine_tune(cfg.replace("optim", lr=0.1), name="tiny", resume=True)


AUTO = ["schedule.kind=auto", "schedule.t1=null", "schedule.t2=null", "schedule.patience=1",
        "schedule.tolerance=1.0", "train.epochs=4"]
"""An auto schedule that must find its plateau at epoch 1 (no gain can beat a tolerance of 100 points): ε is
0 for epochs 0–1, ε_g/2 in epoch 2 and ε_g in epoch 3, the last (hinge T1 = 1, T2 = 3)."""


@pytest.mark.parametrize("overrides", [
    pytest.param([], id="hinge-mid-ramp"),
    pytest.param(AUTO, id="auto-after-switch"),
    pytest.param(["schedule.kind=uniform", "schedule.t1=null", "schedule.t2=null", "schedule.granularity=step"],
                 id="uniform-per-step"),
    pytest.param(["objective.name=trades", "objective.beta=2", "schedule.kind=warmup", "schedule.t1=null"],
                 id="trades-warmup"),
])
def test_killed_run_resumes_to_the_same_weights(tiny_config, monkeypatch, overrides):
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config.replace("train", evaluate=False)), overrides))
    straight = fine_tune(cfg, name="straight")

    saves = {"n": 0}
    real_save = trainer.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saves["n"] += 1
        if saves["n"] == 2:  # killed right after the checkpoint of epoch 2 (mid-ramp, or after auto switched)
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, name="killed")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    killed_dir = straight.path.parent / "killed"
    assert load_checkpoint(killed_dir / "checkpoints" / "last.pt")["epochs_done"] == 2
    assert not (killed_dir / "DONE").exists()
    resumed = fine_tune(cfg, name="killed", resume=True)

    a = load_checkpoint(straight.checkpoint_path)
    b = load_checkpoint(resumed.checkpoint_path)
    assert a["step"] == b["step"] and a["epochs_done"] == b["epochs_done"] == cfg.train.epochs
    assert a["schedule"] == b["schedule"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    drop = ("elapsed_s",)
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in straight.rows()]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in resumed.rows()]
    assert rows_a == rows_b
    assert len({r["eps"] for r in rows_a if r["kind"] == "step"}) > 1  # ε really changed during the run


def test_auto_schedule_switch_is_logged_checkpointed_and_summarised(tiny_config):
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config.replace("train", evaluate=False)), AUTO))
    run = fine_tune(cfg, name="auto")
    epochs = run.rows("epoch")
    assert [r["eps"] for r in epochs] == [0.0, 0.0, pytest.approx(4 / 255), pytest.approx(8 / 255)]
    assert [r.get("schedule_switch") for r in epochs] == [None, 1.0, None, None]
    assert epochs[2]["eps_mean"] == pytest.approx(4 / 255)
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt["schedule"]["switch"] == 1.0 and len(ckpt["schedule"]["history"]) == 4
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["schedule"]["kind"] == "auto" and summary["schedule"]["switch"] == 1.0
    assert summary["num_classes"] == 10


def test_uniform_schedule_draws_from_the_run_seed(tiny_config):
    overrides = ["schedule.kind=uniform", "schedule.t1=null", "schedule.t2=null", "train.seed=3"]
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config.replace("train", evaluate=False)), overrides))
    run = fine_tune(cfg, name="uniform")
    drawn = [r["eps"] for r in run.rows("epoch")]
    assert drawn == [UniformSchedule(8 / 255, seed=3).eps_at(e) for e in range(3)]
    assert drawn != [UniformSchedule(8 / 255, seed=0).eps_at(e) for e in range(3)]


def test_transfer_failure_warns(tiny_config, caplog):
    cfg = tiny_config.replace("train", evaluate=False, epochs=1).replace("optim", lr=1e-9)
    with caplog.at_level("WARNING"):
        fine_tune(cfg, name="failure")  # a learning rate of 1e-9 learns nothing: chance accuracy
    assert "transfer failure" in caplog.text and "robustft diagnose" in caplog.text


def test_auto_schedule_that_never_switches_warns(tiny_config, caplog):
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config.replace("train", evaluate=False)),
                                           ["schedule.kind=auto", "schedule.t1=null", "schedule.t2=null"]))
    with caplog.at_level("WARNING"):
        run = fine_tune(cfg, name="auto_late")
    assert all(r["eps"] == 0.0 for r in run.rows("epoch"))
    assert "ε stayed 0 for the whole run" in caplog.text


class _NanGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward (what a broken low-precision kernel can produce)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("poison, message", [(lambda loss: loss * float("nan"), "training loss became nan"),
                                             (lambda loss: _NanGradient.apply(loss), "gradient became non-finite")])
def test_non_finite_loss_or_gradient_stops_and_keeps_last_checkpoint(tiny_config, monkeypatch, poison, message):
    """A NaN loss, or a finite loss whose gradient is NaN, stops before the update of epoch 2."""
    cfg = tiny_config.replace("train", evaluate=False)
    real = trainer.build_objective

    def poisoned(c):
        objective = real(c)
        calls = {"n": 0}

        def call(model, x, y, eps):
            out = objective(model, x, y, eps)
            calls["n"] += 1
            if calls["n"] > 4:  # epoch 1 has 4 steps; poison epoch 2
                out.loss = poison(out.loss)
            return out
        return call

    monkeypatch.setattr(trainer, "build_objective", poisoned)
    with pytest.raises(NonFiniteLossError, match=f"{message}.*last good checkpoint"):
        fine_tune(cfg, name="nan")
    ckpt = load_checkpoint(Path(tiny_config.train.out_dir) / "nan" / "checkpoints" / "last.pt")
    assert ckpt["epochs_done"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
