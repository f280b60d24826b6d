"""`robustft demo`: its regime is the embedded default, and on tiny settings it runs, reports and resumes."""

from __future__ import annotations

import yaml

from robustft.cli import main
from robustft.experiments import demo
from robustft.experiments.sweep import expand

from conftest import TINY


def test_demo_runs_standard_fix_and_scheduled_on_the_embedded_default():
    points = expand(demo.demo_spec("runs/x", seeds=2))
    assert [p.name for p in points] == ["standard-seed0", "standard-seed1", "fix-seed0", "fix-seed1",
                                        "scheduled-seed0", "scheduled-seed1"]
    for p in points:
        c = p.config
        assert (c.model.name, c.model.pretrained, c.data.name) == ("efficientnet_lite0", True, "fashion_mnist")
        assert c.train.out_dir == "runs/x" and c.train.run_name == p.name
    kinds = {p.variant: (p.config.objective.name, p.config.schedule.kind) for p in points}
    assert kinds == {"standard": ("standard", "fix"), "fix": ("adversarial", "fix"), "scheduled": ("adversarial", "hinge")}
    assert all((p.config.attack, p.config.data, p.config.optim, p.config.eval) == (c.attack, c.data, c.optim, c.eval)
               for p in points)


def test_demo_end_to_end_on_tiny_settings(monkeypatch, tmp_path, capsys):
    tiny = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY)}
    monkeypatch.setattr(demo, "DEMO_SETTINGS", {**tiny, "train.epochs": 2, "schedule.granularity": "epoch"})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("standard-seed0", "fix-seed0", "scheduled-seed0"):
        assert (out / name / "DONE").exists() and f"| {name} |" in printed
    assert "| standard |" in printed and "Suboptimal-transfer diagnosis" in printed
    assert (out / "report" / "report.html").exists() and f"report: {out / 'report' / 'report.html'}" in printed
    # a second call reuses every finished run; a run killed mid-way (DONE missing) is resumed
    (out / "fix-seed0" / "DONE").unlink()
    mtime = (out / "standard-seed0" / "checkpoints" / "last.pt").stat().st_mtime
    assert main(["-q", "demo", "--out", str(out)]) == 0
    assert (out / "fix-seed0" / "DONE").exists()
    assert (out / "standard-seed0" / "checkpoints" / "last.pt").stat().st_mtime == mtime
    # more seeds later: seed 0's runs keep their names and are reused
    assert main(["-q", "demo", "--out", str(out), "--seeds", "2"]) == 0
    assert (out / "standard-seed0" / "checkpoints" / "last.pt").stat().st_mtime == mtime
    assert all((out / f"{v}-seed1" / "DONE").exists() for v in ("standard", "fix", "scheduled"))
    assert "(n=2)" in (out / "report" / "report.md").read_text()
