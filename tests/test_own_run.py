"""A run of a user's own model and DataLoader (robustft.fit(run=...)) is a run directory like any other: evaluated
into with robustft.evaluate_run(..., model=, data=), read by robustft table, diagnose, report and export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import robustft
from robustft.attacks import APGD
from robustft.cli import main
from robustft.objectives import AdversarialObjective
from robustft.runs import UNKNOWN, RunDir


class OwnCNN(nn.Module):
    """A user's model: takes [0, 1] pixels, normalises inside, returns logits; no attribute named ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.MaxPool2d(2),
                                      nn.Flatten())
        self.classifier = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features((x - 0.5) / 0.5))


def digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.tensor(bunch.images[:n], dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(bunch.target[:n])


def test_a_run_of_fit_is_read_by_table_diagnose_report_and_export(tmp_path, capsys):
    x, y = digits(460)
    torch.manual_seed(0)
    model = OwnCNN()
    path = tmp_path / "mine"
    summary = robustft.fit(model, DataLoader(TensorDataset(x[:300], y[:300]), batch_size=50, shuffle=True),
                           val=(x[300:400], y[300:400]), objective=AdversarialObjective(APGD(num_steps=2)),
                           schedule=robustft.eps_schedule("hinge", eps=8 / 255, epochs=3, t1=1, t2=2), epochs=3,
                           optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), run=path, seed=1, monitor_n=16)
    run = RunDir(path)
    assert {p.name for p in path.iterdir()} == {"config.yaml", "env.json", "metrics.jsonl", "checkpoints",
                                                "summary.json", "DONE"}
    assert run.summary() == summary and summary.num_classes == 10
    cfg = run.config()  # what fit knows, and unknown where it cannot know
    assert run.own_model() and cfg.model.name == cfg.data.name == UNKNOWN
    assert (cfg.objective.name, cfg.attack.name, cfg.attack.num_steps, cfg.attack.eps) == ("adversarial", "apgd", 2,
                                                                                           8 / 255)
    assert (cfg.schedule.kind, cfg.schedule.t1, cfg.schedule.t2, cfg.train.epochs, cfg.train.seed) == ("hinge", 1, 2,
                                                                                                       3, 1)
    assert cfg.data.n_val == 100 and path.joinpath("config.yaml").read_text().startswith("# Written by robustft.fit")

    # --- evaluated into the run with the caller's model and data; the model is given back as it came
    test = DataLoader(TensorDataset(x[400:], y[400:]), batch_size=30)
    with pytest.raises(robustft.ConfigError, match=r"model=\.\.\., data=\.\.\."):
        robustft.evaluate_run(path)  # robustft cannot rebuild the model or the data
    model.train()
    overrides = ["eval.num_steps=5", "eval.check_n=8", "eval.check_queries=10", "eval.bootstrap=0"]
    result = robustft.evaluate_run(path, overrides, model=model, data=test)
    assert model.training and model.features[0].weight.is_contiguous()
    assert (path / "eval" / "apgd-ce" / "robustness.json").is_file() and result.correct.shape == (9, 60)
    assert result.checks and result.flags == [f for f in result.checks if f.raised]  # the checks ran, as on the CLI

    # --- the CLI reads the folder as any run directory
    capsys.readouterr()
    assert main(["table", str(path)]) == 0
    table = capsys.readouterr().out
    assert f"| mine | hinge | 8/255 | {100 * result.clean:.1f} | {100 * result.adv:.1f} |" in table
    assert main(["diagnose", str(path)]) == 0
    diagnosis = capsys.readouterr().out
    assert diagnosis.startswith("# Diagnosis of mine") and "schedule: hinge t1=1 t2=2" in diagnosis
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    assert "mine" in (tmp_path / "report" / "report.md").read_text()
    assert main(["export", str(path), "--out", str(tmp_path / "export")]) == 0
    info = json.loads((tmp_path / "export" / "model_info.json").read_text())
    assert info["architecture"] == info["dataset"] == UNKNOWN and info["robustft"]["num_classes"] == 10
    mine = OwnCNN()
    mine.load_state_dict(load_file(str(tmp_path / "export" / "model.safetensors")))  # the user's own class loads it
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), model.state_dict().values()))
    with pytest.raises(robustft.ForeignFileError, match="load_state_dict"):
        robustft.load_classifier(tmp_path / "export")
