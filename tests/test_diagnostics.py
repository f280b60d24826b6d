"""Diagnosis of suboptimal transfer: thresholds, flags on constructed curves, run directories, the CLI."""

from __future__ import annotations

import json

import pytest

from robustft.cli import main
from robustft.config import load_config
from robustft.eval.diagnostics import Curve, diagnose, epoch_table, failure_threshold, sparkline
from robustft.report import diagnose_run, render_diagnosis
from robustft.runs import EpochRow, RunDir, write_json

STANDARD = [0.40, 0.70, 0.80, 0.82, 0.84]
DELAYED = [0.10, 0.12, 0.14, 0.30, 0.45]


def _curve(accs, clean=None, classes=10, threshold=0.15, name="run"):
    rows = [EpochRow(epoch=i, step=4 * (i + 1), eps=8 / 255, eps_mean=8 / 255, lr=1e-3, train_loss=1.0, train_acc=a,
                     val_clean_acc=a, val_clean_loss=2 - a, val_adv_acc=a / 4, val_adv_loss=3 - a, elapsed_s=i + 1.0)
            for i, a in enumerate(accs)]
    return Curve(name=name, rows=rows, clean=accs[-1] if clean is None else clean, clean_source="validation",
                 num_classes=classes, delay_threshold=threshold)


def test_failure_threshold_is_a_tenth_of_the_way_from_chance():
    assert failure_threshold(10) == pytest.approx(0.19)
    assert failure_threshold(100) == pytest.approx(0.109)
    assert failure_threshold(2) == pytest.approx(0.55)


def test_standard_like_run_raises_nothing():
    d = diagnose(_curve(STANDARD, name="std"), _curve(STANDARD, name="ref"))
    assert d.gap == 0.0 and d.run.delay == 1
    assert [f.raised for f in d.flags] == [False, False, False]


def test_delayed_run_is_suboptimal_against_the_reference():
    d = diagnose(_curve(DELAYED), _curve(STANDARD, name="ref"))
    assert d.gap == pytest.approx(0.39)
    assert d.flag("suboptimal_transfer").raised and "39.0 points below" in d.flag("suboptimal_transfer").message
    assert d.flag("delayed_adaptation").raised and d.run.delay == 4 and d.reference.delay == 1
    assert d.flag("transfer_failure").raised is False  # 45 % is far above chance for 10 classes
    assert not diagnose(_curve(DELAYED), _curve(STANDARD), max_gap=0.5).flag("suboptimal_transfer").raised


def test_transfer_failure_near_chance_and_never_adapting():
    d = diagnose(_curve([0.01, 0.02, 0.04, 0.05], classes=100, threshold=0.05))
    assert d.flag("transfer_failure").raised and "chance 1.0 %" in d.flag("transfer_failure").message
    assert d.flag("delayed_adaptation").raised and "never reached" in d.flag("delayed_adaptation").message
    assert d.flag("suboptimal_transfer").raised is None  # no reference: cannot be judged
    assert not diagnose(_curve([0.05, 0.08, 0.12], classes=100)).flag("transfer_failure").raised


def test_flags_that_cannot_be_judged():
    d = diagnose(_curve(STANDARD, classes=None))
    assert d.flag("transfer_failure").raised is None


def test_epoch_table_and_sparkline():
    table = epoch_table(_curve(DELAYED), _curve(STANDARD))
    assert [t["epoch"] for t in table] == list(range(5))
    assert table[0] == {"epoch": 0, "eps": 8 / 255, "val_clean_acc": 0.10, "val_clean_loss": 1.9,
                        "val_adv_acc": 0.025, "val_adv_loss": 2.9, "mon_attack_acc": None, "mon_ref_acc": None,
                        "mon_gap": None, "ref_val_clean_acc": 0.40}
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "


# ------------------------------------------------------------------------------------ run directories
def _run_dir(root, name, accs, overrides=(), test_clean=None, schedule=None):
    """A finished run directory written by hand: config, epoch rows, summary and (optionally) an evaluation."""
    cfg = load_config(None, ["train.delay_threshold=0.15", "train.epochs=5", *overrides])
    run = RunDir(root / name)
    run.create(cfg)
    for row in _curve(accs).rows:
        run.log(row)
    schedule = schedule or {"kind": cfg.schedule.kind, "t1": 0.0, "t2": 0.0}
    write_json(run.path / "summary.json", {"num_classes": 10, "schedule": schedule})
    if test_clean is not None:
        write_json(run.evaluation_dir("apgd-ce") / "robustness.json",
                   {"clean": test_clean, "adv": 0.1, "expected_robustness": 0.2, "n": 100, "flags": []})
    return run.path


def test_diagnose_run_directories_compares_like_with_like(tmp_path):
    fix = _run_dir(tmp_path, "fix", DELAYED, ["schedule.kind=fix"], test_clean=0.43)
    std = _run_dir(tmp_path, "std", STANDARD, ["objective.name=standard"], test_clean=0.85)
    d = diagnose_run(fix, std)
    assert d.run.clean_source == "test" and d.gap == pytest.approx(0.42)
    assert d.notes == []  # same data, model, optimiser and budget; the reference is standard fine-tuning
    nov = _run_dir(tmp_path, "noeval", STANDARD, ["objective.name=standard"])
    d = diagnose_run(fix, nov)  # the reference has no test evaluation: both fall back to validation
    assert d.run.clean_source == d.reference.clean_source == "validation"
    assert d.gap == pytest.approx(0.84 - 0.45)
    assert d.to_dict()["delay_epochs"] == 4 and d.to_dict()["reference"]["delay_epochs"] == 1


def test_diagnose_notes_config_differences(tmp_path):
    fix = _run_dir(tmp_path, "fix", DELAYED, ["schedule.kind=fix"])
    other = _run_dir(tmp_path, "other", STANDARD, ["objective.name=adversarial", "optim.lr=0.01"])
    notes = diagnose_run(fix, other).notes
    assert any("optim.lr" in n for n in notes)
    assert any("not standard fine-tuning" in n for n in notes)


def test_delay_threshold_override_applies_to_both_runs(tmp_path):
    fix = _run_dir(tmp_path, "fix", DELAYED, ["schedule.kind=fix"])
    std = _run_dir(tmp_path, "std", STANDARD, ["objective.name=standard"])
    d = diagnose_run(fix, std, delay_threshold=0.5)
    assert d.run.delay is None and d.reference.delay == 2


def test_render_diagnosis_shows_flags_and_every_epoch(tmp_path):
    fix = _run_dir(tmp_path, "fix", DELAYED, ["schedule.kind=fix"], test_clean=0.43)
    std = _run_dir(tmp_path, "std", STANDARD, ["objective.name=standard"], test_clean=0.85)
    text = render_diagnosis(diagnose_run(fix, std))
    assert "# Diagnosis of fix" in text and "[RAISED] suboptimal_transfer" in text
    assert "[RAISED] delayed_adaptation" in text and "[ok] transfer_failure" in text
    assert "gap 42.0 points" in text and "reference: 1" in text
    assert text.count("| 8.00/255 |") == 5 and "| 1 | 8.00/255 | 10.0 | 1.900 | 2.5 | 2.900 | — | — | — | 40.0 |" in text


def test_render_names_the_schedule_and_where_auto_switched(tmp_path):
    fix = _run_dir(tmp_path, "fix", DELAYED, ["schedule.kind=fix"])
    assert "- schedule: fix t1=0 t2=0" in render_diagnosis(diagnose_run(fix))
    auto = _run_dir(tmp_path, "auto", STANDARD, ["schedule.kind=auto"], schedule={"kind": "auto", "switch": 2.0})
    assert "- schedule: auto plateau at epoch 3, ε > 0 from epoch 4" in render_diagnosis(diagnose_run(auto))
    late = _run_dir(tmp_path, "late", STANDARD, ["schedule.kind=auto"], schedule={"kind": "auto", "switch": None})
    assert "auto never switched" in render_diagnosis(diagnose_run(late))


def test_cli_diagnose(tmp_path, capsys):
    fix = _run_dir(tmp_path, "fix", DELAYED, ["schedule.kind=fix"])
    std = _run_dir(tmp_path, "std", STANDARD, ["objective.name=standard"])
    assert main(["diagnose", str(fix), "--reference", str(std)]) == 0
    assert "[RAISED] suboptimal_transfer" in capsys.readouterr().out
    assert main(["diagnose", str(fix), "--json", "--gap", "0.5", "--delay-threshold", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == "fix" and out["delay_epochs"] == 1 and out["delay_threshold"] == 0.05
    assert [f["name"] for f in out["flags"]] == ["transfer_failure", "suboptimal_transfer", "delayed_adaptation",
                                                 "catastrophic_overfitting"]
    assert len(out["epochs"]) == 5
    assert main(["diagnose", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
