"""robustft export: RobustBench's model-info fields, and a classifier that load_classifier rebuilds without the run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import robustft
from robustft.api import fine_tune
from robustft.cli import main
from robustft.config import load_config
from robustft.data import build_data
from robustft.export import INFO_FILE, MODEL_FILE, export_run, load_classifier
from robustft.models import build_model
from robustft.runs import RunDir
from robustft.train import load_model_weights


@pytest.fixture
def evaluated_run(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "train.run_name=exported", "train.ema_decay=0.9"])
    return fine_tune(cfg), cfg


def test_export_then_load_gives_identical_logits(evaluated_run, tmp_path, capsys):
    run, cfg = evaluated_run
    assert main(["export", str(run.path), "--out", str(tmp_path / "export"), "--name", "tiny"]) == 0
    assert f"export: {tmp_path / 'export' / INFO_FILE}" in capsys.readouterr().out
    shutil.move(run.path, tmp_path / "moved")  # the export stands alone
    model = load_classifier(tmp_path / "export")
    reference = build_model(cfg.model, 10)
    load_model_weights(tmp_path / "moved" / "checkpoints" / "last.pt", reference)  # the evaluated (EMA) weights
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
    assert not model.training and robustft.load_classifier is load_classifier


def test_model_info_has_robustbench_fields_and_robustfts(evaluated_run, tmp_path):
    run, cfg = evaluated_run
    info = json.loads(export_run(run.path, tmp_path / "a").read_text())
    row = json.loads((run.evaluation_dir("apgd-ce") / "robustness.json").read_text())
    assert {"name", "architecture", "dataset", "eps", "clean_acc", "reported", "number_forward_passes",
            "additional_data", "threat_model"} <= set(info) and "autoattack_acc" not in info
    assert info["architecture"] == "test_efficientnet" and info["dataset"] == "digits" and info["eps"] == "8/255"
    assert info["clean_acc"] == f"{100 * row['clean']:.2f}" and info["reported"] == f"{100 * row['adv']:.2f}"
    assert info["robustft"]["curve"]["eps"] == ["0/255", "4/255", "8/255"] and info["robustft"]["num_classes"] == 10
    assert (tmp_path / "a" / MODEL_FILE).is_file()

    # an AutoAttack evaluation of the run gives autoattack_acc: its accuracy at ε_g (here: the same evidence)
    aa = run.evaluation_dir("autoattack")
    shutil.copytree(run.evaluation_dir("apgd-ce"), aa)
    data = json.loads((aa / "robustness.json").read_text())
    data["protocol"]["attack_order"] = ["autoattack"]
    (aa / "robustness.json").write_text(json.dumps(data))
    assert json.loads(export_run(run.path, tmp_path / "b").read_text())["autoattack_acc"] == info["reported"]


def test_export_of_an_unevaluated_run_or_a_non_export_says_what_to_do(tiny_overrides, tmp_path):
    cfg = load_config(None, [*tiny_overrides, "train.run_name=bare", "train.evaluate=false"])
    run = fine_tune(cfg)
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        export_run(run.path, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="not a robustft export"):
        load_classifier(tmp_path)
    assert isinstance(run, RunDir) and build_data(cfg.data).num_classes == 10
