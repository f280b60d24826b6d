"""The training loop end to end on a tiny model: run directory, metrics, resume, non-finite loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robustft.train.trainer as trainer
from robustft.api import RunExistsError, fine_tune
from robustft.config import apply_overrides, config_from_dict, config_to_dict
from robustft.runs import RunDir, StepRow, read_rows
from robustft.schedules import UniformSchedule, cosine_lr_multiplier
from robustft.train import NonFiniteLossError, load_checkpoint

from helpers import poison_loss_after


def _tree(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if not p.name.startswith(".")}


def test_fine_tune_writes_the_run_directory(tiny_config):
    tiny_config = config_from_dict(apply_overrides(config_to_dict(tiny_config), ["eval.checks=true"]))
    run = fine_tune(tiny_config, name="tiny")
    assert _tree(run.path) == {"config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoints",
                               "checkpoints/last.pt", "eval", "eval/apgd-ce", "eval/apgd-ce/robustness.json",
                               "eval/apgd-ce/correct.npz", "DONE"}
    epochs = run.epoch_rows()
    assert [r.epoch for r in epochs] == [0, 1, 2]
    # the hinge schedule t1=1, t2=2 (epochs): ε = 0, 0, ε_g
    assert [r.eps for r in epochs] == [0.0, 0.0, pytest.approx(8 / 255)]
    for key in ("val_clean_acc", "val_clean_loss", "val_adv_acc"):
        assert all(getattr(r, key) is not None for r in epochs)
    assert run.step_rows(), "step rows are logged every train.log_every steps"
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
    run = fine_tune(cfg, name="tiny")
    (run.path / "DONE").unlink()
    before = run.checkpoint_path.read_bytes(), run.config_path.read_text()
    with pytest.raises(ValueError, match=r"cannot resume .*tiny with a different config: train.seed: 0 -> 1 "
                                         r"\(a resume may change only optim.grad_clip, .*optim.lr, "):
        fine_tune(cfg.replace("train", seed=1).replace("optim", lr=0.1), name="tiny", resume=True)
    assert (run.checkpoint_path.read_bytes(), run.config_path.read_text()) == before
    assert not run.resumes_path.exists()


def test_a_done_run_is_never_changed_by_a_resume(tiny_config):
    cfg = tiny_config.replace("train", evaluate=False)
    run = fine_tune(cfg, name="tiny")
    before = run.checkpoint_path.read_bytes(), run.config_path.read_text(), run.metrics_path.read_text()
    with pytest.raises(ValueError, match=r"optim.lr: 0.003 -> 0.001 \(a resume may change nothing;"):
        fine_tune(cfg.replace("optim", lr=0.001), name="tiny", resume=True)
    with pytest.raises(RunExistsError, match="already exists; continue it with --resume"):
        fine_tune(cfg, name="tiny")
    assert (run.checkpoint_path.read_bytes(), run.config_path.read_text(), run.metrics_path.read_text()) == before


def _unfit_checkpoint(tmp_path) -> Path:
    """A state dict of some other network: model.checkpoint pointing at it fails before the first epoch."""
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    return tmp_path / "other.pt"


@pytest.mark.parametrize("resume", [False, True], ids=["rerun", "rerun-with-resume"])
def test_a_start_that_failed_before_its_first_checkpoint_is_taken_over(tiny_config, tmp_path, caplog, resume):
    cfg = tiny_config.replace("train", evaluate=False, epochs=2)
    with pytest.raises(ValueError, match="does not fit the backbone"):
        fine_tune(cfg.replace("model", checkpoint=str(_unfit_checkpoint(tmp_path))).replace("data", n_val=48),
                  name="tiny")
    run = RunDir(Path(cfg.train.out_dir) / "tiny")
    assert _tree(run.path) == {"config.yaml", "env.json", "checkpoints"} and run.abandoned()
    (run.path / "checkpoints" / ".last.pt.abcd_123.tmp").write_bytes(b"partial")  # a kill during a write
    with caplog.at_level("WARNING"):
        fine_tune(cfg, name="tiny", resume=resume)  # the corrected config
    assert f"{run.path} has no checkpoint (an earlier start stopped before its first one); this start takes it " \
           "over and replaces its config.yaml and env.json" in caplog.text
    assert run.done and run.config() == cfg and [r.epoch for r in run.epoch_rows()] == [0, 1]
    assert not list(run.path.rglob("*.tmp")) and not run.resumes_path.exists()


def test_a_checkpointed_run_is_not_taken_over(tiny_config, monkeypatch):
    cfg = tiny_config.replace("train", evaluate=False)
    real_save = trainer.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, name="tiny")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    run = RunDir(Path(cfg.train.out_dir) / "tiny")
    before = run.checkpoint_path.read_bytes(), run.config_path.read_text(), run.metrics_path.read_text()
    assert not run.abandoned()
    with pytest.raises(RunExistsError, match="already exists; continue it with --resume"):
        fine_tune(cfg.replace("train", seed=1), name="tiny")
    assert (run.checkpoint_path.read_bytes(), run.config_path.read_text(), run.metrics_path.read_text()) == before


def test_resume_removes_the_temporary_files_of_a_killed_checkpoint_write(tiny_config, monkeypatch):
    cfg = tiny_config.replace("train", evaluate=False)
    real_save = trainer.save_checkpoint
    calls = {"n": 0}

    def die_while_writing_the_second(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # killed mid-write: the temporary file stays, last.pt is the first epoch's
            (path.parent / f".{path.name}.k1ll3d_x.tmp").write_bytes(b"\0" * 1000)
            raise KeyboardInterrupt
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", die_while_writing_the_second)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, name="tiny")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    run = RunDir(Path(cfg.train.out_dir) / "tiny")
    (run.path / "checkpoints" / "my_notes.tmp").write_text("not ours")
    assert load_checkpoint(run.checkpoint_path)["epochs_done"] == 1
    fine_tune(cfg, name="tiny", resume=True)
    assert run.done and load_checkpoint(run.checkpoint_path)["epochs_done"] == 3
    assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == ["last.pt", "my_notes.tmp"]
    modes = {p.name: p.stat().st_mode & 0o777 for p in (run.checkpoint_path, run.config_path, run.metrics_path,
                                                         run.path / "DONE", run.path / "summary.json")}
    assert len(set(modes.values())) == 1, modes  # atomic writes (last.pt, DONE, summary) get the umask too



def test_a_resume_under_another_thread_count_says_it_is_not_bit_identical(tiny_config, caplog):
    cfg = tiny_config.replace("train", evaluate=False)
    run = fine_tune(cfg, name="tiny")
    env = json.loads((run.path / "env.json").read_text())
    (run.path / "env.json").write_text(json.dumps({**env, "threads": torch.get_num_threads() + 1}))
    (run.path / "DONE").unlink()
    with caplog.at_level("WARNING"):
        fine_tune(cfg, name="tiny", resume=True)
    assert f"started with {torch.get_num_threads() + 1} intra-op thread(s) and resumes with " \
           f"{torch.get_num_threads()}: the continuation is correct but not bit-identical" in caplog.text

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
    rows_a = [{k: v for k, v in r.to_json().items() if k not in drop} for r in read_rows(straight.path)]
    rows_b = [{k: v for k, v in r.to_json().items() if k not in drop} for r in read_rows(resumed.path)]
    assert rows_a == rows_b
    assert len({r.eps for r in read_rows(straight.path, StepRow)}) > 1  # ε really changed during the run


def test_auto_schedule_switch_is_logged_checkpointed_and_summarised(tiny_config):
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config.replace("train", evaluate=False)), AUTO))
    run = fine_tune(cfg, name="auto")
    epochs = run.epoch_rows()
    assert [r.eps for r in epochs] == [0.0, 0.0, pytest.approx(4 / 255), pytest.approx(8 / 255)]
    assert [r.schedule_switch for r in epochs] == [None, 1.0, None, None]
    assert epochs[2].eps_mean == pytest.approx(4 / 255)
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt["schedule"]["switch"] == 1.0 and len(ckpt["schedule"]["history"]) == 4
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["schedule"]["kind"] == "auto" and summary["schedule"]["switch"] == 1.0
    assert summary["num_classes"] == 10


def test_uniform_schedule_draws_from_the_run_seed(tiny_config):
    overrides = ["schedule.kind=uniform", "schedule.t1=null", "schedule.t2=null", "train.seed=3"]
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config.replace("train", evaluate=False)), overrides))
    run = fine_tune(cfg, name="uniform")
    drawn = [r.eps for r in run.epoch_rows()]
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
    assert all(r.eps == 0.0 for r in run.epoch_rows())
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


def test_non_finite_stop_then_the_advised_resume_finishes_the_run(tiny_config, monkeypatch, caplog):
    """Lower optim.lr, set optim.grad_clip, resume: what the message says is what a resume accepts."""
    cfg = tiny_config.replace("train", evaluate=False)
    poison_loss_after(monkeypatch, 4)
    with pytest.raises(NonFiniteLossError) as err:
        fine_tune(cfg, name="nan")
    run = RunDir(Path(cfg.train.out_dir) / "nan")
    assert str(err.value) == (
        f"the training loss became nan at epoch 1 (step 4); the last good checkpoint ({run.checkpoint_path}) is "
        "kept. Lower optim.lr or set optim.grad_clip, then resume from it: --resume --set optim.lr=... (a resume "
        "may change these; the run records the change in resumes.jsonl).")
    monkeypatch.undo()
    original = run.config_path.read_text()
    fixed = cfg.replace("optim", lr=0.001, grad_clip=1.0)
    with pytest.raises(ValueError, match=r"attack.eps: '8/255' -> '4/255' \(a resume may change only "):
        fine_tune(fixed.replace("attack", eps=4 / 255), name="nan", resume=True)  # what the run is stays
    assert run.config_path.read_text() == original and not run.resumes_path.exists()
    with caplog.at_level("WARNING"):
        fine_tune(fixed, name="nan", resume=True)
    assert f"resuming {run.path} after epoch 1 with changed settings: optim.lr: 0.003 -> 0.001; " \
           "optim.grad_clip: None -> 1.0" in caplog.text
    assert run.done and load_checkpoint(run.checkpoint_path)["epochs_done"] == 3
    assert run.original_config_path.read_text() == original and run.config() == fixed
    (row,) = [json.loads(line) for line in run.resumes_path.read_text().splitlines()]
    assert (row["epochs_done"], row["step"]) == (1, 4)
    assert row["changes"] == {"optim.lr": {"from": 0.003, "to": 0.001}, "optim.grad_clip": {"from": None, "to": 1.0}}
    # epoch 0 ran at the old peak LR, epochs 1 and 2 at the new one (the checkpoint's optimiser had the old)
    peaks = [0.003, 0.001, 0.001]
    for peak, r in zip(peaks, run.epoch_rows(), strict=True):
        assert r.lr == pytest.approx(peak * cosine_lr_multiplier(r.step - 1, 12, 0)), r.epoch


def test_non_finite_stop_in_the_first_epoch_says_to_rerun(tiny_config, monkeypatch):
    cfg = tiny_config.replace("train", evaluate=False, epochs=2)
    poison_loss_after(monkeypatch, 1)
    with pytest.raises(NonFiniteLossError) as err:
        fine_tune(cfg.replace("optim", lr=1e8), name="nan")
    run = RunDir(Path(cfg.train.out_dir) / "nan")
    assert str(err.value) == (
        "the training loss became nan at epoch 0 (step 1), before the first checkpoint; nothing was kept. Lower "
        f"optim.lr or set optim.grad_clip, then run again (without --resume: the new start takes over {run.path}).")
    assert "last good checkpoint" not in str(err.value) and not run.checkpoint_path.exists()
    monkeypatch.undo()
    fine_tune(cfg, name="nan")  # the rerun the message advises
    assert run.done and run.config() == cfg and not run.resumes_path.exists()


def _corrupt_batchnorm_after(monkeypatch, calls_before: int, value: float) -> None:
    """From objective call ``calls_before + 1`` on, set the first BatchNorm's running variance to ``value`` before
    the forward pass: the training loss stays finite (BatchNorm trains on batch statistics), the buffer does not."""
    real = trainer.build_objective

    def corrupted(c):
        objective, calls = real(c), {"n": 0}

        def call(model, x, y, eps):
            calls["n"] += 1
            if calls["n"] > calls_before:
                bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                with torch.no_grad():
                    bn.running_var.fill_(value)
            return objective(model, x, y, eps)
        return call

    monkeypatch.setattr(trainer, "build_objective", corrupted)


# 1e20 shows as 9e+19: the step's BatchNorm update keeps 0.9 of the running variance
@pytest.mark.parametrize("value, shown", [(float("inf"), "inf"), (float("nan"), "nan"), (1e20, "9e+19")])
def test_diverged_buffers_stop_the_run_and_keep_the_last_good_checkpoint(tiny_config, monkeypatch, value, shown):
    """An ∞, NaN or exploded BatchNorm running variance under a finite loss stops the run at the end of epoch 1,
    before its checkpoint: the one of epoch 0 is kept, the run is not DONE."""
    cfg = tiny_config.replace("train", evaluate=False)
    _corrupt_batchnorm_after(monkeypatch, 4, value)  # epoch 0 has 4 steps
    with pytest.raises(NonFiniteLossError) as err:
        fine_tune(cfg, name="diverged")
    run = RunDir(Path(cfg.train.out_dir) / "diverged")
    bn = next(k for k in load_checkpoint(run.checkpoint_path)["model"] if k.endswith("running_var"))
    assert str(err.value).startswith(
        "the weights diverged although the loss stayed finite: 1 tensor(s) of weights or buffers hold NaN, ∞ or "
        f"values beyond ±1e+10, e.g. {bn} ({shown}) at epoch 1 (step 8); the last good checkpoint "
        f"({run.checkpoint_path}) is kept.")
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt["epochs_done"] == 1
    assert all(v.abs().max() <= trainer.MAX_ABS_WEIGHT for v in ckpt["model"].values() if v.is_floating_point())
    assert not run.done and [r.epoch for r in run.epoch_rows()] == [0]


def test_a_huge_learning_rate_stops_at_the_first_epoch_without_a_checkpoint(tiny_config):
    """The issue's case: at optim.lr=1000 the loss stays finite while BatchNorm running variances explode (1e20
    after epoch 0, ∞ later); the run stops before writing any checkpoint, and nothing is evaluated."""
    cfg = tiny_config.replace("optim", lr=1000.0)
    with pytest.raises(NonFiniteLossError, match=r"^the weights diverged although the loss stayed finite: \d+ "
                                                 r"tensor\(s\).*running_var.* at epoch 0 \(step 4\), before the first "
                                                 "checkpoint; nothing was kept"):
        fine_tune(cfg, name="lr1000")
    run = RunDir(Path(cfg.train.out_dir) / "lr1000")
    assert not run.checkpoint_path.exists() and not run.best_path.exists() and not run.done
    assert not (run.path / "eval").exists()
