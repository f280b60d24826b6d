"""The schema of metrics.jsonl (robustft/runs/metrics.py): the trainer's rows read back through the one loader
with every field, the JSON on disk is unchanged, and a row that does not follow the schema is refused by name."""

from __future__ import annotations

import dataclasses
import json

import pytest

from robustft.api import fine_tune
from robustft.config import apply_overrides, config_from_dict, config_to_dict
from robustft.runs import EpochRow, MetricsFormatError, RunDir, StepRow, read_rows
from robustft.train.monitor import MONITOR_KEYS

AUTO = ["schedule.kind=auto", "schedule.t1=null", "schedule.t2=null", "schedule.patience=1", "schedule.tolerance=1.0",
        "train.evaluate=false", "train.monitor_n=16"]
"""An auto schedule that switches after epoch 1 (ε > 0 in epoch 2, so the monitor runs), validation under attack
(the tiny config's train.val_adv_n): between them the epoch rows fill every field of the schema."""

WRITTEN = ('{"kind": "epoch", "epoch": 2, "step": 12, "eps": 0.03137254901960784, "eps_mean": 0.03137254901960784, '
           '"lr": 0.0015, "train_loss": 2.25, "train_acc": 0.1875, "val_clean_acc": 0.25, "val_clean_loss": 2.125, '
           '"val_adv_acc": 0.0625, "val_adv_loss": 2.5, "mon_eps": 0.03137254901960784, "mon_attack_acc": 0.1875, '
           '"mon_ref_acc": 0.0625, "mon_gap": 0.125, "elapsed_s": 3.5}')
"""An epoch row as the trainer wrote it before the schema module existed (same keys, same order)."""
REQUIRED = {"epoch": 0, "step": 4, "eps": 0.0, "eps_mean": 0.0, "lr": 0.001, "train_loss": 2.3, "train_acc": 0.1,
            "elapsed_s": 1.5}


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _write(tmp_path, *rows: dict) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(parents=True)
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_trainer_rows_read_back_with_every_field(tiny_config):
    # a probing first epoch writes the phase (ε is 0 there under auto anyway)
    cfg = config_from_dict(apply_overrides(config_to_dict(tiny_config),
                                           AUTO + ["finetune.head=linear_probe", "finetune.probe_epochs=1"]))
    run = fine_tune(cfg, name="schema")
    epochs, steps = run.epoch_rows(), run.step_rows()
    assert [r.epoch for r in epochs] == [0, 1, 2] and steps
    filled = {name for r in epochs for name in _fields(EpochRow) if getattr(r, name) is not None}
    assert filled == set(_fields(EpochRow)), "a field of the schema the trainer never wrote"
    assert [r.schedule_switch for r in epochs] == [None, 1.0, None] and [r.phase for r in epochs] == ["probe", None, None]
    assert [r.mon_gap is None for r in epochs] == [True, True, False]  # the monitor runs only at ε > 0
    assert all(r.parts and all(isinstance(v, float) for v in r.parts.values()) for r in steps)
    # the JSON is the row's, key for key and in order: a file round-trips through the loader unchanged
    lines = run.metrics_path.read_text().splitlines()
    assert [json.dumps(r.to_json()) for r in read_rows(run.path)] == lines
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["final"] == epochs[-1].measurements() and summary["train_time_s"] == epochs[-1].elapsed_s


def test_a_row_written_before_the_schema_reads_and_writes_back_unchanged(tmp_path):
    run = RunDir(tmp_path / "old")
    run.path.mkdir()
    step = ('{"kind": "step", "epoch": 2, "step": 12, "eps": 0.03137254901960784, "lr": 0.0015, "loss": 2.25, '
            '"ce_adv": 2.25}')
    run.metrics_path.write_text(step + "\n" + WRITTEN + "\n")
    (row,) = run.epoch_rows()
    assert row.eps_mean == pytest.approx(8 / 255) and row.mon_gap == 0.125 and row.schedule_switch is None
    assert run.step_rows() == [StepRow(epoch=2, step=12, eps=8 / 255, lr=0.0015, loss=2.25, parts={"ce_adv": 2.25})]
    run.truncate_metrics(3)  # rewrites the file from the typed rows
    assert run.metrics_path.read_text() == step + "\n" + WRITTEN + "\n"
    run.truncate_metrics(2)
    assert run.metrics_path.read_text() == ""


def test_optional_keys_are_none_when_absent_and_stay_absent(tmp_path):
    (row,) = _write(tmp_path, {"kind": "epoch", **REQUIRED}).epoch_rows()
    optional = [n for n in _fields(EpochRow) if n not in REQUIRED]
    assert optional == ["val_clean_acc", "val_clean_loss", "val_adv_acc", "val_adv_loss", *MONITOR_KEYS,
                        "schedule_switch", "phase"]
    assert all(getattr(row, n) is None for n in optional)
    assert row.to_json() == {"kind": "epoch", **REQUIRED}  # written back without nulls
    assert row.measurements() == {"train_loss": 2.3, "train_acc": 0.1}


def test_an_unknown_key_in_an_epoch_row_is_refused_naming_it_and_the_file(tmp_path):
    run = _write(tmp_path, {"kind": "epoch", **REQUIRED}, {"kind": "epoch", **REQUIRED, "val_clen_acc": 0.5})
    with pytest.raises(MetricsFormatError) as err:
        run.epoch_rows()
    assert f"{run.metrics_path}, line 2" in str(err.value) and "'val_clen_acc'" in str(err.value)
    with pytest.raises(MetricsFormatError, match="val_clen_acc"):
        run.step_rows()  # every line is checked, whatever kind is asked for


def test_a_missing_required_key_is_refused_naming_it_and_the_file(tmp_path):
    run = _write(tmp_path, {"kind": "epoch", **{k: v for k, v in REQUIRED.items() if k != "eps_mean"}})
    with pytest.raises(MetricsFormatError) as err:
        read_rows(run.metrics_path)
    assert f"{run.metrics_path}, line 1" in str(err.value) and "'eps_mean'" in str(err.value)
    run = _write(tmp_path / "step", {"kind": "step", "epoch": 0, "step": 2, "eps": 0.0, "loss": 2.3})
    with pytest.raises(MetricsFormatError, match=r"missing required key\(s\) 'lr' of a step row"):
        run.step_rows()


@pytest.mark.parametrize("line, message", [
    ('{"kind": "epch", "epoch": 0}', "'kind' is 'epch'"),
    ('{"epoch": 0}', "'kind' is None"),
    ('{"kind": "epoch", "epoch": 0', "not JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"kind": "step", "epoch": 0, "step": 2, "eps": 0.0, "lr": 0.1, "loss": 2.3, "note": "x"}', "'note'.*numbers"),
])
def test_lines_that_are_no_row_are_refused(tmp_path, line, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(MetricsFormatError, match=message) as err:
        read_rows(path)
    assert f"{path}, line 1" in str(err.value)


def test_rows_are_built_through_the_schema():
    with pytest.raises(TypeError, match="val_clen_acc"):
        EpochRow(**REQUIRED, val_clen_acc=0.5)  # a misspelt key fails where the row is built
    with pytest.raises(ValueError, match="'loss'"):
        StepRow(epoch=0, step=1, eps=0.0, lr=0.1, loss=2.3, parts={"loss": 2.0})  # would overwrite the field
    row = StepRow(epoch=0, step=1, eps=0.0, lr=0.1, loss=2.3, parts={"ce_clean": 1.2, "kl": 0.5})
    assert list(row.to_json()) == ["kind", "epoch", "step", "eps", "lr", "loss", "ce_clean", "kl"]


def test_a_missing_file_has_no_rows(tmp_path):
    assert RunDir(tmp_path / "none").epoch_rows() == [] and read_rows(tmp_path / "none.jsonl") == []
